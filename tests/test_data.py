"""Datasets: IDX files with known pixels, shards that cover the set once, synthetic data."""
import gzip

import numpy as np
import pytest

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
    arrays = make_idx_dir(tmp_path, compress)
    cfg = {"name": "mnist", "path": str(tmp_path), "train_examples": None, "test_examples": None}
    data.check(cfg)
    parts = [data.load(cfg, (i, shards)) for i in range(shards)]
    x = np.concatenate([p.x_train for p in parts])
    y = np.concatenate([p.y_train for p in parts])
    assert len(x) == 50 and max(len(p.x_train) for p in parts) - min(len(p.x_train) for p in parts) <= 1
    order = np.argsort(np.concatenate([np.arange(i, 50, shards) for i in range(shards)]))
    np.testing.assert_array_equal(x[order][..., 0], arrays["train"][0])
    np.testing.assert_array_equal(y[order], arrays["train"][1])
    assert all(p.train_total == 50 and p.test_total == 20 for p in parts)
    assert parts[0].x_train.dtype == np.uint8 and parts[0].input_shape == (28, 28, 1)


def test_limit_and_errors(tmp_path):
    make_idx_dir(tmp_path, True)
    cfg = {"name": "mnist", "path": str(tmp_path), "train_examples": 30, "test_examples": 5}
    d = data.load(cfg, (1, 2))
    assert d.train_total == 30 and len(d.x_train) == 15 and d.test_total == 5
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
    assert d.train_total == 60000 and d.test_total == 10000 and len(d.x_train) == 15000
    assert abs(d.x_train.mean() / 255 - 0.286) < 0.01
    assert sorted(np.unique(d.y_test)) == list(range(10))
