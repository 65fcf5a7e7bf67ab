"""The one on-disk training format (HDF5): writing it, verifying shards, reading its header.

A dataset is one HDF5 file with groups `train` and `test`, each holding `images` (uint8,
N x H x W x C, contiguous so that a range of rows is one read) and `labels` (int32), plus root
attributes: per-channel mean and std (0..1 scale, train split), class names, sha256 of the
sources, and the list of skipped inputs. Big sources are written as shard files by many ranks,
and the dataset file is then an index whose `images`/`labels` are HDF5 virtual datasets over
the shards, so a reader sees one dataset either way (docs/data.md).

Everything is written with track_times=False and fixed layouts, so equal inputs give equal
bytes: conversions at any rank count can be compared with `cmp`.
"""
from __future__ import annotations

import hashlib
import json
import os

import h5py
import numpy as np

FORMAT = "lth-mpi dataset"
VERSION = 1
SPLITS = ("train", "test")


def pixel_sums(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel sums of pixel values and of their squares (int64), in blocks."""
    c = images.shape[-1]
    total, squares = np.zeros(c, np.int64), np.zeros(c, np.int64)
    flat = images.reshape(-1, c)
    step = max(1, (1 << 22) // c)
    for i in range(0, len(flat), step):
        block = flat[i:i + step].astype(np.int64)
        total += block.sum(0)
        squares += (block * block).sum(0)
    return total, squares


def mean_std(total, squares, pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std on the 0..1 scale, from exact integer sums."""
    if pixels == 0:
        raise ValueError("the training split is empty")
    mean = np.asarray(total, np.float64) / pixels
    var = np.maximum(np.asarray(squares, np.float64) / pixels - mean * mean, 0.0)
    return mean / 255.0, np.sqrt(var) / 255.0


def _dataset(group, name, data):
    """A contiguous, untimed dataset: same data, same bytes."""
    return group.create_dataset(name, data=data, track_times=False)


def _root_attrs(f, name, class_names, mean, std, source, sources, skipped, options, extra):
    attrs = {"format": FORMAT, "format_version": VERSION, "dataset": name,
             "class_names": json.dumps(list(class_names)),
             "num_classes": len(class_names),
             "mean": np.asarray(mean, np.float64), "std": np.asarray(std, np.float64),
             "source": source, "source_sha256": json.dumps(sources, sort_keys=True),
             "skipped": json.dumps(skipped), "options": json.dumps(options, sort_keys=True)}
    attrs.update(extra or {})
    for key, value in attrs.items():
        f.attrs[key] = value


def write_file(path: str, name: str, splits: dict, class_names, source: str, sources: dict,
               skipped=(), options=None, extra_attrs=None) -> None:
    """A self-contained dataset file: splits = {"train": {"images": .., "labels": .., ...},
    "test": {...}}; extra arrays of a split (e.g. CIFAR-100's coarse_labels) are kept.

    Written to PATH.tmp and renamed, so a killed conversion never leaves a plausible file.
    """
    total, squares = pixel_sums(splits["train"]["images"])
    shape = splits["train"]["images"].shape
    mean, std = mean_std(total, squares, int(np.prod(shape[:-1])))
    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as f:
        for split in SPLITS:
            g = f.create_group(split)
            for key, array in splits[split].items():
                _dataset(g, key, np.asarray(array, np.int32) if key.endswith("labels") else array)
        _root_attrs(f, name, class_names, mean, std, source, sources, list(skipped),
                    options or {}, extra_attrs)
    os.replace(tmp, path)


# --- shards and their index ----------------------------------------------------------------

def content_sha256(arrays: dict) -> str:
    """Digest of a shard's arrays, in sorted key order: the shard's completion proof."""
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_shard(path: str, arrays: dict, attrs: dict, plan_key: str) -> None:
    """One shard: its arrays, its attributes, then the `complete` marker last.

    The marker holds the row count, the digest of the contents and the plan key (what the
    shard was made from, and how); written to PATH.tmp and renamed into place.
    """
    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as f:
        for key in sorted(arrays):
            _dataset(f, key, arrays[key])
        for key, value in attrs.items():
            f.attrs[key] = value
        f.attrs["complete"] = json.dumps({"count": len(arrays["labels"]), "plan": plan_key,
                                          "sha256": content_sha256(arrays)}, sort_keys=True)
    os.replace(tmp, path)


def shard_is_complete(path: str, plan_key: str) -> bool:
    """True if the shard exists, was made from this plan, and its contents match its marker."""
    if not os.path.isfile(path):
        return False
    try:
        with h5py.File(path, "r") as f:
            marker = json.loads(f.attrs["complete"])
            arrays = {key: f[key][()] for key in f.keys()}
    except (OSError, KeyError, ValueError):
        return False
    return (marker.get("plan") == plan_key and len(arrays.get("labels", ())) == marker["count"]
            and content_sha256(arrays) == marker["sha256"])


def read_shard_attrs(path: str) -> dict:
    with h5py.File(path, "r") as f:
        out = dict(f.attrs)
        out["shapes"] = {key: (f[key].shape, f[key].dtype) for key in f.keys()}
    return out


def _virtual(group, name: str, shape: tuple, dtype, sources) -> None:
    """A virtual dataset concatenating `sources` = [(start, count, file, dataset name)] along
    rows. Built with the low-level API because h5py's create_virtual_dataset stamps the
    creation time into the file."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_obj_track_times(False)
    vspace = h5py.h5s.create_simple(shape)
    for start, count, file, key in sources:
        vspace.select_hyperslab((start,) + (0,) * (len(shape) - 1), (count,) + shape[1:])
        dcpl.set_virtual(vspace, file.encode(), key.encode(),
                         h5py.h5s.create_simple((count,) + shape[1:]))
    tid = h5py.h5t.py_create(np.dtype(dtype), logical=1)
    h5py.h5d.create(group.id, name.encode(), tid, h5py.h5s.create_simple(shape), dcpl=dcpl)


def write_index(path: str, shards: dict, name: str, class_names, source: str, sources: dict,
                skipped, options: dict) -> None:
    """The dataset file over shard files: shards = {split: [shard path, ...]} in order.

    Virtual datasets concatenate the shards' arrays; source paths are stored relative to the
    index's directory, so the index and its shard folder move together.
    """
    base = os.path.dirname(os.path.abspath(path))
    total = squares = None
    pixels = 0
    manifest = []
    virtual = {}
    for split in SPLITS:
        infos = [read_shard_attrs(p) for p in shards[split]]
        counts = [json.loads(i["complete"])["count"] for i in infos]
        n = sum(counts)
        if n == 0:
            raise ValueError(f"the {split} split has no readable images")
        files = [os.path.relpath(os.path.abspath(p), base) for p in shards[split]]
        starts = np.cumsum([0] + counts[:-1])
        virtual[split] = {}
        for key in sorted(infos[0]["shapes"]):
            shape, dtype = infos[0]["shapes"][key]
            virtual[split][key] = ((n,) + tuple(shape[1:]), dtype,
                                   [(int(a), c, f, key) for a, c, f in zip(starts, counts, files) if c])
        for file, info, count in zip(files, infos, counts):
            manifest.append({"file": file, "split": split, "count": count,
                             "sha256": json.loads(info["complete"])["sha256"]})
            if split == "train":
                total = info["pixel_sum"] if total is None else total + info["pixel_sum"]
                squares = info["pixel_sumsq"] if squares is None else squares + info["pixel_sumsq"]
        if split == "train":
            pixels = n * int(np.prod(infos[0]["shapes"]["images"][0][1:-1]))
    mean, std = mean_std(total, squares, pixels)
    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as f:
        for split in SPLITS:
            g = f.create_group(split)
            for key, (shape, dtype, parts) in virtual[split].items():
                _virtual(g, key, shape, dtype, parts)
        _root_attrs(f, name, class_names, mean, std, source, sources, skipped, options,
                    {"shards": json.dumps(manifest)})
    os.replace(tmp, path)


# --- reading the header ---------------------------------------------------------------------

def identity(path: str) -> dict:
    """What a converted file is, from its attributes (cheap at any size): the checksums of
    its sources and shards, the conversion options, split sizes and statistics."""
    with h5py.File(path, "r") as f:
        keys = ("dataset", "source_sha256", "options", "shards", "mean", "std", "class_names")
        out = {k: (f.attrs[k].tolist() if hasattr(f.attrs[k], "tolist") else str(f.attrs[k]))
               for k in keys if k in f.attrs}
        out.update({f"{s}_total": len(f[s]["labels"]) for s in SPLITS if s in f})
    return out


def describe(path: str) -> dict:
    """The header of a converted dataset, checked: shapes, classes, statistics, and for an
    index, that every shard file is there (a missing shard would read as zeros).

    Raises ValueError with a one-line message naming the problem.
    """
    if not os.path.isfile(path):
        raise ValueError(f"dataset.path: file not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise ValueError(f"dataset.path: {path} is not an HDF5 file") from None
    with f:
        if f.attrs.get("format") != FORMAT:
            raise ValueError(f"dataset.path: {path} is not a converted dataset (no format "
                             f"attribute {FORMAT!r}); convert it with python -m data_prep")
        if int(f.attrs["format_version"]) > VERSION:
            raise ValueError(f"dataset.path: {path} has format version "
                             f"{int(f.attrs['format_version'])}, this reader knows {VERSION}")
        info = {"dataset": str(f.attrs["dataset"]),
                "class_names": json.loads(f.attrs["class_names"]),
                "mean": tuple(float(v) for v in f.attrs["mean"]),
                "std": tuple(float(v) for v in f.attrs["std"]),
                "skipped": json.loads(f.attrs["skipped"])}
        base = os.path.dirname(os.path.abspath(path))
        for split in SPLITS:
            if split not in f or "images" not in f[split] or "labels" not in f[split]:
                raise ValueError(f"dataset.path: {path} has no {split}/images and {split}/labels")
            images, labels = f[split]["images"], f[split]["labels"]
            if images.ndim != 4 or images.dtype != np.uint8 or len(labels) != len(images):
                raise ValueError(f"dataset.path: {path}: {split}/images must be uint8 N x H x W x "
                                 f"C with one label per image")
            info[f"{split}_total"] = len(images)
            info["input_shape"] = tuple(images.shape[1:])
        manifest = json.loads(f.attrs["shards"]) if "shards" in f.attrs else []
    for entry in manifest:     # attributes only: cheap even for hundreds of shards
        shard = os.path.join(base, entry["file"])
        if not os.path.isfile(shard):
            raise ValueError(f"dataset.path: shard {entry['file']} of {path} is missing")
        try:
            with h5py.File(shard, "r") as s:
                marker = json.loads(s.attrs["complete"])
        except (OSError, KeyError, ValueError):
            marker = {}
        if marker.get("sha256") != entry["sha256"] or marker.get("count") != entry["count"]:
            raise ValueError(f"dataset.path: shard {entry['file']} of {path} is not the one "
                             "the index was written with; rerun data_prep")
    info["num_classes"] = len(info["class_names"])
    return info
