"""Datasets: registry by name, each rank keeping only its own shard.

Images stay uint8 NHWC in memory (4x smaller than float); the training step normalizes them
with the dataset's per-channel mean and std. A shard (index, count) keeps examples
index, index+count, ...: shards are disjoint, cover the set, and differ in size by at most one.
"""
from __future__ import annotations

import dataclasses
import gzip
import os

import numpy as np

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


@dataclasses.dataclass
class Dataset:
    x_train: np.ndarray          # uint8, (n, h, w, c), this rank's shard
    y_train: np.ndarray          # int32
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: tuple                  # per channel, on the 0..1 scale
    std: tuple
    train_total: int             # examples in the whole training set, over all shards
    test_total: int

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])

    def train_batches(self, seed: int, steps: int, batch: int):
        """`steps` batches of `batch` examples of this shard, in a fresh order per seed."""
        order = np.random.default_rng(seed).permutation(len(self.x_train))
        for i in range(steps):
            idx = np.sort(order[i * batch:(i + 1) * batch])   # sorted: contiguous reads
            yield self.x_train[idx], self.y_train[idx]

    def test_batches(self, batch: int):
        """This shard's test set, in order."""
        for i in range(0, len(self.x_test), batch):
            yield self.x_test[i:i + batch], self.y_test[i:i + batch]


# --- IDX (MNIST, Fashion-MNIST) -------------------------------------------------------------

def _idx_path(directory: str, stem: str) -> str:
    for name in (stem + ".gz", stem):
        if os.path.isfile(os.path.join(directory, name)):
            return os.path.join(directory, name)
    raise ValueError(f"dataset.path: {directory} has no {stem}[.gz]")


def read_idx(path: str, shard=(0, 1), limit: int | None = None) -> np.ndarray:
    """Rows shard[0]::shard[1] of the first `limit` rows of an IDX file (gzipped or raw).

    A raw file is memory-mapped, so a rank reads only its rows; gzip cannot seek, so a .gz
    file is streamed once and only the shard is kept.
    """
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as fh:
        head = fh.read(4)
        if len(head) != 4 or head[:2] != b"\0\0" or head[2] != 0x08:
            raise ValueError(f"dataset.path: {path} is not an unsigned-byte IDX file")
        ndim = head[3]
        dims = tuple(int.from_bytes(fh.read(4), "big") for _ in range(ndim))
        offset = 4 + 4 * ndim
        if path.endswith(".gz"):
            data = np.frombuffer(fh.read(), dtype=np.uint8)
    if not path.endswith(".gz"):
        data = np.memmap(path, dtype=np.uint8, mode="r", offset=offset)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"dataset.path: {path} is truncated ({data.size} of {np.prod(dims)} bytes)")
    data = data.reshape(dims)
    n = dims[0] if limit is None else min(limit, dims[0])
    return np.array(data[shard[0]:n:shard[1]])


def _idx_dataset(directory, shard, train_examples, test_examples, mean, std):
    split = {}
    for name, (images, labels) in IDX_FILES.items():
        limit = train_examples if name == "train" else test_examples
        x = read_idx(_idx_path(directory, images), shard, limit)[..., None]
        y = read_idx(_idx_path(directory, labels), shard, limit).astype(np.int32)
        if len(x) != len(y):
            raise ValueError(f"dataset.path: {name} images and labels differ in count")
        split[name] = (x, y)
    n_train = len(read_idx(_idx_path(directory, IDX_FILES["train"][1]), (0, 1), train_examples))
    n_test = len(read_idx(_idx_path(directory, IDX_FILES["test"][1]), (0, 1), test_examples))
    return Dataset(*split["train"], *split["test"], 10, mean, std, n_train, n_test)


def fashion_mnist(path, shard, train_examples, test_examples):
    """Fashion-MNIST (Xiao et al. 2017) from Debian's dataset-fashion-mnist by default."""
    return _idx_dataset(path or FASHION_MNIST_DIR, shard, train_examples, test_examples,
                        (0.2860,), (0.3530,))


def mnist(path, shard, train_examples, test_examples):
    """MNIST IDX files in `path` (no package ships them; bring your own)."""
    if path is None:
        raise ValueError("dataset.path: mnist needs the directory of its IDX files")
    return _idx_dataset(path, shard, train_examples, test_examples, (0.1307,), (0.3081,))


def synthetic(path, shard, train_examples, test_examples, num_classes=10,
              shape=(28, 28, 1), noise=0.35, seed=1234):
    """Learnable random data for tests: a fixed prototype image per class plus noise."""
    rng = np.random.default_rng(seed)
    shape = tuple(shape)
    protos = rng.random((num_classes,) + shape)
    out = []
    for i, n in enumerate((train_examples or 2048, test_examples or 512)):
        r = np.random.default_rng(seed + 1 + i)
        y = r.integers(0, num_classes, n).astype(np.int32)
        x = np.clip(protos[y] + noise * r.standard_normal((n,) + shape), 0, 1)
        x = (x * 255).astype(np.uint8)
        out += [x[shard[0]::shard[1]], y[shard[0]::shard[1]]]
    c = shape[-1]
    return Dataset(*out, num_classes, (0.5,) * c, (0.3,) * c,
                   train_examples or 2048, test_examples or 512)


REGISTRY = {"fashion_mnist": fashion_mnist, "mnist": mnist, "synthetic": synthetic}
BASE_KEYS = ("name", "path", "train_examples", "test_examples")


def check(cfg: dict) -> None:
    """Refuse an unknown dataset, unknown options, or missing files, in one line."""
    name = cfg["name"]
    if name not in REGISTRY:
        raise ValueError(f"dataset.name: unknown dataset {name!r} (valid: {', '.join(sorted(REGISTRY))})")
    import inspect
    valid = [p for p in inspect.signature(REGISTRY[name]).parameters
             if p not in ("path", "shard", "train_examples", "test_examples")]
    for key in cfg:
        if key not in BASE_KEYS and key not in valid:
            raise ValueError(f"dataset.{key}: not an option of {name} (valid: {', '.join(valid) or 'none'})")
    if name in ("fashion_mnist", "mnist"):
        directory = cfg["path"] or (FASHION_MNIST_DIR if name == "fashion_mnist" else None)
        if directory is None:
            raise ValueError(f"dataset.path: {name} needs the directory of its IDX files")
        if not os.path.isdir(directory):
            hint = " (apt-get install dataset-fashion-mnist)" if directory == FASHION_MNIST_DIR else ""
            raise ValueError(f"dataset.path: data directory not found: {directory}{hint}")
        for images, labels in IDX_FILES.values():
            _idx_path(directory, images)
            _idx_path(directory, labels)


def load(cfg: dict, shard=(0, 1)) -> Dataset:
    """This rank's shard of the configured dataset."""
    extra = {k: v for k, v in cfg.items() if k not in BASE_KEYS}
    return REGISTRY[cfg["name"]](cfg["path"], shard, cfg["train_examples"],
                                 cfg["test_examples"], **extra)
