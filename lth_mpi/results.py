"""The results HDF5 file: written by one rank, appended cell by cell, readable at any moment.

The layout is documented in docs/results.md; keep the two in step. Everything here is serial
h5py: the parallel layer makes sure only the writer rank calls the writing half.
"""
from __future__ import annotations

import hashlib
import json
import os
import time

import h5py
import numpy as np

from . import config as config_mod
from . import faults, pruning
from . import plan as plan_mod

FORMAT = "lth-mpi results"
VERSION = 3    # 2: validation curves, early stop on validation; 3: completeness markers
DENSE_OBJECTS = ("dense", "weights", "checkpoints", "masks")
CURVES = ("epoch", "iteration", "train_loss", "test_loss", "test_accuracy", "val_loss",
          "val_accuracy", "epoch_seconds")
NEW_IN_2 = ("val_loss", "val_accuracy")
PHASES = ("setup", "dense", "wait", "broadcast", "cell", "drain", "gather")


class NotAResultsFile(ValueError):
    """The file is not an lth-mpi results file."""


# settings that change where things go or how fast, never the numbers: --resume ignores them
# (a moved dataset is found by path, and recognised by its fingerprint)
NOT_RESULTS = ("output", "parallel.threads", "dataset.path", "dataset.prefetch")


def result_keys(cfg: dict) -> dict:
    """The flattened config without NOT_RESULTS: what decides the results."""
    return {k: v for k, v in config_mod.flat(cfg).items() if k not in NOT_RESULTS}


def config_hash(cfg: dict) -> str:
    """Identity of the experiment, independent of key order and of NOT_RESULTS."""
    text = config_mod.yaml.safe_dump(result_keys(cfg), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_resumable(f: h5py.File, path: str, cfg: dict, fingerprint: str | None) -> None:
    """Refuse to continue a file of another format version, config or dataset."""
    check_format(f, path)
    version = int(f.attrs.get("format_version", 0))
    if version != VERSION:
        raise ValueError(f"--resume: {path} has format version {version}, this lth-mpi "
                         f"writes {VERSION}; finish it with the version that started it")
    if f.attrs["config_hash"] != config_hash(cfg):
        old, new = result_keys(config_mod.yaml.safe_load(f.attrs["config"])), result_keys(cfg)
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise ValueError(f"--resume: {path} was written by a different config "
                         f"({', '.join(keys) or 'hash'} differ)")
    was = f.attrs.get("dataset_fingerprint")
    if fingerprint and was and was != fingerprint:
        raise ValueError(f"--resume: {path} was written with other data: the dataset's "
                         f"fingerprint was {was}, it is now {fingerprint}")


class Writer:
    """Appends to a results file; every write ends in a flush, so a killed run keeps it."""

    def __init__(self, path: str, cfg: dict, provenance: dict, n_cells: int, resume: bool,
                 fingerprint: str | None = None):
        self.path = path
        if resume and os.path.exists(path):
            with h5py.File(path, "r") as f:   # checked read-only: a refusal changes nothing
                check_resumable(f, path, cfg, fingerprint)
            self.f = h5py.File(path, "a")
            self._remove_incomplete()
            self.f.attrs["resumed"] = int(self.f.attrs.get("resumed", 0)) + 1
        else:
            self.f = h5py.File(path, "x")   # never overwrite: "x" fails if it exists
            a = self.f.attrs
            a["format"], a["format_version"] = FORMAT, VERSION
            a["config"], a["config_hash"] = config_mod.dump(cfg), config_hash(cfg)
            a["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            a["cells_total"] = n_cells
            if fingerprint:
                a["dataset_fingerprint"] = fingerprint
            self.f.create_group("cells")
        for key, value in provenance.items():
            self.f.attrs[key] = value if isinstance(value, (str, int, float)) else json.dumps(value)
        self.f.attrs["status"] = "running"
        self.f.attrs["job_started"] = time.time()     # this job's start (lth-mpi status)
        self.f.flush()

    def _remove_incomplete(self):
        """What a stop in the middle of a write left behind, removed so that it is redone."""
        for name in [n for n, g in self.f["cells"].items() if not cell_complete(self.f, g)]:
            del self.f["cells"][name]
        if not dense_complete(self.f):
            for name in DENSE_OBJECTS:
                if name in self.f:
                    del self.f[name]
        self.f.flush()

    def done_cells(self) -> set[str]:
        return set(self.f["cells"])

    def has_dense(self) -> bool:
        return dense_complete(self.f)

    def write_dense(self, history: dict, weight_names, weight_shapes, prunable_idx,
                    points, unit, checkpoints: np.ndarray, packed_masks: np.ndarray,
                    sparsities, realized, scope):
        """Dense history, rewind checkpoints (flat float32) and masks (bit-packed); the root
        attribute dense_complete, written last, makes them count."""
        g = self.f.create_group("dense")
        for k in CURVES:
            g.create_dataset(k, data=history[k])
        self.f.flush()    # so that a stop here leaves a half-written phase on disk
        faults.hit("dense-curves")
        w = self.f.create_group("weights")
        w.attrs["names"] = json.dumps(list(weight_names))
        w.attrs["shapes"] = json.dumps([list(s) for s in weight_shapes])
        w.attrs["prunable"] = json.dumps(list(prunable_idx))
        c = self.f.create_dataset("checkpoints", data=checkpoints, compression="gzip")
        c.attrs["points"], c.attrs["unit"] = list(points), unit
        m = self.f.create_dataset("masks", data=packed_masks, compression="gzip")
        m.attrs["sparsity_target"] = np.asarray(sparsities, np.float64)
        m.attrs["sparsity_realized"] = np.asarray(realized, np.float64)
        m.attrs["scope"] = scope
        self.f.flush()
        faults.hit("dense-masks")
        self.f.attrs["dense_complete"] = 1
        self.f.flush()

    def write_cell(self, cell, sparsity, realized, point, group, history: dict,
                   t_start, t_end, diverged: int = 0):
        """A finished cell; `diverged` is the epoch a diverged cell stopped at (0: trained).
        A diverged cell's curves end at that epoch and its summary numbers are NaN. The
        attribute `complete`, written last, makes the cell count (resume redoes one without)."""
        g = self.f["cells"].create_group(cell.name)
        for k in CURVES:
            g.create_dataset(k, data=history[k])
        self.f.flush()
        faults.hit("cell-curves")
        acc = np.asarray(history["test_accuracy"])
        best, split = select(history)
        if diverged:
            best, split = len(acc) - 1, "none"      # the last row is all NaN
        g.attrs.update({
            "status": "diverged" if diverged else "trained", "diverged_epoch": int(diverged),
            "id": cell.id, "mask": cell.mask, "rewind": cell.rewind, "control": cell.control,
            "sparsity": sparsity, "sparsity_realized": realized,
            "rewind_point": -1 if point is None else point, "group": group,
            "t_start": t_start, "t_end": t_end, "seconds": t_end - t_start,
            "final_test_accuracy": float(acc[-1]),
            "final_test_loss": float(history["test_loss"][-1]),
            "final_val_accuracy": float(history["val_accuracy"][-1]),
            # the early-stop point is chosen on `selected_on`; test is only reported there
            "selected_on": split,
            "best_val_accuracy": float(history["val_accuracy"][best]),
            "best_test_accuracy": float(acc[best]),
            "best_iteration": -1 if diverged else int(history["iteration"][best])})
        self.f.flush()
        faults.hit("cell-attrs")
        g.attrs["complete"] = 1
        self.f.flush()

    def write_timings(self, table: np.ndarray, t0: float):
        """Rows (rank, phase, cell id or -1, t_start, t_end); a resumed run appends."""
        name = f"timings/run{int(self.f.attrs.get('resumed', 0))}"
        d = self.f.create_dataset(name, data=table)
        d.attrs["columns"] = json.dumps(["rank", "phase", "cell", "t_start", "t_end"])
        d.attrs["phases"] = json.dumps(PHASES)
        d.attrs["t0"] = t0
        self.f.flush()

    def close(self, complete: bool):
        self.f.attrs["status"] = "complete" if complete else "interrupted"
        self.f.close()

    def fail(self, message: str):
        """The job stopped on an error it found (e.g. a diverged dense network)."""
        self.f.attrs["status"], self.f.attrs["error"] = "failed", message
        self.f.close()


def select(history: dict) -> tuple[int, str]:
    """(epoch index of the early-stop point, split it was chosen on): the first epoch of
    highest validation accuracy; the test accuracy when there is no validation split (which
    biases the number reported at that point upward, and says so)."""
    val = np.asarray(history["val_accuracy"], np.float64)
    if len(val) and np.all(np.isfinite(val)):
        return int(np.argmax(val)), "validation"
    return int(np.argmax(np.asarray(history["test_accuracy"]))), "test"


# --- reading --------------------------------------------------------------------------------

def _version(f: h5py.File) -> int:
    return int(f.attrs.get("format_version", 0))


def cell_complete(f: h5py.File, g: h5py.Group) -> bool:
    """Files before version 3 had no markers: a cell there is complete once it exists."""
    return _version(f) < 3 or "complete" in g.attrs


def dense_complete(f: h5py.File) -> bool:
    return "masks" in f if _version(f) < 3 else bool(f.attrs.get("dense_complete", 0))


def read_curves(g: h5py.Group) -> dict:
    """A cell's (or the dense run's) curves; those a version-1 file lacks come back NaN."""
    n = len(g["epoch"])
    return {k: g[k][()] if k in g else np.full(n, np.nan) for k in CURVES}


def upgrade_cell(row: dict) -> dict:
    """A version-1 cell's attributes in version 2's terms: its early stop was chosen on test."""
    row.setdefault("selected_on", "test")
    row.setdefault("status", "trained")
    row.setdefault("diverged_epoch", 0)
    row.setdefault("final_val_accuracy", float("nan"))
    row.setdefault("best_val_accuracy", float("nan"))
    return row

def check_format(f: h5py.File, path: str) -> None:
    if f.attrs.get("format") != FORMAT:
        raise NotAResultsFile(f"{path} is not an lth-mpi results file (no format={FORMAT!r} attribute)")


def read_dense(f: h5py.File):
    """(weight shapes, prunable indices, checkpoints as lists of arrays, masks as lists)."""
    w = f["weights"].attrs
    shapes = [tuple(s) for s in json.loads(w["shapes"])]
    prunable = json.loads(w["prunable"])
    sizes = [int(np.prod(s)) for s in shapes]
    offsets = np.cumsum([0] + sizes)
    ckpts = [[flat[offsets[i]:offsets[i + 1]].reshape(shapes[i]) for i in range(len(shapes))]
             for flat in f["checkpoints"][()]]
    masks = [pruning.unpack_masks(p, [shapes[i] for i in prunable]) for p in f["masks"][()]]
    return shapes, prunable, ckpts, masks


def while_running(read, path: str, attempts: int = 20, pause: float = 0.1):
    """read(h5py.File) on a file a running job may be writing. The writer keeps the file
    open and flushes after every write, so between writes the file on disk is whole; a reader
    opens it without HDF5's advisory lock (which the writer holds) and, should it land inside
    a write and find half-written metadata, tries again. Completeness markers (written last)
    keep a half-written cell out of what is read."""
    if os.path.isfile(path) and not h5py.is_hdf5(path):
        raise NotAResultsFile(f"{path} is not an lth-mpi results file (not an HDF5 file)")
    for attempt in range(attempts):
        try:
            with h5py.File(path, "r", locking=False) as f:
                check_format(f, path)
                return read(f)
        except NotAResultsFile:
            raise
        except (OSError, KeyError, ValueError, RuntimeError):
            if attempt == attempts - 1 or not os.path.exists(path):
                raise
            time.sleep(pause)


def read_cells(path: str) -> list[dict]:
    """Every finished cell as a dict of its attributes plus its curves (also while the job
    is still writing the file)."""
    return while_running(cells_in, path)


def cells_in(f: h5py.File) -> list[dict]:
    """read_cells on an open file."""
    out = []
    for name, g in f["cells"].items():
        if not cell_complete(f, g):
            continue          # a write cut short: not a result (resume redoes it)
        row = {"name": name, **{k: v.item() if hasattr(v, "item") else v
                                for k, v in g.attrs.items()}}
        row.update(read_curves(g))
        out.append(upgrade_cell(row))
    return sorted(out, key=lambda r: r["id"])


def _entry(hit: list) -> str:
    if not hit:
        return "-"
    if hit[0]["status"] == "diverged":
        return f"div@{hit[0]['diverged_epoch']}"
    return f"{hit[0]['final_test_accuracy']:.4f}"


def accuracy_table(path: str) -> str:
    """Final test accuracy by sparsity (rows) and rewind point (columns), as text."""
    cfg, dense, cells = while_running(
        lambda f: (config_mod.yaml.safe_load(f.attrs["config"]),
                   float(f["dense/test_accuracy"][-1]) if dense_complete(f) else float("nan"),
                   cells_in(f)), path)
    points, unit = cfg["rewind"]["points"], cfg["rewind"]["unit"]
    # one column per (kind, rewind): tickets and rewound controls by point, reinit once
    columns = [("none", r, f"{unit} {p}") for r, p in enumerate(points)]
    for ctl in cfg["controls"]:
        columns += ([(ctl, r, f"{ctl} {unit} {p}") for r, p in enumerate(points)]
                    if ctl in plan_mod.REWOUND_CONTROLS else [(ctl, -1, ctl)])
    head = ["sparsity", "remain"] + [label for _, _, label in columns]
    rows = []
    for m, s in enumerate(cfg["prune"]["sparsities"]):
        row = [f"{s:.3f}", f"{100 * (1 - s):.1f}%"]
        for ctl, r, _ in columns:
            row.append(_entry([c for c in cells if (c["mask"], c["rewind"], c["control"])
                               == (m, r, ctl)]))
        rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join([f"dense test accuracy: {dense:.4f}", fmt.format(*head)]
                     + [fmt.format(*r) for r in rows])
