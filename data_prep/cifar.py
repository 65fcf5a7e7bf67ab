"""CIFAR-10 and CIFAR-100, from the binary release or the python release (Krizhevsky 2009).

Binary: records of label byte(s) + 3072 pixel bytes (CIFAR-100: coarse then fine label).
Python: pickled dicts with b'data' (N x 3072 uint8) and b'labels' / b'fine_labels', read
through safe_pickle. In both, a row holds the red, green and blue 32x32 planes in turn.
Source order is kept: the releases are already shuffled.
"""
from __future__ import annotations

import json

import numpy as np

from . import safe_pickle
from .sources import Members

PIXELS = 3 * 32 * 32
RELEASES = {
    ("cifar10", "binary"): {"folder": "cifar-10-batches-bin", "label_bytes": 1,
                            "train": [f"data_batch_{i}.bin" for i in range(1, 6)],
                            "test": ["test_batch.bin"], "meta": "batches.meta.txt"},
    ("cifar10", "python"): {"folder": "cifar-10-batches-py", "labels": "labels",
                            "train": [f"data_batch_{i}" for i in range(1, 6)],
                            "test": ["test_batch"], "meta": "batches.meta"},
    ("cifar100", "binary"): {"folder": "cifar-100-binary", "label_bytes": 2,
                             "train": ["train.bin"], "test": ["test.bin"],
                             "meta": "fine_label_names.txt", "coarse_meta": "coarse_label_names.txt"},
    ("cifar100", "python"): {"folder": "cifar-100-python", "labels": "fine_labels",
                             "train": ["train"], "test": ["test"], "meta": "meta"},
}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100}


def planes_to_nhwc(rows: np.ndarray) -> np.ndarray:
    """N x 3072 rows (R plane, G plane, B plane, each 32x32 row-major) -> N x 32 x 32 x 3."""
    return np.ascontiguousarray(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def parse_binary(data: bytes, label_bytes: int, what: str):
    """(images NHWC, labels N x label_bytes) of a binary batch file."""
    record = label_bytes + PIXELS
    if len(data) == 0 or len(data) % record:
        raise ValueError(f"{what}: {len(data)} bytes is not a whole number of {record}-byte "
                         "records (truncated or not a CIFAR binary file)")
    table = np.frombuffer(data, np.uint8).reshape(-1, record)
    return planes_to_nhwc(table[:, label_bytes:]), table[:, :label_bytes].astype(np.int32)


def _keys_to_str(d: dict) -> dict:
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}


def _names(values) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def parse_python(data: bytes, label_keys, what: str):
    """(images NHWC, {label key: int32 labels}) of a python-release batch file."""
    d = safe_pickle.loads(data, what)
    if not isinstance(d, dict):
        raise ValueError(f"{what}: expected a pickled dict, got {type(d).__name__}")
    d = _keys_to_str(d)
    x = d.get("data")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != PIXELS:
        raise ValueError(f"{what}: 'data' must be an N x {PIXELS} uint8 array")
    labels = {}
    for key in label_keys:
        if key not in d:
            raise ValueError(f"{what}: no {key!r} entry")
        y = np.asarray(d[key])
        if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{what}: {key!r} must hold one integer label per image")
        labels[key] = y.astype(np.int32)
    return planes_to_nhwc(x), labels


def _detect(members: Members, which: str) -> str:
    for kind in ("binary", "python"):
        spec = RELEASES[(which, kind)]
        if all(name in members for name in spec["train"] + spec["test"] + [spec["meta"]]):
            return kind
    expect = " or ".join(", ".join(RELEASES[(which, k)]["train"] + RELEASES[(which, k)]["test"])
                         for k in ("binary", "python"))
    raise ValueError(f"{members.src}: no {which} release found (expected {expect})")


def convert(src: str, which: str) -> dict:
    """Both splits of a CIFAR release (directory or .tar.gz) as arrays for write_file."""
    folders = [spec["folder"] for (w, _), spec in RELEASES.items() if w == which]
    members = Members(src, folders)
    kind = _detect(members, which)
    spec = RELEASES[(which, kind)]
    classes = NUM_CLASSES[which]
    splits = {}
    if kind == "binary":
        for split in ("train", "test"):
            parts = [parse_binary(members.read(n), spec["label_bytes"], n) for n in spec[split]]
            x = np.concatenate([p[0] for p in parts])
            y = np.concatenate([p[1] for p in parts])
            splits[split] = {"images": x, "labels": y[:, -1]}
            if which == "cifar100":
                splits[split]["coarse_labels"] = y[:, 0]
        class_names = [l for l in members.read(spec["meta"]).decode().splitlines() if l.strip()]
        coarse = ([l for l in members.read(spec["coarse_meta"]).decode().splitlines() if l.strip()]
                  if which == "cifar100" else None)
    else:
        keys = [spec["labels"]] + (["coarse_labels"] if which == "cifar100" else [])
        for split in ("train", "test"):
            parts = [parse_python(members.read(n), keys, n) for n in spec[split]]
            splits[split] = {"images": np.concatenate([p[0] for p in parts]),
                             "labels": np.concatenate([p[1][keys[0]] for p in parts])}
            if which == "cifar100":
                splits[split]["coarse_labels"] = np.concatenate([p[1]["coarse_labels"] for p in parts])
        meta = safe_pickle.loads(members.read(spec["meta"]), spec["meta"])
        if not isinstance(meta, dict):
            raise ValueError(f"{spec['meta']}: expected a pickled dict")
        meta = _keys_to_str(meta)
        wanted = ["label_names"] if which == "cifar10" else ["fine_label_names", "coarse_label_names"]
        for key in wanted:
            if key not in meta:
                raise ValueError(f"{spec['meta']}: no {key!r} entry")
        class_names = _names(meta[wanted[0]])
        coarse = _names(meta[wanted[1]]) if which == "cifar100" else None
    if len(class_names) != classes:
        raise ValueError(f"{spec['meta']}: {len(class_names)} class names, {which} has {classes}")
    for split, arrays in splits.items():
        for key, y in arrays.items():
            if key == "images":
                continue
            limit = classes if key == "labels" else len(coarse or [])
            if len(y) and (y.min() < 0 or y.max() >= limit):
                raise ValueError(f"{which} {split}: {key} outside 0..{limit - 1}")
    used = spec["train"] + spec["test"] + [spec["meta"]] + ([spec["coarse_meta"]]
                                                          if "coarse_meta" in spec else [])
    out = {"splits": splits, "class_names": class_names, "source": f"{which} {kind} release",
           "sources": members.checksums(used)}
    if which == "cifar100":
        out["extra_attrs"] = {"coarse_class_names": json.dumps(coarse)}
    return out
