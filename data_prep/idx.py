"""MNIST and Fashion-MNIST IDX files (gzipped or raw): reading rows, and conversion."""
from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from .sources import sha256_file

IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"],
}


def idx_path(directory: str, stem: str) -> str:
    """STEM.gz or STEM in `directory`; ValueError naming the missing file."""
    for name in (stem + ".gz", stem):
        if os.path.isfile(os.path.join(directory, name)):
            return os.path.join(directory, name)
    raise ValueError(f"{directory} has no {stem}[.gz]")


def read_idx(path: str, shard=(0, 1), limit: int | None = None) -> np.ndarray:
    """Rows shard[0]::shard[1] of the first `limit` rows of an IDX file (gzipped or raw).

    A raw file is memory-mapped, so a rank reads only its rows; gzip cannot seek, so a .gz
    file is streamed once and only the shard is kept.
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            head = fh.read(4)
            if len(head) != 4 or head[:2] != b"\0\0" or head[2] != 0x08:
                raise ValueError(f"{path} is not an unsigned-byte IDX file")
            ndim = head[3]
            dims = tuple(int.from_bytes(fh.read(4), "big") for _ in range(ndim))
            offset = 4 + 4 * ndim
            if path.endswith(".gz"):
                data = np.frombuffer(fh.read(), dtype=np.uint8)
    except (OSError, EOFError, zlib.error) as exc:   # gzip's BadGzipFile is an OSError
        raise ValueError(f"{path} cannot be read ({exc})") from None
    if not path.endswith(".gz"):
        data = np.memmap(path, dtype=np.uint8, mode="r", offset=offset)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated ({data.size} of {np.prod(dims)} bytes)")
    data = data.reshape(dims)
    n = dims[0] if limit is None else min(limit, dims[0])
    return np.array(data[shard[0]:n:shard[1]])


def convert(directory: str, name: str) -> dict:
    """Both splits of an IDX directory as arrays for h5format.write_file, source order kept
    (the releases are already shuffled)."""
    if not os.path.isdir(directory):
        raise ValueError(f"{directory}: not a directory")
    splits, sources = {}, {}
    classes = CLASS_NAMES[name]
    for split, (images, labels) in IDX_FILES.items():
        ipath, lpath = idx_path(directory, images), idx_path(directory, labels)
        x, y = read_idx(ipath), read_idx(lpath)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"{ipath}: expected N x H x W images and N labels, got shapes "
                             f"{x.shape} and {y.shape}")
        if len(y) and y.max() >= len(classes):
            raise ValueError(f"{lpath}: label {int(y.max())} is not one of the "
                             f"{len(classes)} classes of {name}")
        splits[split] = {"images": x[..., None], "labels": y.astype(np.int32)}
        for p in (ipath, lpath):
            sources[os.path.basename(p)] = sha256_file(p)
    return {"splits": splits, "class_names": classes, "sources": sources, "source": "idx"}
