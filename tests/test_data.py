"""Datasets: IDX files with known pixels, shards that cover the set once, synthetic data;
converted files read sharded, shuffled, augmented and prefetched."""
import gzip
import os
import threading
import time

import numpy as np
import pytest

from lth_mpi.data import augment, h5format, prefetch, reader
from lth_mpi import data


def write_idx(path, array, compress):
    head = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if compress else open
    with opener(path, "wb") as fh:
        fh.write(head + array.astype(np.uint8).tobytes())


def make_idx_dir(tmp_path, compress, n_train=50, n_test=20):
    r = np.random.default_rng(0)
    arrays = {"train": (r.integers(0, 256, (n_train, 28, 28)), np.arange(n_train) % 10),
              "test": (r.integers(0, 256, (n_test, 28, 28)), (np.arange(n_test) * 3) % 10)}
    for split, (imgs, labels) in data.IDX_FILES.items():
        ext = ".gz" if compress else ""
        write_idx(tmp_path / (imgs + ext), arrays[split][0], compress)
        write_idx(tmp_path / (labels + ext), arrays[split][1], compress)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("shards", [1, 2, 3, 4])
def test_idx_shards_cover_every_example_once(tmp_path, compress, shards):
    """IDX data is held whole on every rank; a group's batches cover each example once."""
    arrays = make_idx_dir(tmp_path, compress)
    cfg = {"name": "mnist", "path": str(tmp_path), "train_examples": None, "test_examples": None,
           "validation_examples": 0}
    data.check(cfg)
    parts = [data.load(cfg, (i, shards)) for i in range(shards)]
    for p in parts:
        np.testing.assert_array_equal(p.x_train[..., 0], arrays["train"][0])
        np.testing.assert_array_equal(p.y_train, arrays["train"][1])
    batch = 12 * shards
    steps = 50 // batch
    x = np.concatenate([x for p in parts for x, _ in p.train_batches(3, steps, batch)])
    found = [np.flatnonzero((arrays["train"][0] == img[..., 0]).all((1, 2)))[0] for img in x]
    assert len(set(found)) == steps * batch
    tests = [np.concatenate([x for x, _ in p.test_batches(7)]) for p in parts]
    np.testing.assert_array_equal(np.concatenate(tests)[..., 0], arrays["test"][0])
    assert all(p.train_total == 50 and p.test_total == 20 for p in parts)
    assert parts[0].x_train.dtype == np.uint8 and parts[0].input_shape == (28, 28, 1)


def test_limit_and_errors(tmp_path):
    make_idx_dir(tmp_path, True)
    cfg = {"name": "mnist", "path": str(tmp_path), "train_examples": 30, "test_examples": 5,
           "validation_examples": 0}
    d = data.load(cfg, (1, 2))
    assert d.train_total == 30 and len(d.x_train) == 30 and d.test_total == 5
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01")
    with pytest.raises(ValueError, match="not an unsigned-byte IDX file"):
        data.read_idx(str(tmp_path / "bad"))
    write_idx(tmp_path / "short", np.zeros((4, 2)), False)
    with open(tmp_path / "short", "ab") as fh:
        fh.truncate(8 + 8 + 3)
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(str(tmp_path / "short"))
    with pytest.raises(ValueError, match="dataset.colour: not an option of mnist"):
        data.check(dict(cfg, colour=True))


def test_a_gzipped_file_is_decompressed_once_and_again_when_replaced(tmp_path):
    """The dense phase and the cells load the same .gz files: decompressed once per process,
    but a file rewritten in place (new time or size) is read anew."""
    from lth_mpi.data import idx
    path = str(tmp_path / "x.gz")
    write_idx(path, np.arange(24).reshape(6, 4), True)
    before = idx._gunzipped.cache_info()
    np.testing.assert_array_equal(data.read_idx(path, (1, 2), 5), [[4, 5, 6, 7], [12, 13, 14, 15]])
    np.testing.assert_array_equal(data.read_idx(path)[5], [20, 21, 22, 23])
    after = idx._gunzipped.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 1)
    write_idx(path, np.arange(24).reshape(6, 4) + 100, True)
    os.utime(path, ns=(1, 1))                 # the same size; the time tells it changed
    assert data.read_idx(path)[0, 0] == 100
    with open(path, "r+b") as fh:             # damaged in place: the error, not the old bytes
        fh.truncate(30)
    with pytest.raises(ValueError, match="cannot be read"):
        data.read_idx(path)


def test_synthetic_is_learnable_by_nearest_prototype():
    cfg = {"name": "synthetic", "path": None, "train_examples": 500, "test_examples": 200}
    d = data.load(cfg)
    x = d.x_train.reshape(len(d.x_train), -1).astype(float)
    centroids = np.stack([x[d.y_train == k].mean(0) for k in range(10)])
    xt = d.x_test.reshape(len(d.x_test), -1).astype(float)
    pred = np.argmin(((xt[:, None] - centroids[None]) ** 2).sum(-1), 1)
    assert (pred == d.y_test).mean() > 0.9


def test_real_fashion_mnist_if_installed():
    if not __import__("os").path.isdir(data.FASHION_MNIST_DIR):
        pytest.skip("dataset-fashion-mnist not installed")
    d = data.load({"name": "fashion_mnist", "path": None, "train_examples": None,
                   "test_examples": None}, (1, 4))
    assert d.train_total == 55000 and d.test_total == 10000 and len(d.x_train) == 55000
    assert d.val_total == 5000 and d.val_pieces() == [(1250, 2500)]   # the default held out
    assert d.test_pieces() == [(2500, 5000)]                 # its quarter of the test set
    assert abs(d.x_train.mean() / 255 - 0.286) < 0.01
    assert sorted(np.unique(d.y_test)) == list(range(10))


# --- converted files: sharded, shuffled, augmented, prefetched reading ------------------------

def tagged_arrays(n, shape, classes, seed):
    """Random images whose first two bytes spell their row number; label = row % classes."""
    x = np.random.default_rng(seed).integers(0, 256, (n,) + shape, dtype=np.uint8)
    x[:, 0, 0, 0], x[:, 0, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
    return {"images": x, "labels": (np.arange(n) % classes).astype(np.int32)}


def ids(x):
    return x[:, 0, 0, 0].astype(int) + 256 * x[:, 0, 0, 1].astype(int)


def make_h5(path, n_train=1000, n_test=230, shape=(8, 8, 3), classes=10, sharded=False,
            name="h5"):
    """A converted file (one file, or an index over shards of 150 rows) with tagged rows."""
    splits = {"train": tagged_arrays(n_train, shape, classes, 0),
              "test": tagged_arrays(n_test, shape, classes, 1)}
    names = [f"c{i}" for i in range(classes)]
    if not sharded:
        h5format.write_file(str(path), name, splits, names, "test", {})
        return splits
    folder = str(path) + ".shards"
    os.makedirs(folder)
    paths = {}
    for split, arrays in splits.items():
        paths[split] = []
        for k, a in enumerate(range(0, len(arrays["labels"]), 150)):
            part = {key: v[a:a + 150] for key, v in arrays.items()}
            total, squares = h5format.pixel_sums(part["images"])
            p = os.path.join(folder, f"{split}-{k:05d}.h5")
            h5format.write_shard(p, part, {"pixel_sum": total, "pixel_sumsq": squares,
                                           "skipped": "[]"}, "key")
            paths[split].append(p)
    h5format.write_index(str(path), paths, name, names, "test", {}, [], {})
    return splits


@pytest.mark.parametrize("n,rows,count", [(1000, 64, 3), (1000, 256, 4), (37, 5, 2), (10, 64, 3),
                                          (600, 256, 2)])
def test_owned_pieces_partition_the_rows_evenly(n, rows, count):
    parts = [reader.owned_pieces(n, rows, (i, count)) for i in range(count)]
    owned = [np.concatenate([np.arange(a, b) for a, b in p] or [np.zeros(0, int)]) for p in parts]
    assert sorted(np.concatenate(owned).tolist()) == list(range(n))
    assert max(map(len, owned)) - min(map(len, owned)) <= 1
    for p in parts:            # a piece never crosses a read boundary
        assert all(a // rows == (b - 1) // rows for a, b in p)
    if n >= rows * count * 2:   # each shard mixes pieces from all over the file
        assert all(len(p) > 1 for p in parts)


@pytest.fixture(scope="module")
def h5_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("h5")
    single, sharded = d / "single.h5", d / "sharded.h5"
    return {"single": (single, make_h5(single)), "sharded": (sharded, make_h5(sharded, sharded=True))}


def h5_cfg(path, **options):
    return {"name": "h5", "path": path and str(path), "train_examples": None, "test_examples": None,
            **options}


@pytest.mark.parametrize("layout", ["single", "sharded"])
@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("in_memory,buffer", [(True, 8192), (False, 8192), (False, 100)])
def test_group_reads_every_example_once_per_epoch(h5_files, layout, count, in_memory, buffer):
    path, splits = h5_files[layout]
    cfg = h5_cfg(path, in_memory=in_memory, shuffle_buffer=buffer, read_rows=64)
    data.check(cfg)
    shards = [data.load(cfg, (i, count)) for i in range(count)]
    assert all(isinstance(s, reader.InMemory if in_memory else reader.Streaming) for s in shards)
    global_batch = 48 if count == 3 else 50
    local = global_batch // count
    steps = 1000 // global_batch                  # as the trainer computes it
    seen_over_epochs = set()
    orders = []
    for epoch in range(1, 4):
        per_rank = []
        for rank, s in enumerate(shards):         # one seed per group and epoch (seeds.py)
            batches = list(s.train_batches(7919 * 3 + epoch, steps, global_batch))
            assert len(batches) == steps
            assert all(x.shape == (local, 8, 8, 3) and x.dtype == np.uint8 for x, _ in batches)
            assert all(y.dtype == np.int32 for _, y in batches)
            got = np.concatenate([ids(x) for x, _ in batches])
            labels = np.concatenate([y for _, y in batches])
            np.testing.assert_array_equal(labels, got % 10)            # labels travel along
            np.testing.assert_array_equal(np.concatenate([x for x, _ in batches]),
                                          splits["train"]["images"][got])
            if not in_memory:
                owned = {i for a, b in reader.owned_pieces(1000, 64, (rank, count)) for i in range(a, b)}
                assert set(got.tolist()) <= owned                      # only its own rows
            per_rank.append(got)
        every = np.concatenate(per_rank)
        assert len(every) == steps * global_batch == len(set(every.tolist()))   # exactly once
        assert 1000 - len(every) == 1000 % global_batch                        # the dropped rest
        seen_over_epochs |= set(every.tolist())
        orders.append(per_rank[0])
        if in_memory:   # the group's global batches are one rank's batches, cut in slices
            alone = data.load(cfg, (0, 1)).train_batches(7919 * 3 + epoch, steps, global_batch)
            together = np.stack([p.reshape(steps, local) for p in per_rank], 1)
            np.testing.assert_array_equal(together.reshape(-1),
                                          np.concatenate([ids(x) for x, _ in alone]))
    assert not np.array_equal(orders[0], orders[1])                     # fresh order per epoch
    if 1000 % global_batch:
        assert len(seen_over_epochs) > steps * global_batch             # the rest varies
    test = [np.concatenate([ids(x) for x, _ in s.test_batches(64)]) for s in shards]
    np.testing.assert_array_equal(np.concatenate(test), np.arange(230))  # test set once, in order
    assert all(s.train_total == 1000 and s.test_total == 230 for s in shards)


def test_a_group_augments_a_batch_as_one_rank_does(h5_files):
    path, _ = h5_files["single"]
    cfg = h5_cfg(path, in_memory=True, augment=True, pad=2)
    alone = list(data.load(cfg, (0, 1)).train_batches(9, 4, 60))
    parts = [list(data.load(cfg, (i, 3)).train_batches(9, 4, 60)) for i in range(3)]
    for step, (x, y) in enumerate(alone):
        np.testing.assert_array_equal(x, np.concatenate([p[step][0] for p in parts]))
        np.testing.assert_array_equal(y, np.concatenate([p[step][1] for p in parts]))


def test_memory_and_streaming_give_the_same_batches(h5_files):
    """One rank (G = 1): the whole split in memory is the streamed shard in one window."""
    path, _ = h5_files["sharded"]
    mem = data.load(h5_cfg(path, in_memory=True, augment=True, read_rows=64))
    disk = data.load(h5_cfg(path, in_memory=False, augment=True, read_rows=64))
    for (xm, ym), (xd, yd) in zip(mem.train_batches(5, 20, 25), disk.train_batches(5, 20, 25)):
        np.testing.assert_array_equal(xm, xd)
        np.testing.assert_array_equal(ym, yd)
    assert disk.stats.batches == 20


def test_augmentation_is_a_shift_with_zeros_and_a_mirror():
    rng = np.random.default_rng(3)
    x = rng.integers(1, 256, (200, 12, 10, 3), dtype=np.uint8)
    out = augment.random_crop_flip(x, np.random.default_rng(4), pad=2)
    assert out.shape == x.shape and out.dtype == np.uint8
    found = []
    for a, b in zip(x, out):
        padded = np.zeros((16, 14, 3), np.uint8)
        padded[2:14, 2:12] = a
        matches = [(dy, dx, m) for dy in range(5) for dx in range(5) for m in (False, True)
                   if np.array_equal(b, (lambda c: c[:, ::-1] if m else c)(padded[dy:dy + 12, dx:dx + 10]))]
        assert len(matches) == 1, "each output is exactly one shift (and maybe a mirror)"
        found.append(matches[0])
    shifts = {(dy, dx) for dy, dx, _ in found}
    assert len(shifts) == 25 and 60 < sum(m for _, _, m in found) < 140   # all used, flip ~1/2
    again = augment.random_crop_flip(x, np.random.default_rng(4), pad=2)
    np.testing.assert_array_equal(out, again)
    np.testing.assert_array_equal(augment.random_crop_flip(x, rng, pad=0, flip=False), x)
    assert augment.default_pad(32) == 4 and augment.default_pad(64) == 8


def test_augment_option_changes_images_not_labels(h5_files):
    path, _ = h5_files["single"]
    plain = data.load(h5_cfg(path))
    aug = data.load(h5_cfg(path, augment=True, pad=2))
    assert aug.pad == 2 and data.load(h5_cfg(path, augment=True)).pad == 1   # 8 // 8
    (xp, yp), (xa, ya) = next(plain.train_batches(1, 1, 100)), next(aug.train_batches(1, 1, 100))
    np.testing.assert_array_equal(yp, ya)
    assert not np.array_equal(xp, xa)


def test_prefetch_keeps_order_raises_errors_and_stops_early():
    assert list(prefetch.prefetch(iter(range(50)), 3)) == list(range(50))

    def broken():
        yield 1
        raise OSError("disk gone")
    with pytest.raises(OSError, match="disk gone"):
        list(prefetch.prefetch(broken(), 2))
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1
    before = threading.active_count()
    stream = prefetch.prefetch(endless(), 4)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()
    time.sleep(0.5)
    assert threading.active_count() == before and len(produced) <= 3 + 4 + 2   # bounded


def test_too_many_steps_are_refused(h5_files):
    d = data.load(h5_cfg(h5_files["single"][0], in_memory=False), (0, 2))
    with pytest.raises(ValueError, match="need 1100 examples, this shard has 500"):
        d.train_batches(1, 11, 200)
    with pytest.raises(ValueError, match="need 1100 examples, this shard has 1000"):
        data.load(h5_cfg(h5_files["single"][0]), (0, 2)).train_batches(1, 11, 200)


def test_converted_registry_checks_kind_options_and_shards(h5_files, tmp_path):
    path, splits = h5_files["single"]
    d = data.load(dict(h5_cfg(path), train_examples=300, test_examples=50), (1, 2))
    assert d.train_total == 300 and d.test_total == 50 and d.num_classes == 10
    assert d.input_shape == (8, 8, 3) and d.class_names[3] == "c3"
    x = splits["train"]["images"] / 255.0
    np.testing.assert_allclose(d.mean, x.mean((0, 1, 2)))
    np.testing.assert_allclose(d.std, x.std((0, 1, 2)))
    assert max(b for _, b in d.train_pieces()) <= 300
    for cfg, message in [
        (dict(h5_cfg(path), name="cifar10"), "holds h5 (8x8x3, 10 classes), expected 32x32x3 and 10 classes"),
        (h5_cfg(path, augment="yes"), "dataset.augment: expected bool"),
        (h5_cfg(path, in_memory="sometimes"), "dataset.in_memory: expected auto, true or false"),
        (h5_cfg(path, read_rows=0), "dataset.read_rows: expected int >= 1"),
        (h5_cfg(path, colour=1), "dataset.colour: not an option of h5"),
        (h5_cfg(None), "dataset.path: h5 needs a file converted by python -m data_prep"),
        (h5_cfg(tmp_path / "none.h5"), "dataset.path: file not found"),
        (dict(h5_cfg(path), name="fashion_mnist"), "(a converted file: use name: h5)"),
    ]:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            data.check(cfg)
    (tmp_path / "plain.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="is not an HDF5 file"):
        data.check(h5_cfg(tmp_path / "plain.h5"))
    # an index whose shard went missing would read zeros: refused by name
    make_h5(tmp_path / "idx.h5", n_train=300, n_test=20, sharded=True)
    os.remove(tmp_path / "idx.h5.shards" / "train-00001.h5")
    with pytest.raises(ValueError, match="shard idx.h5.shards/train-00001.h5 of .* is missing"):
        data.check(h5_cfg(tmp_path / "idx.h5"))
    make_h5(tmp_path / "other.h5", n_train=150, n_test=20, sharded=True)   # a foreign shard
    os.replace(tmp_path / "other.h5.shards" / "train-00000.h5",
               tmp_path / "idx.h5.shards" / "train-00001.h5")
    with pytest.raises(ValueError, match="train-00001.h5 of .* is not the one the index was written"):
        data.check(h5_cfg(tmp_path / "idx.h5"))


def test_in_memory_auto_follows_the_size(h5_files, monkeypatch):
    path, _ = h5_files["single"]
    assert isinstance(data.load(h5_cfg(path)), reader.InMemory)
    monkeypatch.setattr(reader, "IN_MEMORY_AUTO_BYTES", 1000 * 8 * 8 * 3)
    assert isinstance(data.load(h5_cfg(path)), reader.Streaming)          # 1230 rows > 1000
    monkeypatch.setattr(reader, "IN_MEMORY_AUTO_BYTES", 1230 * 8 * 8 * 3)
    assert isinstance(data.load(h5_cfg(path), (0, 2)), reader.InMemory)   # both splits fit


def test_idx_readers_augment_too(tmp_path):
    make_idx_dir(tmp_path, False)
    cfg = {"name": "mnist", "path": str(tmp_path), "train_examples": None, "test_examples": None,
           "validation_examples": 0, "augment": True}
    data.check(cfg)
    d = data.load(cfg)
    assert d.augment and d.pad == 3 and not d.flip       # digits are not mirrored
    x, y = next(d.train_batches(0, 1, 50))
    assert x.shape == (50, 28, 28, 1) and sorted(y) == sorted(d.y_train)


@pytest.mark.parametrize("config_name,shape,classes", [
    ("cifar10_resnet20.yaml", (32, 32, 3), 10), ("imagenet64_mobilenet_v2.yaml", (64, 64, 3), 7)])
def test_shipped_configs_accept_converted_files(tmp_path, config_name, shape, classes):
    from lth_mpi import config
    path = tmp_path / "converted.h5"
    make_h5(path, n_train=300, n_test=40, shape=shape, classes=classes)
    cfg = config.load(os.path.join(os.path.dirname(__file__), "..", "run", "configs", config_name),
                      [f"dataset.path={path}", "dataset.validation_examples=50"])
    data.check(cfg["dataset"])
    d = data.load(cfg["dataset"], (1, cfg["parallel"]["group_size"]))
    assert d.train_total == 250 and d.val_total == 50
    assert d.augment and d.input_shape == shape and d.num_classes == classes
    wrong = tmp_path / "wrong.h5"
    make_h5(wrong, n_train=10, n_test=10, shape=(16, 16, 3))
    with pytest.raises(ValueError, match="expected " + "x".join(map(str, shape))):
        data.check(dict(cfg["dataset"], path=str(wrong)))


@pytest.mark.parametrize("in_memory", [True, False])
def test_validation_is_the_training_splits_tail_never_trained_on(h5_files, in_memory):
    path, splits = h5_files["sharded"]
    cfg = h5_cfg(path, in_memory=in_memory, read_rows=64, validation_examples=150)
    parts = [data.load(cfg, (i, 3)) for i in range(3)]
    assert all(p.train_total == 850 and p.val_total == 150 for p in parts)
    val = np.concatenate([ids(x) for p in parts for x, _ in p.val_batches(40)])
    np.testing.assert_array_equal(val, np.arange(850, 1000))        # the last rows, once
    labels = np.concatenate([y for p in parts for _, y in p.val_batches(40)])
    np.testing.assert_array_equal(labels, val % 10)
    trained = np.concatenate([ids(x) for p in parts for x, _ in p.train_batches(1, 850 // 48, 48)])
    assert trained.max() < 850                                       # disjoint from training
    with pytest.raises(ValueError, match=r"dataset.validation_examples: 1000 leaves no training "
                                         r"examples \(the training split has 1000\)"):
        data.load(dict(cfg, validation_examples=1000))
    small = data.load(dict(cfg, validation_examples=150, train_examples=100))
    assert small.train_total == 100 and small.val_total == 150     # the limit applies to the rest


def test_idx_validation_split_and_defaults(tmp_path):
    arrays = make_idx_dir(tmp_path, True)
    cfg = {"name": "mnist", "path": str(tmp_path), "train_examples": None, "test_examples": None,
           "validation_examples": 12}
    d = data.load(cfg, (0, 1))
    np.testing.assert_array_equal(d.x_val[..., 0], arrays["train"][0][38:])
    np.testing.assert_array_equal(d.x_train[..., 0], arrays["train"][0][:38])
    assert data.validation_count({"name": "fashion_mnist"}) == 5000
    assert data.validation_count({"name": "cifar10", "validation_examples": None}) == 5000
    assert data.validation_count({"name": "h5", "validation_examples": None}) == 0
    with pytest.raises(ValueError, match="dataset.validation_examples: 5000 leaves no training"):
        data.load(dict(cfg, validation_examples=None))
