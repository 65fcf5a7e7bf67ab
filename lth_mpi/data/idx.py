"""MNIST and Fashion-MNIST IDX files (gzipped or raw): reading rows (data_prep.idx converts)."""
from __future__ import annotations

import functools
import gzip
import os
import zlib

import numpy as np

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
    file is decompressed whole, once per process (_gunzipped).
    """
    gz = path.endswith(".gz")
    try:
        if gz:
            st = os.stat(path)
            raw = _gunzipped(path, st.st_mtime_ns, st.st_size)
        else:
            with open(path, "rb") as fh:
                raw = fh.read(4 + 4 * 255)          # the longest header there can be
    except (OSError, EOFError, zlib.error) as exc:   # gzip's BadGzipFile is an OSError
        raise ValueError(f"{path} cannot be read ({exc})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise ValueError(f"{path} is truncated (inside its header)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    if gz:
        data = np.frombuffer(raw, dtype=np.uint8, offset=offset)
    else:
        data = np.memmap(path, dtype=np.uint8, mode="r", offset=offset)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated ({data.size} of {np.prod(dims)} bytes)")
    data = data.reshape(dims)
    n = dims[0] if limit is None else min(limit, dims[0])
    return np.array(data[shard[0]:n:shard[1]])


@functools.lru_cache(maxsize=4)
def _gunzipped(path: str, mtime_ns: int, size: int) -> bytes:
    """A .gz file's bytes, kept for the process (a search loads its dataset for the dense
    phase, then again for the cells: 0.4 s each for Fashion-MNIST's training images); keyed
    by modification time and size, so a file replaced in place is read again."""
    with gzip.open(path, "rb") as fh:
        return fh.read()
