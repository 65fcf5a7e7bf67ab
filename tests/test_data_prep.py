"""Converters against hand-built files in the real formats: IDX, CIFAR binary and python
releases, and an image tree of JPEG and PNG files with corrupt ones among them; the
restricted unpickler against malicious pickles. (Parallel runs: test_mpi_data.py.)"""
import hashlib
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import types

import h5py
import numpy as np
import pytest
from PIL import Image

from data_prep import cifar, idx, imagenet, safe_pickle
from lth_mpi.data import h5format
from lth_mpi import data
from mpi_helpers import ROOT
from test_data import write_idx

# --- builders of source files ----------------------------------------------------------------


def cifar_arrays(n, classes, seed):
    """Random images with two hand-set pixels in image 0, and labels covering every class."""
    r = np.random.default_rng(seed)
    x = r.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    x[0, 0, 1, 0] = 7      # row 0, column 1, red: byte 1 of the record's pixels
    x[0, 1, 0, 1] = 9      # row 1, column 0, green: byte 1024 + 32
    x[0, 31, 31, 2] = 11   # last pixel, blue: byte 3071
    return x, np.arange(n) % classes, (np.arange(n) * 7) % 20


def to_planes(x):
    """N x 32 x 32 x 3 -> N x 3072 rows: the red plane, the green plane, the blue plane."""
    return x.transpose(0, 3, 1, 2).reshape(len(x), 3072)


class Py2Pickler(pickle._Pickler):
    """Writes pickles as Python 2's cPickle wrote the CIFAR python release: protocol 2, every
    string a py2 str (BINSTRING), numpy's reconstruct function under numpy.core."""
    dispatch = dict(pickle._Pickler.dispatch)

    def save_str8(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)

    dispatch[bytes] = save_str8
    dispatch[str] = save_str8
    dispatch[types.FunctionType] = save_global
    dispatch[types.BuiltinFunctionType] = save_global
    dispatch[type] = save_global


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def write_cifar(root, which, kind, train, test, style="py2"):
    """A CIFAR release in its real layout; train/test = (x, fine labels, coarse labels)."""
    root.mkdir(parents=True, exist_ok=True)
    names = [f"class{i}" for i in range(10 if which == "cifar10" else 100)]
    coarse_names = [f"super{i}" for i in range(20)]
    dump = py2_pickle if style == "py2" else (lambda o: pickle.dumps(o, protocol=4))
    batches = ({f"data_batch_{i + 1}": slice(i * len(train[0]) // 5, (i + 1) * len(train[0]) // 5)
                for i in range(5)} if which == "cifar10" else {"train": slice(None)})
    test_name = "test_batch" if which == "cifar10" else "test"
    parts = [(name, train, s) for name, s in batches.items()] + [(test_name, test, slice(None))]
    for name, (x, y, yc), s in parts:
        rows = to_planes(x[s])
        if kind == "binary":
            labels = y[s][:, None] if which == "cifar10" else np.stack([yc[s], y[s]], 1)
            (root / f"{name}.bin").write_bytes(np.concatenate([labels.astype(np.uint8), rows], 1).tobytes())
        elif which == "cifar10":
            (root / name).write_bytes(dump({b"batch_label": b"batch", b"labels": list(map(int, y[s])),
                                            b"data": rows, b"filenames": [b"f.png"] * len(rows)}))
        else:
            (root / name).write_bytes(dump({b"fine_labels": list(map(int, y[s])), b"data": rows,
                                            b"coarse_labels": list(map(int, yc[s]))}))
    if kind == "binary" and which == "cifar10":
        (root / "batches.meta.txt").write_text("\n".join(names) + "\n\n")
    elif kind == "binary":
        (root / "fine_label_names.txt").write_text("\n".join(names) + "\n")
        (root / "coarse_label_names.txt").write_text("\n".join(coarse_names) + "\n")
    elif which == "cifar10":
        (root / "batches.meta").write_bytes(dump({b"label_names": [n.encode() for n in names],
                                                  b"num_vis": 3072}))
    else:
        (root / "meta").write_bytes(dump({b"fine_label_names": [n.encode() for n in names],
                                          b"coarse_label_names": [n.encode() for n in coarse_names]}))
    return names


def solid(path, size, colour, mode="RGB", **save):
    Image.new(mode, size, colour).save(path, **save)


def make_tree(root, classes=("cat", "dog", "eel", "fox"), per_class=60, val_per_class=10,
              flat_val=False):
    """An image tree of JPEG and PNG files of various sizes, each one colour (so its pixels
    after any resize are known), plus crop checks, a grayscale file and three broken files.

    Returns {relative path: (label, colour or None, exact)}; exact = lossless source.
    """
    rng = np.random.default_rng(0)
    expect = {}

    def add(rel, label, colour, exact):
        expect[rel] = (label, colour, exact)

    for split, count in (("train", per_class), ("val", val_per_class)):
        for label, cls in enumerate(classes):
            folder = root / split / ("" if split == "val" and flat_val else cls)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                colour = (40 + 50 * label, (i * 37) % 256, (label * 11 + i * 5) % 256)
                size = tuple(int(v) for v in rng.integers(20, 72, 2))
                ext = ".png" if i % 3 == 0 else ".JPEG"
                name = f"{split}_{cls}_{i:03d}{ext}"
                solid(folder / name, size, colour, **({"quality": 95} if ext == ".JPEG" else {}))
                add(f"{split}/{'' if split == 'val' and flat_val else cls + '/'}{name}", label,
                    colour, ext == ".png")
    cat = root / "train" / classes[0]
    # center crop: wide and tall images whose center square differs from the margins
    for name, shape, center in (("wide.png", (32, 48, 3), np.s_[:, 8:40]),
                                ("tall.png", (48, 32, 3), np.s_[8:40, :])):
        a = np.zeros(shape, np.uint8)
        a[:] = (0, 0, 255)
        a[center] = (250, 20, 30)
        Image.fromarray(a).save(cat / name)
        add(f"train/{classes[0]}/{name}", 0, (250, 20, 30), True)
    a = np.zeros((32, 32, 3), np.uint8)          # orientation: top half red, bottom half green
    a[:16] = (255, 0, 0)
    a[16:] = (0, 255, 0)
    Image.fromarray(a).save(cat / "halves.png")
    add(f"train/{classes[0]}/halves.png", 0, None, True)
    solid(cat / "gray.png", (40, 30), 77, mode="L")
    add(f"train/{classes[0]}/gray.png", 0, (77, 77, 77), True)
    # broken: a truncated JPEG, text named .JPEG, an empty PNG; and a file that is no image
    good = io.BytesIO()
    solid(good, (64, 64), (1, 2, 3), format="JPEG")
    (cat / "truncated.JPEG").write_bytes(good.getvalue()[:300])
    (root / "train" / classes[1] / "notes.JPEG").write_text("not an image")
    (root / "val" / ("" if flat_val else classes[-1]) / "empty.png").write_bytes(b"")
    (cat / "README.txt").write_text("ignored: not an image extension")
    broken = [f"train/{classes[0]}/truncated.JPEG", f"train/{classes[1]}/notes.JPEG",
              f"val/{'' if flat_val else classes[-1] + '/'}empty.png"]
    for rel in broken:
        add(rel, None, None, False)
    if flat_val:
        lines = [f"{os.path.basename(rel)} {classes[label if label is not None else -1]}"
                 for rel, (label, _, _) in expect.items() if rel.startswith("val/")]
        (root / "val_labels.txt").write_text("# filename class\n" + "\n".join(lines) + "\n")
    return expect


def convert_tree(src, dst, *extra):
    proc = subprocess.run([sys.executable, "-m", "data_prep", "imagenet", str(src), str(dst),
                           "--size", "32", "--shard-size", "40", *extra],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    return proc


def read_all(path):
    with h5py.File(path, "r") as f:
        out = {split: {k: f[split][k][()] for k in f[split]} for split in h5format.SPLITS}
        out["attrs"] = dict(f.attrs)
    return out


# --- IDX ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("compress", [True, False])
def test_idx_conversion_keeps_pixels_labels_and_checksums(tmp_path, compress):
    r = np.random.default_rng(1)
    arrays = {"train": (r.integers(0, 256, (30, 28, 28)), np.arange(30) % 10),
              "test": (r.integers(0, 256, (12, 28, 28)), (np.arange(12) * 3) % 10)}
    for split, (images, labels) in idx.IDX_FILES.items():
        ext = ".gz" if compress else ""
        write_idx(tmp_path / (images + ext), arrays[split][0], compress)
        write_idx(tmp_path / (labels + ext), arrays[split][1], compress)
    out = idx.convert(str(tmp_path), "fashion_mnist")
    dst = str(tmp_path / "fm.h5")
    h5format.write_file(dst, "fashion_mnist", out["splits"], out["class_names"], out["source"],
                        out["sources"])
    got = read_all(dst)
    for split in h5format.SPLITS:
        np.testing.assert_array_equal(got[split]["images"][..., 0], arrays[split][0])
        np.testing.assert_array_equal(got[split]["labels"], arrays[split][1])
        assert got[split]["images"].dtype == np.uint8 and got[split]["labels"].dtype == np.int32
    x = arrays["train"][0] / 255.0
    np.testing.assert_allclose(got["attrs"]["mean"], [x.mean()], rtol=1e-12)
    np.testing.assert_allclose(got["attrs"]["std"], [x.std()], rtol=1e-9)
    assert json.loads(got["attrs"]["class_names"])[9] == "Ankle boot"
    sums = json.loads(got["attrs"]["source_sha256"])
    name = "train-images-idx3-ubyte" + (".gz" if compress else "")
    assert sums[name] == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
    assert len(sums) == 4


def test_real_fashion_mnist_converts_to_what_the_idx_reader_reads(tmp_path):
    if not os.path.isdir(data.FASHION_MNIST_DIR):
        pytest.skip("dataset-fashion-mnist not installed")
    out = idx.convert(data.FASHION_MNIST_DIR, "fashion_mnist")
    h5format.write_file(str(tmp_path / "fm.h5"), "fashion_mnist", out["splits"],
                        out["class_names"], out["source"], out["sources"])
    cfg = {"train_examples": None, "test_examples": None, "path": None, "validation_examples": 0}
    direct = data.load(dict(cfg, name="fashion_mnist"), (1, 3))
    converted = data.load(dict(cfg, name="h5", path=str(tmp_path / "fm.h5")))
    np.testing.assert_array_equal(converted.x_train, direct.x_train)
    np.testing.assert_array_equal(converted.y_test, direct.y_test)
    np.testing.assert_allclose(converted.mean + converted.std, direct.mean + direct.std, atol=1e-4)


def test_idx_refuses_bad_files(tmp_path):
    with pytest.raises(ValueError, match="has no train-images-idx3-ubyte"):
        idx.convert(str(tmp_path), "mnist")
    (tmp_path / "x.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(ValueError, match="cannot be read"):
        idx.read_idx(str(tmp_path / "x.gz"))


# --- CIFAR -------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["cifar10", "cifar100"])
@pytest.mark.parametrize("kind,style", [("binary", None), ("python", "py2"), ("python", "py3")])
def test_cifar_releases_give_known_pixels_and_labels(tmp_path, which, kind, style):
    classes = 10 if which == "cifar10" else 100
    train, test = cifar_arrays(50, classes, 2), cifar_arrays(15, classes, 3)
    rows = to_planes(train[0])          # the hand-set pixels sit where the format says
    assert rows[0, 1] == 7 and rows[0, 1024 + 32] == 9 and rows[0, 3071] == 11
    names = write_cifar(tmp_path / "src", which, kind, train, test, style)
    out = cifar.convert(str(tmp_path / "src"), which)
    assert out["class_names"] == names and out["source"] == f"{which} {kind} release"
    for split, (x, y, yc) in (("train", train), ("test", test)):
        got = out["splits"][split]
        np.testing.assert_array_equal(got["images"], x)
        np.testing.assert_array_equal(got["labels"], y)
        assert got["images"].flags.c_contiguous
        if which == "cifar100":
            np.testing.assert_array_equal(got["coarse_labels"], yc)
    assert out["splits"]["train"]["images"][0, 0, 1, 0] == 7
    assert out["splits"]["train"]["images"][0, 1, 0, 1] == 9
    first = "data_batch_1" if which == "cifar10" else "train"
    first += ".bin" if kind == "binary" else ""
    assert out["sources"][first] == hashlib.sha256((tmp_path / "src" / first).read_bytes()).hexdigest()
    if which == "cifar100":
        assert json.loads(out["extra_attrs"]["coarse_class_names"])[19] == "super19"


def test_cifar_from_tar_archive_with_release_folder(tmp_path):
    train, test = cifar_arrays(25, 10, 4), cifar_arrays(5, 10, 5)
    write_cifar(tmp_path / "cifar-10-batches-py", "cifar10", "python", train, test)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    out = cifar.convert(str(archive), "cifar10")
    np.testing.assert_array_equal(out["splits"]["test"]["images"], test[0])
    assert out["sources"] == {"cifar-10-python.tar.gz":
                              hashlib.sha256(archive.read_bytes()).hexdigest()}
    out = cifar.convert(str(tmp_path), "cifar10")      # the folder above the release folder
    np.testing.assert_array_equal(out["splits"]["train"]["labels"], train[1])


def test_cifar_refuses_truncated_and_missing(tmp_path):
    write_cifar(tmp_path, "cifar10", "binary", cifar_arrays(10, 10, 6), cifar_arrays(5, 10, 7))
    data = (tmp_path / "test_batch.bin").read_bytes()
    (tmp_path / "test_batch.bin").write_bytes(data[:-10])
    with pytest.raises(ValueError, match="test_batch.bin: 15355 bytes is not a whole number of 3073-byte"):
        cifar.convert(str(tmp_path), "cifar10")
    with pytest.raises(ValueError, match="no cifar100 release found"):
        cifar.convert(str(tmp_path), "cifar100")
    with pytest.raises(ValueError, match="not a directory or a tar archive"):
        cifar.convert(str(tmp_path / "nope"), "cifar10")


# --- the restricted unpickler -----------------------------------------------------------------

class Evil:
    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


@pytest.mark.parametrize("make", [
    lambda marker: Evil(os.system, f"touch {marker}"),
    lambda marker: Evil(eval, f"open({str(marker)!r}, 'w').close()"),
    lambda marker: Evil(subprocess.call, ["touch", str(marker)]),
    lambda marker: {b"data": np.zeros((1, 3072), np.uint8), b"labels": [Evil(os.system, f"touch {marker}")]},
])
def test_restricted_unpickler_refuses_malicious_pickles(tmp_path, make):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(make(marker), protocol=4)
    with pytest.raises(ValueError, match=r"batch: refusing global (posix\.system|builtins\.eval|subprocess\.call)"):
        safe_pickle.loads(payload, "batch")
    assert not marker.exists()
    pickle.loads(payload)               # the payload is real: plain pickle runs it
    assert marker.exists()


def test_malicious_cifar_batch_stops_the_conversion(tmp_path):
    write_cifar(tmp_path, "cifar10", "python", cifar_arrays(10, 10, 8), cifar_arrays(5, 10, 9))
    marker = tmp_path / "pwned"
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps(Evil(os.system, f"touch {marker}")))
    with pytest.raises(ValueError, match="data_batch_3: refusing global posix.system"):
        cifar.convert(str(tmp_path), "cifar10")
    assert not marker.exists()
    (tmp_path / "data_batch_3").write_bytes(b"\x80\x02}q\x00(")      # truncated
    with pytest.raises(ValueError, match="data_batch_3: not a readable pickle"):
        cifar.convert(str(tmp_path), "cifar10")


# --- image trees -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    expect = make_tree(root)
    dst = root.parent / (root.name + "-out") / "tiny.h5"
    dst.parent.mkdir()
    proc = convert_tree(root, dst)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root, expect, dst, proc


def test_tree_conversion_pixels_labels_and_metadata(tree):
    root, expect, dst, proc = tree
    got = read_all(dst)
    attrs = got["attrs"]
    assert json.loads(attrs["class_names"]) == ["cat", "dog", "eel", "fox"]
    broken = sorted(p for p, (label, _, _) in expect.items() if label is None)
    skipped = json.loads(attrs["skipped"])
    assert [s["path"] for s in skipped] == broken
    assert all(s["reason"] and "\n" not in s["reason"] for s in skipped)
    for split in h5format.SPLITS:
        g = got[split]
        paths = [p.decode() for p in g["paths"]]
        wanted = sorted(p for p, (label, _, _) in expect.items()
                        if label is not None and p.startswith("train/" if split == "train" else "val/"))
        assert sorted(paths) == wanted                     # every good file once, no broken one
        assert g["images"].shape == (len(paths), 32, 32, 3) and g["images"].dtype == np.uint8
        for i, p in enumerate(paths):
            label, colour, exact = expect[p]
            assert g["labels"][i] == label, p
            digest = hashlib.sha256((root / p).read_bytes()).digest()
            assert bytes(g["sha256"][i]) == digest
            if colour is not None:
                diff = np.abs(g["images"][i].astype(int) - colour).max()
                assert diff == 0 if exact else diff <= 3, (p, diff)
            if p.endswith("halves.png"):
                assert (g["images"][i][:16] == (255, 0, 0)).all()
                assert (g["images"][i][16:] == (0, 255, 0)).all()
    train_paths = [p.decode() for p in got["train"]["paths"]]
    assert train_paths != sorted(train_paths)              # shuffled: the tree is class-sorted
    x = got["train"]["images"] / 255.0
    np.testing.assert_allclose(attrs["mean"], x.mean((0, 1, 2)), rtol=1e-10)
    np.testing.assert_allclose(attrs["std"], x.std((0, 1, 2)), rtol=1e-8)
    # the source checksum is sha256sum's listing of the split's image files, sorted
    files = sorted(p for p in expect if p.startswith("train/"))
    listing = "".join(f"{hashlib.sha256((root / p).read_bytes()).hexdigest()}  {p}\n" for p in files)
    assert json.loads(attrs["source_sha256"])["train"] == hashlib.sha256(listing.encode()).hexdigest()
    options = json.loads(attrs["options"])
    assert options["size"] == 32 and options["shard_size"] == 40
    assert "3 images skipped" in proc.stdout and "287 files converted" in proc.stdout


def test_tree_index_is_virtual_over_shards(tree):
    root, expect, dst, _ = tree
    shards = sorted(os.listdir(dst.parent / "tiny.shards"))
    counts = {split: sum(1 for p in expect if p.startswith(folder))
              for split, folder in (("train", "train/"), ("test", "val/"))}
    assert shards == sorted(f"{split}-{i:05d}.h5" for split, n in counts.items()
                            for i in range(-(-n // 40)))        # 40 source files per shard
    with h5py.File(dst, "r") as f:
        assert f["train/images"].is_virtual
        manifest = json.loads(f.attrs["shards"])
        assert [m["file"] for m in manifest][0] == "tiny.shards/train-00000.h5"
        assert sum(m["count"] for m in manifest if m["split"] == "train") == len(f["train/labels"])
    info = h5format.describe(str(dst))
    assert info["input_shape"] == (32, 32, 3) and info["num_classes"] == 4


def test_flat_val_with_labels_file(tmp_path):
    expect = make_tree(tmp_path / "src", classes=("a", "b"), per_class=4, val_per_class=3,
                       flat_val=True)
    proc = convert_tree(tmp_path / "src", tmp_path / "out.h5")
    assert proc.returncode == 0, proc.stderr
    assert "labels file val_labels.txt" in proc.stdout
    got = read_all(tmp_path / "out.h5")
    for p, label in zip(got["test"]["paths"], got["test"]["labels"]):
        assert expect[p.decode()][0] == label
    assert len(got["test"]["labels"]) == 6


@pytest.mark.parametrize("damage,message", [
    (lambda r: os.rename(r / "train", r / "training"), "no train/ folder"),
    (lambda r: os.remove(r / "val_labels.txt"), "is flat and needs a labels file"),
    (lambda r: (r / "val_labels.txt").write_text("val_a_000.png zebra\n"), "class 'zebra' is not a folder"),
    (lambda r: (r / "val_labels.txt").write_text("val_a_000.png a b\n"), ":1: expected 'filename class'"),
    (lambda r: (r / "val_labels.txt").write_text("val_a_000.png a\n"), "has no label in"),
    (lambda r: (r / "val_labels.txt").open("a").write("ghost.png a\n"), "names val/ghost.png, which is not"),
    (lambda r: os.makedirs(r / "val" / "zebra"), "val/zebra: not a class of train/"),
])
def test_malformed_trees_are_refused_in_one_line(tmp_path, damage, message):
    make_tree(tmp_path, classes=("a", "b"), per_class=2, val_per_class=2, flat_val=True)
    damage(tmp_path)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        imagenet.scan(str(tmp_path))


def test_cli_errors_are_one_line(tmp_path):
    for args in (["imagenet", str(tmp_path / "none"), str(tmp_path / "o.h5")],
                 ["cifar10", str(tmp_path), str(tmp_path / "o.h5")],
                 ["imagenet", str(tmp_path), str(tmp_path / "no" / "o.h5")],
                 ["imagenet", str(tmp_path), "x.h5", "--size", "zero"]):
        proc = subprocess.run([sys.executable, "-m", "data_prep", *args], capture_output=True,
                              text=True, cwd=ROOT, timeout=60)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("data_prep: error: ")
