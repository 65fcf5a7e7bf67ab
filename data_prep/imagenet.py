"""An ImageNet-style tree: `train/<class>/*.JPEG`, and `val/` (or `test/`) either in class
folders or flat with a labels file. Scanning, the shard plan, and decoding one shard.

Decoding: PIL, converted to RGB, the shorter side resized to `size` and the center square
kept (one resize over the center box), as the seeds' offline ImageNet-64. A file that cannot
be read or decoded is skipped and listed, never fatal.

The plan depends only on the tree and the options, never on the rank count: the training
files, sorted, are shuffled with a fixed seed (the tree is sorted by class, and readers mix
only a window at a time) and cut into shards of `shard_size` files; val files keep their
sorted order. Ranks take shards round-robin.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import warnings

import h5py
import numpy as np
from PIL import Image

from lth_mpi.data import h5format

IMAGE_EXTENSIONS = frozenset({".jpeg", ".jpg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif",
                              ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".qoi"})
DECODER = "PIL draft+RGB, shorter side to size, center crop, bicubic (v1)"
LABELS_FILE = "val_labels.txt"


@dataclasses.dataclass
class Tree:
    root: str
    classes: list[str]
    train: list[tuple[str, int]]        # (path relative to root, label), sorted by path
    test: list[tuple[str, int]]
    test_layout: str                    # "class folders" or "labels file NAME"


@dataclasses.dataclass(frozen=True)
class Shard:
    split: str
    index: int
    files: tuple                        # ((relative path, label), ...)

    @property
    def name(self) -> str:
        return f"{self.split}-{self.index:05d}"


def is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _images_under(root: str, folder: str) -> list[str]:
    """Image files below root/folder, as sorted '/'-separated paths relative to root."""
    out = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, folder)):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if is_image(name):
                out.append(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
    return sorted(out)


def read_labels_file(path: str, classes: list[str]) -> dict[str, int]:
    """Lines `filename class` (class: a train/ folder name); blank lines and # comments
    are skipped. Returns {filename: label}."""
    index = {c: i for i, c in enumerate(classes)}
    out = {}
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{path}:{number}: expected 'filename class', got {line!r}")
            name, cls = parts
            if cls not in index:
                raise ValueError(f"{path}:{number}: class {cls!r} is not a folder of train/")
            if name in out:
                raise ValueError(f"{path}:{number}: {name} is listed twice")
            out[name] = index[cls]
    return out


def scan(root: str, val_labels: str | None = None) -> Tree:
    """The tree's classes and labelled files; ValueError in one line for a malformed tree."""
    if not os.path.isdir(root):
        raise ValueError(f"{root}: not a directory")
    train_dir = os.path.join(root, "train")
    if not os.path.isdir(train_dir):
        raise ValueError(f"{root}: no train/ folder (expected train/<class>/*.JPEG)")
    classes = sorted(d for d in os.listdir(train_dir)
                     if os.path.isdir(os.path.join(train_dir, d)) and not d.startswith("."))
    if not classes:
        raise ValueError(f"{train_dir}: no class folders")
    train = [(p, label) for label, c in enumerate(classes)
             for p in _images_under(root, f"train/{c}")]
    if not train:
        raise ValueError(f"{train_dir}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    folder = next((f for f in ("val", "test") if os.path.isdir(os.path.join(root, f))), None)
    if folder is None:
        raise ValueError(f"{root}: no val/ or test/ folder")
    test_dir = os.path.join(root, folder)
    subdirs = sorted(d for d in os.listdir(test_dir)
                     if os.path.isdir(os.path.join(test_dir, d)) and not d.startswith("."))
    if subdirs:
        index = {c: i for i, c in enumerate(classes)}
        for d in subdirs:
            if d not in index:
                raise ValueError(f"{test_dir}/{d}: not a class of train/")
        loose = [n for n in os.listdir(test_dir) if is_image(n)]
        if loose:
            raise ValueError(f"{test_dir}: has class folders and loose images ({loose[0]}, ...)")
        test = sorted((p, index[d]) for d in subdirs for p in _images_under(root, f"{folder}/{d}"))
        layout = "class folders"
    else:
        labels_path = val_labels or os.path.join(root, LABELS_FILE)
        if not os.path.isfile(labels_path):
            raise ValueError(f"{test_dir} is flat and needs a labels file of 'filename class' "
                             f"lines: {labels_path} not found (see --val-labels)")
        labels = read_labels_file(labels_path, classes)
        files = _images_under(root, folder)
        names = {p[len(folder) + 1:] for p in files}
        for p in files:
            if p[len(folder) + 1:] not in labels:
                raise ValueError(f"{p} has no label in {labels_path}")
        for name in labels:
            if name not in names:
                raise ValueError(f"{labels_path} names {folder}/{name}, which is not an image "
                                 f"file in {test_dir}")
        test = [(p, labels[p[len(folder) + 1:]]) for p in files]
        layout = f"labels file {os.path.basename(labels_path)}"
    if not test:
        raise ValueError(f"{test_dir}: no image files")
    return Tree(root, classes, train, test, layout)


def plan(tree: Tree, shard_size: int, seed: int) -> list[Shard]:
    """Every shard of the conversion, in index order; the same for any number of ranks."""
    if shard_size < 1:
        raise ValueError(f"--shard-size: must be >= 1, got {shard_size}")
    order = np.random.default_rng(seed).permutation(len(tree.train))
    train = [tree.train[i] for i in order]
    shards = []
    for split, files in (("train", train), ("test", tree.test)):
        for k, start in enumerate(range(0, len(files), shard_size)):
            shards.append(Shard(split, k, tuple(files[start:start + shard_size])))
    return shards


def path_width(tree: Tree) -> int:
    """Bytes of the longest relative path: one fixed string type for every shard's paths,
    as the virtual dataset over them requires."""
    return max(len(p.encode()) for p, _ in tree.train + tree.test)


def plan_key(shard: Shard, size: int, width: int) -> str:
    """What a shard is made from and how: a shard whose marker holds another key is redone."""
    text = json.dumps({"format": h5format.VERSION, "decoder": DECODER, "size": size,
                       "width": width, "split": shard.split, "index": shard.index,
                       "files": shard.files})
    return hashlib.sha256(text.encode()).hexdigest()


def decode(data: bytes, size: int) -> np.ndarray:
    """size x size x 3 uint8: RGB, shorter side scaled to `size`, center square."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")    # EXIF and palette notes are not our concern
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (size, size))   # JPEG: decode at a reduced scale >= size
            if img.mode in ("P", "PA"):
                img = img.convert("RGBA")    # palette transparency goes through RGBA
            img = img.convert("RGB")
            w, h = img.size
            side = min(w, h)
            box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
            out = img.resize((size, size), Image.Resampling.BICUBIC, box=box)
    return np.asarray(out, np.uint8)


def _reason(exc: BaseException) -> str:
    """One line, without object addresses (PIL names its BytesIO), so reruns write equal bytes."""
    text = re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", " ".join(str(exc).split()))
    return f"{type(exc).__name__}: {text}"[:300]


def convert_shard(root: str, shard: Shard, size: int, width: int) -> tuple[dict, dict]:
    """(arrays, attributes) of one shard; corrupt files are skipped and listed."""
    n = len(shard.files)
    images = np.empty((n, size, size, 3), np.uint8)
    labels = np.empty(n, np.int32)
    paths = np.empty(n, f"S{width}")
    digests = np.empty((n, 32), np.uint8)
    skipped, kept = [], 0
    for rel, label in shard.files:
        try:
            with open(os.path.join(root, rel), "rb") as fh:
                data = fh.read()
        except OSError as exc:
            skipped.append({"path": rel, "reason": _reason(exc), "sha256": None})
            continue
        digest = hashlib.sha256(data).digest()
        try:
            images[kept] = decode(data, size)
        except Exception as exc:   # PIL raises many kinds for bad files; none may stop us
            skipped.append({"path": rel, "reason": _reason(exc), "sha256": digest.hex()})
            continue
        labels[kept], paths[kept] = label, rel.encode()
        digests[kept] = np.frombuffer(digest, np.uint8)
        kept += 1
    arrays = {"images": images[:kept], "labels": labels[:kept], "paths": paths[:kept],
              "sha256": digests[:kept]}
    total, squares = h5format.pixel_sums(arrays["images"])
    attrs = {"split": shard.split, "index": shard.index, "pixel_sum": total,
             "pixel_sumsq": squares, "skipped": json.dumps(skipped)}
    return arrays, attrs


def summarize(shard_paths: dict) -> tuple[dict, list]:
    """From finished shards: {split: sha256 of the split's source listing} and the skipped list.

    The listing is `sha256sum` output over the split's image files in sorted order
    ("<hex>  <path relative to SRC>" lines; "-" for a file that could not be read), so
    `cd SRC && find train -type f | LC_ALL=C sort | xargs sha256sum | sha256sum` checks
    it when every file there is an image.
    """
    sources, skipped = {}, []
    for split, paths in shard_paths.items():
        lines = []
        for path in paths:
            with h5py.File(path, "r") as f:
                rows = zip(f["paths"][()], f["sha256"][()])
                lines += [(p.decode(), bytes(d).hex()) for p, d in rows]
                for s in json.loads(f.attrs["skipped"]):
                    lines.append((s["path"], s["sha256"] or "-"))
                    skipped.append(s)
        listing = "".join(f"{d}  {p}\n" for p, d in sorted(lines))
        sources[split] = hashlib.sha256(listing.encode()).hexdigest()
    skipped.sort(key=lambda s: s["path"])
    return sources, skipped
