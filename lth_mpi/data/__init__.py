"""Datasets: registry by name, each rank reading only its own shard.

`dataset: {name, path, train_examples, test_examples, ...}`: extra keys are keyword options of
the reader named, checked against its signature. Readers:
  * fashion_mnist, mnist: IDX files, held in memory whole; each global batch is dealt over
    the group (lth_mpi.data.reader).
  * cifar10, cifar100, imagenet64, h5: a file converted by `python -m data_prep` (docs/data.md),
    held in memory when small, otherwise streamed from per-rank shards: see lth_mpi.data.reader.
  * synthetic: learnable random data for tests.
Images stay uint8 NHWC (4x smaller than float); the training step normalizes them with the
dataset's per-channel mean and std. Every reader returns a lth_mpi.data.reader.Dataset.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os

import numpy as np

from . import h5format, reader
from .idx import CLASS_NAMES, IDX_FILES, idx_path, read_idx

Dataset = reader.Dataset
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


# --- IDX (MNIST, Fashion-MNIST), in memory --------------------------------------------------

def _idx_dataset(name, directory, shard, train_examples, test_examples, validation_examples,
                 mean, std, options):
    split = {}
    try:
        for part, (images, labels) in IDX_FILES.items():
            limit = None if part == "train" else test_examples
            x = read_idx(idx_path(directory, images), (0, 1), limit)[..., None]
            y = read_idx(idx_path(directory, labels), (0, 1), limit).astype(np.int32)
            if len(x) != len(y):
                raise ValueError(f"{directory}: {part} images and labels differ in count")
            split[part] = (x, y)
        for part, (_, y) in split.items():
            if len(y) and (y.min() < 0 or y.max() > 9):
                bad = int(y.max() if y.max() > 9 else y.min())
                raise ValueError(f"{idx_path(directory, IDX_FILES[part][1])}: label {bad} is "
                                 "outside the 10 classes 0..9")
    except ValueError as exc:
        raise ValueError(f"dataset.path: {exc}") from None
    (x, y), n_all = split["train"], len(split["train"][1])
    n_train = reader.held_out(n_all, validation_examples, train_examples)
    split["train"], split["val"] = (x[:n_train], y[:n_train]), (x[n_all - validation_examples:],
                                                                 y[n_all - validation_examples:])
    return reader.InMemory(*split["train"], *split["test"], *split["val"], num_classes=10,
                           mean=mean, std=std,
                           train_total=len(split["train"][1]), test_total=len(split["test"][1]),
                           shard=shard,
                           class_names=CLASS_NAMES[name], **options)


def fashion_mnist(path, shard, train_examples, test_examples, validation_examples,
                  augment=False, pad=None, flip=True, prefetch=4):
    """Fashion-MNIST (Xiao et al. 2017) from Debian's dataset-fashion-mnist by default."""
    return _idx_dataset("fashion_mnist", path or FASHION_MNIST_DIR, shard, train_examples,
                        test_examples, validation_examples, (0.2860,), (0.3530,),
                        dict(augment=augment, pad=pad, flip=flip, prefetch=prefetch))


def mnist(path, shard, train_examples, test_examples, validation_examples, augment=False,
          pad=None, flip=False, prefetch=4):
    """MNIST IDX files in `path` (no package ships them; bring your own)."""
    if path is None:
        raise ValueError("dataset.path: mnist needs the directory of its IDX files")
    return _idx_dataset("mnist", path, shard, train_examples, test_examples,
                        validation_examples, (0.1307,),
                        (0.3081,), dict(augment=augment, pad=pad, flip=flip, prefetch=prefetch))


# --- converted HDF5 files (data_prep), in memory or streamed ---------------------------------

EXPECT = {"cifar10": ((32, 32, 3), 10), "cifar100": ((32, 32, 3), 100),
          "imagenet64": ((64, 64, 3), None), "h5": (None, None)}   # (image shape, classes)


def _converted(name, doc):
    """A reader of data_prep's format that refuses files of another shape or class count."""
    def read(path, shard, train_examples, test_examples, validation_examples, augment=False,
             pad=None, flip=True, in_memory="auto", shuffle_buffer=8192, read_rows=256,
             prefetch=4):
        if path is None:
            raise ValueError(f"dataset.path: {name} needs a file converted by python -m data_prep")
        return reader.open_h5(path, shard, train_examples, test_examples, validation_examples,
                              augment=augment,
                              pad=pad, flip=flip, in_memory=in_memory,
                              shuffle_buffer=shuffle_buffer, read_rows=read_rows,
                              prefetch=prefetch, expect=EXPECT[name])
    read.__name__, read.__doc__ = name, doc
    return read


cifar10 = _converted("cifar10", "CIFAR-10 converted by `python -m data_prep cifar10`.")
cifar100 = _converted("cifar100", "CIFAR-100 (fine labels) converted by `python -m data_prep cifar100`.")
imagenet64 = _converted("imagenet64", "An image tree converted by `data_prep imagenet --size 64`.")
h5 = _converted("h5", "Any file converted by data_prep, whatever its shape and classes.")


# --- synthetic --------------------------------------------------------------------------------

def synthetic(path, shard, train_examples, test_examples, validation_examples,
              num_classes=10, shape=(28, 28, 1), noise=0.35, seed=1234):
    """Learnable random data for tests: a fixed prototype image per class plus noise."""
    rng = np.random.default_rng(seed)
    shape = tuple(shape)
    protos = rng.random((num_classes,) + shape)
    out = []
    for i, n in enumerate((train_examples or 2048, test_examples or 512, validation_examples)):
        r = np.random.default_rng(seed + 1 + i)
        y = r.integers(0, num_classes, n).astype(np.int32)
        x = np.clip(protos[y] + noise * r.standard_normal((n,) + shape), 0, 1)
        x = (x * 255).astype(np.uint8)
        out += [x, y]
    c = shape[-1]
    return reader.InMemory(*out, num_classes=num_classes, mean=(0.5,) * c, std=(0.3,) * c,
                           train_total=train_examples or 2048, test_total=test_examples or 512,
                           shard=shard)


# validation_examples: null means this many for the datasets whose training split is large
DEFAULT_VALIDATION = {"fashion_mnist": 5000, "mnist": 5000, "cifar10": 5000, "cifar100": 5000,
                      "imagenet64": 5000}


def validation_count(cfg: dict) -> int:
    """Examples held out of the training split for selection (early stop, winning tickets)."""
    n = cfg.get("validation_examples")
    return DEFAULT_VALIDATION.get(cfg["name"], 0) if n is None else n


REGISTRY = {"fashion_mnist": fashion_mnist, "mnist": mnist, "synthetic": synthetic,
            "cifar10": cifar10, "cifar100": cifar100, "imagenet64": imagenet64, "h5": h5}
BASE_KEYS = ("name", "path", "train_examples", "test_examples", "validation_examples")


def check(cfg: dict) -> None:
    """Refuse an unknown dataset, unknown or ill-typed options, or missing files, in one line."""
    name = cfg["name"]
    if name not in REGISTRY:
        raise ValueError(f"dataset.name: unknown dataset {name!r} (valid: {', '.join(sorted(REGISTRY))})")
    valid = [p for p in inspect.signature(REGISTRY[name]).parameters
             if p not in ("path", "shard", "train_examples", "test_examples",
                          "validation_examples")]
    for key in cfg:
        if key not in BASE_KEYS and key not in valid:
            raise ValueError(f"dataset.{key}: not an option of {name} (valid: {', '.join(valid) or 'none'})")
    reader.check_options({k: v for k, v in cfg.items() if k in reader.OPTION_TYPES})
    if name in ("fashion_mnist", "mnist"):
        directory = cfg["path"] or (FASHION_MNIST_DIR if name == "fashion_mnist" else None)
        if directory is None:
            raise ValueError(f"dataset.path: {name} needs the directory of its IDX files")
        if not os.path.isdir(directory):
            hint = " (apt-get install dataset-fashion-mnist)" if directory == FASHION_MNIST_DIR else ""
            if os.path.isfile(directory) and directory.endswith(".h5"):
                hint = " (a converted file: use name: h5)"
            raise ValueError(f"dataset.path: data directory not found: {directory}{hint}")
        try:
            for images, labels in IDX_FILES.values():
                idx_path(directory, images)
                idx_path(directory, labels)
        except ValueError as exc:
            raise ValueError(f"dataset.path: {exc}") from None
    if name in EXPECT:
        if cfg["path"] is None:
            raise ValueError(f"dataset.path: {name} needs a file converted by python -m data_prep")
        reader.check_kind(h5format.describe(cfg["path"]), cfg["path"], EXPECT[name])


def fingerprint(cfg: dict) -> str:
    """What identifies the data a search was run on, wherever it now lives: the sha256 of the
    IDX files' bytes, or of a converted file's recorded identity (its sources' checksums,
    conversion options, shards, sizes and statistics); synthetic data by its options."""
    h = hashlib.sha256()
    name = cfg["name"]
    if name in ("fashion_mnist", "mnist"):
        directory = cfg["path"] or FASHION_MNIST_DIR
        for images, labels in IDX_FILES.values():
            for stem in (images, labels):
                with open(idx_path(directory, stem), "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        h.update(block)
    elif name in EXPECT:
        info = h5format.identity(cfg["path"])
        h.update(json.dumps(info, sort_keys=True).encode())
    else:
        h.update(json.dumps({k: v for k, v in cfg.items() if k != "path"}, sort_keys=True,
                            default=str).encode())
    return f"{name}:{h.hexdigest()[:16]}"


def load(cfg: dict, shard=(0, 1)) -> Dataset:
    """This rank's shard of the configured dataset."""
    extra = {k: v for k, v in cfg.items() if k not in BASE_KEYS}
    return REGISTRY[cfg["name"]](cfg["path"], shard, cfg["train_examples"],
                                 cfg["test_examples"], validation_count(cfg), **extra)
