"""MNIST and Fashion-MNIST IDX files converted to the training format (lth_mpi.data.idx reads
them)."""
from __future__ import annotations

import os

import numpy as np

from lth_mpi.data.idx import CLASS_NAMES, IDX_FILES, idx_path, read_idx

from .sources import sha256_file


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
