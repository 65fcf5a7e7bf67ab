"""The results HDF5 file: written by one rank, appended cell by cell, readable at any moment.

The layout is documented in docs/results.md; keep the two in step. Everything here is serial
h5py: the parallel layer makes sure only the writer rank calls the writing half.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import time

import h5py
import numpy as np

from . import config as config_mod
from . import faults, modes, pruning, stability
from .comm.wire import CURVES, CellResult

FORMAT = "lth-mpi results"
VERSION = 3    # 2: validation curves, early stop on validation; 3: completeness markers
DENSE_OBJECTS = ("dense", "weights", "checkpoints", "masks")
NEW_IN_2 = ("val_loss", "val_accuracy")
WEIGHTS_STORAGE = {"compression": "gzip", "shuffle": True}   # pruned zeros cost ~nothing
# seconds between the writer's beats: a running file's job is alive (LTH_HEARTBEAT: tests)
HEARTBEAT = float(os.environ.get("LTH_HEARTBEAT", 10.0))
STALE = 6 * HEARTBEAT   # ... and dead (killed, or its node lost) once this long silent
PHASES = ("setup", "dense", "wait", "broadcast", "cell", "drain", "gather")


class NotAResultsFile(ValueError):
    """The file is not an lth-mpi results file (or not there); the message is one line."""


# settings that change where things go or how fast, never the numbers beyond the order of
# float sums: --resume ignores them (a moved dataset is found by path, and recognised by its
# fingerprint; XLA fuses the same operations; a cell trains the same whichever group takes it)
NOT_RESULTS = ("output", "parallel.threads", "parallel.allreduce", "dataset.path",
               "dataset.prefetch", "train.xla", "parallel.assign")


def result_keys(cfg: dict) -> dict:
    """The flattened config without NOT_RESULTS: what decides the results."""
    return {k: v for k, v in config_mod.flat(cfg).items() if k not in NOT_RESULTS}


def config_hash(cfg: dict) -> str:
    """Identity of the experiment, independent of key order and of NOT_RESULTS."""
    text = config_mod.yaml.safe_dump(result_keys(cfg), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# software whose version decides the numbers (Keras' initializers and layers, TensorFlow's
# kernels): --resume refuses a change of these, as of a result-deciding config key. Horovod,
# MPI, h5py and Python move only where and how fast, like NOT_RESULTS.
RESULT_SOFTWARE = ("tensorflow", "keras")


def check_resumable(f: h5py.File, path: str, cfg: dict, fingerprint: str | None,
                    software: dict | None = None) -> None:
    """Refuse to continue a file of another format version, config, dataset or stack."""
    check_format(f, path)
    version = int(f.attrs.get("format_version", 0))
    if version != VERSION:
        raise ValueError(f"--resume: {path} has format version {version}, this lth-mpi "
                         f"writes {VERSION}; finish it with the version that started it")
    if f.attrs["config_hash"] != config_hash(cfg):   # the keys decide: a file hashed with
        # an older NOT_RESULTS resumes when only keys now known not to decide results differ
        # and keys declared since the file was written compare at their defaults
        old = result_keys(config_mod.filled(config_mod.yaml.safe_load(f.attrs["config"])))
        new = result_keys(cfg)
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if keys:
            raise ValueError(f"--resume: {path} was written by a different config "
                             f"({', '.join(keys)} differ)")
    why = modes.of(cfg).resumable(f["cells"])
    if why:
        raise ValueError(f"--resume: {path} {why}")
    was = f.attrs.get("dataset_fingerprint")
    if fingerprint and was and was != fingerprint:
        raise ValueError(f"--resume: {path} was written with other data: the dataset's "
                         f"fingerprint was {was}, it is now {fingerprint}")
    was = json.loads(f.attrs.get("software", "{}"))
    changed = [k for k in RESULT_SOFTWARE if software and k in was and was[k] != software[k]]
    if changed:
        raise ValueError(f"--resume: {path} was written with "
                         + ", ".join(f"{k} {was[k]}" for k in changed) + "; this is "
                         + ", ".join(f"{k} {software[k]}" for k in changed)
                         + ": they decide results, so finish it with the stack that started "
                         "it, or start a new --output")


def rank_entry(layout) -> dict:
    """This rank's line of the `ranks` attribute (gathered from every rank by the caller)."""
    return {"rank": layout.rank, "host": layout.host, "group": layout.group,
            "group_rank": layout.group_rank, "local_rank": layout.local_rank,
            "threads": layout.threads, "allreduce": layout.allreduce, "gpu": layout.gpu,
            "pid": os.getpid()}


def provenance(layout, ranks: list[dict], stack: dict) -> dict:
    """The provenance attributes: the software stack (comm.stack.describe), the layout and
    every rank's rank_entry."""
    return {**stack, "world_size": layout.size, "group_size": layout.group_size,
            "n_groups": layout.n_groups, "hosts": sorted({r["host"] for r in ranks}),
            "ranks": ranks}


def bill_path(output: str) -> str:
    """Where a dry run leaves its bill for the run that follows (next to the output)."""
    return output + ".bill.json"


def save_bill(s: config_mod.Settings, bill) -> None:
    """The dry run's estimate (cost.Estimate), for the run of this config to record."""
    record = {"config_hash": config_hash(s.cfg), "ranks": bill.ranks,
              "group_size": bill.group_size, "trainings": bill.trainings,
              "wall": bill.wall, "setup": bill.setup, "dense": bill.dense, "grid": bill.grid,
              "rank_hours": bill.rank_hours, "serial_fraction": bill.serial_fraction,
              "efficiency": bill.efficiency(), "ranks_at_90": bill.ranks_at_90,
              "measured": dataclasses.asdict(bill.measured), "made": time.time()}
    with open(bill_path(s.output), "w") as fh:
        json.dump(record, fh, indent=1)


def saved_bill(s: config_mod.Settings, ranks: int) -> dict | None:
    """The bill a dry run of this very search (config and P) left, or None."""
    try:
        with open(bill_path(s.output)) as fh:
            bill = json.load(fh)
    except (OSError, ValueError):
        return None
    same = bill.get("config_hash") == config_hash(s.cfg) and bill.get("ranks") == ranks
    return bill if same else None


class Writer:
    """Appends to a results file; every write ends in a flush, so a killed run keeps it."""

    def __init__(self, s: config_mod.Settings, provenance: dict, n_cells: int, resume: bool,
                 fingerprint: str | None = None):
        """`s`: the search's settings, bound to its model (config.Settings.bind)."""
        path, cfg = s.output, s.cfg
        self.s, self.path, self.keep = s, path, s.keep_weights
        self.seeds = list(s.seeds) if s.replicated else None
        if resume and os.path.exists(path):
            with h5py.File(path, "r") as f:   # checked read-only: a refusal changes nothing
                check_resumable(f, path, cfg, fingerprint, provenance.get("software"))
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
        self.best = {}     # mask index -> (score, name) of the ticket holding weights (best)
        if self.keep == "best":
            self._keep_only_best()
        for key, value in provenance.items():
            self.f.attrs[key] = value if isinstance(value, (str, int, float)) else json.dumps(value)
        self.f.attrs["status"] = "running"
        self.f.attrs["job_started"] = self.f.attrs["heartbeat"] = time.time()
        self.f.flush()
        self._beating = threading.Event()
        threading.Thread(target=self._beat, name="lth-mpi heartbeat", daemon=True).start()

    def _beat(self):
        """Every HEARTBEAT seconds, the time, so `lth-mpi status` can tell a running job from
        one that died with the file saying `running` (SIGKILL, a lost node: no handler runs).
        A thread, because the writer may spend an hour in one epoch; h5py serializes its
        calls, and a beat between two writes of a cell changes nothing (`complete` comes
        last). It stops quietly if the file fails: the writer reports that itself."""
        while not self._beating.wait(HEARTBEAT):
            try:
                self.f.attrs["heartbeat"] = time.time()
                self.f.flush()
            except Exception:        # noqa: BLE001
                return

    def _keep_only_best(self):
        """keep_weights best on a resumed file: one copy per mask, the best (the earliest
        cell on a tie, as when it ran). A stop between a new copy's completion and the old
        copy's deletion leaves two; the lesser goes now."""
        held = {}
        for name, g in self.f["cells"].items():
            if "weights" in g:
                held.setdefault(int(g.attrs["mask"]), []).append(
                    (score(g.attrs), -int(g.attrs["id"]), name))
        for mask, copies in held.items():
            copies.sort(reverse=True)
            self.best[mask] = (copies[0][0], copies[0][2])
            for _, _, name in copies[1:]:
                del self.f["cells"][name]["weights"]

    def _remove_incomplete(self):
        """What a stop in the middle of a write left behind, removed so that it is redone."""
        for where in ("cells", "stability"):
            held = self.f.get(where, {})
            for name in [n for n, g in held.items() if not cell_complete(self.f, g)]:
                del held[name]
        if not dense_complete(self.f):
            for k in range(-1, len(self.seeds or ())):
                where = replicate_group(self.f, k)
                if where is not None and not where.attrs.get("dense_complete", 0):
                    for name in DENSE_OBJECTS[:1] + DENSE_OBJECTS[2:]:   # not /weights
                        if name in where:
                            del where[name]
            if not any(replicate_done(self.f, k) for k in range(len(self.seeds or ()))):
                if "weights" in self.f:
                    del self.f["weights"]
        self.f.flush()

    def done_cells(self) -> set[str]:
        """The cells written, and the dense net's stability pairs (rewind.points: auto)."""
        return set(self.f["cells"]) | set(self.f.get("stability", ()))

    def has_dense(self, replicate: int = -1) -> bool:
        return dense_complete(self.f) or replicate_done(self.f, replicate)

    def write_dense(self, replicate: int, history: dict, weight_names, weight_shapes,
                    prunable_idx, checkpoints: np.ndarray, packed_masks: np.ndarray, realized,
                    trained: np.ndarray | None = None):
        """Dense history, rewind checkpoints (flat float32) and masks (bit-packed), and the
        trained weights unless results.keep_weights is none; the root attribute
        dense_complete, written last, makes them count. Replicate k of `seeds` writes its
        own under /replicates/k, marked there; the root's marker follows the last one."""
        where = self.f
        if replicate >= 0:
            where = self.f.require_group(f"replicates/{replicate}")
            where.attrs["seed"] = self.seeds[replicate]
        g = where.create_group("dense")
        for k in CURVES:
            g.create_dataset(k, data=history[k])
        if self.keep != "none" and trained is not None:
            g.create_dataset("weights", data=trained, **WEIGHTS_STORAGE)
        self.f.flush()    # so that a stop here leaves a half-written phase on disk
        faults.hit("dense-curves")
        if "weights" not in self.f:    # the same for every replicate
            w = self.f.create_group("weights")
            w.attrs["names"] = json.dumps(list(weight_names))
            w.attrs["shapes"] = json.dumps([list(s) for s in weight_shapes])
            w.attrs["prunable"] = json.dumps(list(prunable_idx))
        c = where.create_dataset("checkpoints", data=checkpoints, compression="gzip")
        c.attrs["points"], c.attrs["unit"] = list(self.s.points), self.s.unit
        m = where.create_dataset("masks", data=packed_masks, compression="gzip")
        m.attrs["sparsity_target"] = np.asarray(self.s.targets, np.float64)
        m.attrs["sparsity_realized"] = np.asarray(realized, np.float64)
        m.attrs["scope"] = self.s.mode.scope
        self.f.flush()
        faults.hit("dense-masks")
        where.attrs["dense_complete"] = 1
        if replicate >= 0 and all(replicate_done(self.f, k) for k in range(len(self.seeds))):
            self.f.attrs["dense_complete"] = 1
        self.f.flush()

    def dense(self, replicate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A written dense phase as the phase left it: (checkpoints (N, weights) float32,
        bit-packed masks, realized sparsities); what --resume continues from."""
        where = replicate_group(self.f, replicate)
        return (where["checkpoints"][()], where["masks"][()],
                np.asarray(where["masks"].attrs["sparsity_realized"], np.float64))

    def write_cell(self, cell, sparsity, realized, point, result: CellResult):
        """A finished cell; a diverged one (history["diverged"] = the epoch it stopped at, 0
        if trained) has curves ending at that epoch and NaN summary numbers. The attribute
        `complete`, written last, makes the cell count (resume redoes one without)."""
        history, diverged = result.history, int(result.history.get("diverged", 0))
        t_start, t_end, group = result.t_start, result.t_end, result.group
        g = self.f.require_group("stability" if cell.dense else "cells").create_group(cell.name)
        for k in CURVES:
            g.create_dataset(k, data=history[k])
        if cell.pair:
            g.attrs.update(self._pair(g, result.pair))
        for k in ("mask", "mask_next"):
            if getattr(result, k).size:
                g.create_dataset(k, data=getattr(result, k), compression="gzip")
        replaces = self._keeps(cell, result)
        if replaces is not None:
            g.create_dataset("weights", data=result.weights, **WEIGHTS_STORAGE)
        self.f.flush()
        faults.hit("cell-curves")
        acc = np.asarray(history["test_accuracy"])
        best, split = select(history)
        if diverged:
            best, split = len(acc) - 1, "none"      # the last row is all NaN
        g.attrs.update({
            "status": "diverged" if diverged else "trained", "diverged_epoch": int(diverged),
            "id": cell.id, "mask": cell.mask, "rewind": cell.rewind, "control": cell.control,
            "level": self.s.mode.level(cell),                      # 0: not iterative
            "replicate": cell.replicate,                           # -1: one seed
            "seed": self.s.seed(cell.replicate),
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
        if replaces:     # only now: a stop before this leaves two copies, never none
            faults.hit("cell-replace")
            del self.f["cells"][replaces]["weights"]
            self.f.flush()

    def _pair(self, g, pair: np.ndarray) -> dict:
        """A stability pair's path (a dataset) and attributes; a diverged pair has no path
        and NaN numbers."""
        ends, path = stability.unpack(pair)
        d = g.create_dataset("path", data=path)
        d.attrs["columns"] = json.dumps(stability.PATH_COLUMNS)
        return {"instability": stability.instability(path[:, 1]),
                "instability_val": stability.instability(path[:, 3]),
                "copy_b_final_test_accuracy": float(ends[2]),
                "copy_b_final_val_accuracy": float(ends[3]),
                "data_order": "same" if self.s.stability.same_order else "different",
                "batchnorm_batches": self.s.stability.batchnorm_batches}

    def write_choice(self, choice: dict):
        """rewind.points: auto: the point chosen and the evidence, on /stability."""
        g = self.f.require_group("stability")
        for key, value in choice.items():
            g.attrs[key] = json.dumps(value) if isinstance(value, (list, dict)) else value
        self.f.flush()

    def ladder(self) -> list[dict]:
        """The dense net's stability pairs written so far (rewind.points: auto)."""
        return ladder_in(self.f)

    def _keeps(self, cell, result: CellResult) -> str | None:
        """Whether this cell's weights are stored: None if not, else the name of the cell
        whose weights they replace ("" if none). keep_weights best keeps one ticket per mask,
        the one of highest final validation accuracy (test without a validation split)."""
        if not result.weights.size or result.history.get("diverged", 0):
            return None
        if self.keep == "all":
            return ""
        if self.keep != "best" or cell.control != "none":
            return None
        new = score({"final_val_accuracy": result.history["val_accuracy"][-1],
                     "final_test_accuracy": result.history["test_accuracy"][-1]})
        old, name = self.best.get(cell.mask, (-np.inf, ""))
        if new <= old:
            return None
        self.best[cell.mask] = (new, cell.name)
        return name

    def write_timings(self, table: np.ndarray, t0: float):
        """Rows (rank, phase, cell id or -1, t_start, t_end); a resumed run appends."""
        name = f"timings/run{int(self.f.attrs.get('resumed', 0))}"
        d = self.f.create_dataset(name, data=table)
        d.attrs["columns"] = json.dumps(["rank", "phase", "cell", "t_start", "t_end"])
        d.attrs["phases"] = json.dumps(PHASES)
        d.attrs["t0"] = t0
        self.f.flush()

    def close(self, complete: bool):
        self._beating.set()
        self.f.attrs["status"] = "complete" if complete else "interrupted"
        self.f.close()

    def fail(self, message: str):
        """The job stopped on an error it found (e.g. a diverged dense network)."""
        self._beating.set()
        self.f.attrs["status"], self.f.attrs["error"] = "failed", message
        self.f.close()


    def chain_start(self, name: str, size: int) -> tuple[np.ndarray, bool]:
        """(bit-packed mask of the next level, whether the chain ended in divergence) after
        the finished iterative cell `name`: where a resumed chain continues. A chain's last
        level and a diverged one have no next mask (zeros of `size` bytes stand in)."""
        g = self.f["cells"][name]
        mask = g["mask_next"][()] if "mask_next" in g else np.zeros(size, np.uint8)
        return mask, g.attrs["status"] == "diverged"

    def cell_mask(self, name: str) -> np.ndarray | None:
        """The bit-packed mask the finished cell `name` trained with, or None if it is not
        in the file (iterative pruning: a level its chain never reached)."""
        g = self.f["cells"].get(name)
        return g["mask"][()] if g is not None and cell_complete(self.f, g) and "mask" in g \
            else None


def score(attrs) -> float:
    """A finished cell's final accuracy on the selection split, for keep_weights: best."""
    val = float(attrs["final_val_accuracy"])
    return val if np.isfinite(val) else float(attrs["final_test_accuracy"])


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


def cell_complete(f: h5py.File, g: h5py.Group | None) -> bool:
    """Files before version 3 had no markers: a cell there is complete once it exists. A
    reader of a running search can see a cell's name before its group can be opened (h5py
    then gives None): not complete yet."""
    return g is not None and (_version(f) < 3 or "complete" in g.attrs)


def dense_complete(f: h5py.File) -> bool:
    """Every dense phase (one per replicate of `seeds`) is in the file."""
    return "masks" in f if _version(f) < 3 else bool(f.attrs.get("dense_complete", 0))


def replicate_group(f: h5py.File, replicate: int):
    """Where replicate k's dense phase lives (-1, one seed: the root); None if not there."""
    if replicate < 0:
        return f
    return f.get(f"replicates/{replicate}")


def replicate_done(f: h5py.File, replicate: int) -> bool:
    where = replicate_group(f, replicate)
    return replicate >= 0 and where is not None and bool(where.attrs.get("dense_complete", 0))


def replicates_in(f: h5py.File) -> list[int]:
    """The replicate indices of the file's dense phases: [-1] for one seed."""
    return sorted(int(k) for k in f["replicates"]) if "replicates" in f else [-1]


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
    """Refuse a file that is not a results file, or one of a later format than this reads."""
    if f.attrs.get("format") != FORMAT:
        raise NotAResultsFile(f"{path} is not an lth-mpi results file (no format={FORMAT!r} attribute)")
    if _version(f) > VERSION:
        raise NotAResultsFile(f"{path} has format version {_version(f)}; this lth-mpi reads "
                              f"version {VERSION}")


def is_dense_name(name: str) -> bool:
    """"dense" (one seed) or "dense_s<k>" (replicate k): a dense network, not a cell."""
    return name == "dense" or name.startswith("dense_s") and name[7:].isdigit()


def dense_of(f: h5py.File, name: str):
    """The /dense group a dense name (is_dense_name) stands for, or None if not there."""
    where = replicate_group(f, -1 if name == "dense" else int(name[7:]))
    return where.get("dense") if where is not None else None


def read_weights(f: h5py.File, name: str) -> np.ndarray:
    """The trained weights (flat float32, /weights order) of cell `name`, or of the dense
    network for name "dense" ("dense_s<k>" for replicate k of `seeds`); ValueError naming
    what is there if they were not kept."""
    g = dense_of(f, name) if is_dense_name(name) else f["cells"].get(name)
    if g is None:
        names = sorted(f["cells"])
        raise ValueError(f"no cell {name!r} in the file (cells: {', '.join(names[:8])}"
                         + (", ..." if len(names) > 8 else "") + ", or dense)")
    if "weights" not in g:
        kept = [n for n, c in f["cells"].items() if "weights" in c]
        raise ValueError(f"{name} has no trained weights in the file ("
                         + (f"cells with weights: {', '.join(kept[:8])}" if kept else
                            "run the search with results.keep_weights: best or all") + ")")
    return g["weights"][()]


def sparsities(f: h5py.File, cfg: dict) -> list[float]:
    """One per mask index: the configured list (one-shot, gradual), or each level's exact
    sparsity (iterative: known once the dense phase has written /masks; NaN before)."""
    first = replicate_group(f, -1 if cfg.get("seeds") is None else 0)
    written = first is not None and (dense_complete(f) or first.attrs.get("dense_complete", 0))
    return modes.of(cfg).stored_targets(first["masks"].attrs if written else None)


def read_dense(f: h5py.File, replicate: int = -1):
    """(weight shapes, prunable indices, checkpoints as lists of arrays, masks as lists) of
    the dense phase (of replicate k of `seeds`)."""
    w = f["weights"].attrs
    where = replicate_group(f, replicate)
    shapes = [tuple(s) for s in json.loads(w["shapes"])]
    prunable = json.loads(w["prunable"])
    sizes = [int(np.prod(s)) for s in shapes]
    offsets = np.cumsum([0] + sizes)
    ckpts = [[flat[offsets[i]:offsets[i + 1]].reshape(shapes[i]) for i in range(len(shapes))]
             for flat in where["checkpoints"][()]]
    masks = [pruning.unpack_masks(p, [shapes[i] for i in prunable])
             for p in where["masks"][()]]
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


def cells_in(f: h5py.File, where: str = "cells") -> list[dict]:
    """read_cells on an open file (`where`: stability, the dense net's pairs)."""
    out = []
    for name, g in f[where].items() if where in f else ():
        if not cell_complete(f, g):
            continue          # a write cut short: not a result (resume redoes it)
        row = {"name": name, **{k: attr_value(v) for k, v in g.attrs.items()}}
        row.update(read_curves(g))
        if "path" in g:
            row["path"] = g["path"][()]
        out.append(upgrade_cell(row))
    return sorted(out, key=lambda r: r["id"])


def ladder_in(f: h5py.File) -> list[dict]:
    """The dense net's finished stability pairs (rewind.points: auto), like cells_in."""
    return cells_in(f, "stability")


def choice_in(f: h5py.File) -> dict:
    """rewind.points: auto's choice and its evidence ({} before it is made)."""
    g = f.get("stability")
    return {k: attr_value(v) for k, v in g.attrs.items()} if g is not None else {}


def attr_value(v):
    """An HDF5 attribute as plain Python: bytes decoded, JSON (lists, objects) parsed,
    numpy scalars as numbers."""
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v.item() if hasattr(v, "item") and np.ndim(v) == 0 else v


@dataclasses.dataclass
class Contents:
    """A results file read in one pass, what status, the analysis and export start from."""
    path: str
    config: dict
    attrs: dict                  # root attributes, JSON ones decoded
    sparsities: list             # targets, one per mask index
    realized: np.ndarray | None  # realized sparsities (None before the dense phase ended)
    dense_complete: bool
    dense_runs: list             # the /dense curves of each finished dense phase
    cells: list                  # finished cells: attributes plus curves, by id
    timings: list                # (job, rows, phases, t0) of each job that finished
    ladder: list = dataclasses.field(default_factory=list)   # the dense net's pairs (auto)
    choice: dict = dataclasses.field(default_factory=dict)   # auto's choice and evidence

    @property
    def status(self) -> str:
        return str(self.attrs.get("status", "unknown"))

    @property
    def points(self) -> list:
        """The grid's rewind points: as configured, or the one rewind.points: auto chose
        (none yet before the choice)."""
        return rewind_points(self.config, self.choice)


def rewind_points(cfg: dict, choice: dict) -> list:
    """The rewind points a file's cells index: its config's, or auto's choice."""
    points = cfg["rewind"]["points"]
    if points != "auto":
        return list(points)
    return [choice["chosen_point"]] if "chosen_point" in choice else []


def contents(f: h5py.File, path: str) -> Contents:
    """read() on an open file."""
    attrs = {k: attr_value(v) for k, v in f.attrs.items()}
    try:
        cfg = config_mod.yaml.safe_load(attrs["config"])
    except (KeyError, config_mod.yaml.YAMLError):
        raise NotAResultsFile(f"{path} is not an lth-mpi results file (no readable "
                              "config)") from None
    done = dense_complete(f)
    where = [replicate_group(f, k) for k in replicates_in(f)]
    timings = []
    for key in sorted(f.get("timings", {}), key=lambda k: int(k[3:])):
        d = f["timings"][key]
        timings.append((int(key[3:]), d[()].reshape(-1, 5), tuple(json.loads(d.attrs["phases"])),
                        float(d.attrs["t0"])))
    return Contents(path, cfg, attrs, sparsities(f, cfg),
                    where[0]["masks"].attrs["sparsity_realized"][()] if done else None, done,
                    [read_curves(w["dense"]) for w in where] if done else [], cells_in(f),
                    timings, ladder_in(f), choice_in(f))


def read(path: str) -> Contents:
    """The whole file (but weights), also while its job is writing it (while_running);
    NotAResultsFile in one line for a file that is missing or is not one."""
    if not os.path.exists(path):
        raise NotAResultsFile(f"{path}: no such file")
    return while_running(lambda f: contents(f, path), path)


def _entry(hit: list, replicates: int = 0) -> str:
    """One cell's accuracy, or replicates' mean ± sd (n= when not all have finished)."""
    if not hit:
        return "-"
    if any(h["status"] == "diverged" for h in hit):
        return "div@" + ",".join(str(h["diverged_epoch"]) for h in hit if h["status"] == "diverged")
    acc = np.array([h["final_test_accuracy"] for h in hit])
    if hit[0].get("replicate", -1) < 0:
        return f"{acc[0]:.4f}"
    return f"{acc.mean():.4f}±{acc.std():.4f}" + (f" n={len(acc)}" if len(acc) < replicates else "")


def dense_accuracies(f: h5py.File) -> list[float]:
    """The final test accuracy of each finished dense phase (one per replicate)."""
    out = []
    for k in replicates_in(f):
        where = replicate_group(f, k)
        if dense_complete(f) or replicate_done(f, k):
            out.append(float(where["dense/test_accuracy"][-1]))
    return out


def per_rewind(control: str, cells: list[dict], cfg: dict) -> bool:
    """Does the file hold `control` once per rewind point (else once per mask)? Its cells
    say (files written before iterative random_reinit followed the ticket chains hold it
    once); with none written yet, the rule of today's grid."""
    mine = [c for c in cells if c["control"] == control]
    return any(c["rewind"] >= 0 for c in mine) if mine else \
        control in modes.of(cfg).rewound_controls


def accuracy_table(path: str) -> str:
    """Final test accuracy by sparsity (rows) and rewind point (columns), as text."""
    def read(f):
        cfg = config_mod.yaml.safe_load(f.attrs["config"])
        return cfg, dense_accuracies(f), cells_in(f), sparsities(f, cfg), choice_in(f)
    cfg, dense, cells, levels, choice = while_running(read, path)
    dense = np.array(dense or [np.nan])
    points, unit = rewind_points(cfg, choice), cfg["rewind"]["unit"]
    # one column per (kind, rewind): tickets and rewound controls by point, reinit once
    columns = [("none", r, f"{unit} {p}") for r, p in enumerate(points)]
    for ctl in cfg["controls"]:
        columns += ([(ctl, r, f"{ctl} {unit} {p}") for r, p in enumerate(points)]
                    if per_rewind(ctl, cells, cfg) else [(ctl, -1, ctl)])
    iterative, seeds = modes.of(cfg).has_levels, cfg.get("seeds")
    head = ["level"] * iterative + ["sparsity", "remain"] + [label for _, _, label in columns]
    rows = []
    for m, s in enumerate(levels):
        row = [str(m + 1)] * iterative + [f"{s:.3f}", f"{100 * (1 - s):.1f}%"]
        for ctl, r, _ in columns:
            row.append(_entry([c for c in cells if (c["mask"], c["rewind"], c["control"])
                               == (m, r, ctl)], len(seeds or ())))
        rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    first = (f"dense test accuracy: {dense[0]:.4f}" if not seeds else
             f"dense test accuracy: {dense.mean():.4f}±{dense.std():.4f} (mean±sd over seeds "
             f"{seeds}; so are the cells)")
    return "\n".join([first, fmt.format(*head)] + [fmt.format(*r) for r in rows])
