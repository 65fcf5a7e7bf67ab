"""One results file into plain Python and numpy, read in a single pass.

Works on finished, interrupted and still-running files: only the cells present under /cells
are used, and `missing` names the cells of the grid that are not there yet. The file is opened
without HDF5 file locking, so a job that is still writing it does not block the analysis.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time

import h5py
import numpy as np
import yaml

from lth_mpi import plan
from lth_mpi import results as lth_results

from . import AnalysisError, tickets


@dataclasses.dataclass
class Timings:
    """The timeline of one job (`/timings/run<job>`): rows (rank, phase, cell, t_start, t_end)."""
    job: int
    table: np.ndarray
    phases: tuple
    t0: float


@dataclasses.dataclass
class Results:
    path: str
    config: dict
    attrs: dict                 # root attributes, JSON ones decoded
    sparsities: list            # targets, one per mask
    realized: np.ndarray | None  # realized sparsities (None before the dense phase ended)
    points: list                # rewind points
    unit: str                   # epoch or iteration
    controls: list
    dense: dict | None          # /dense curves, None if the dense phase did not finish
    cells: list                 # finished cells: attributes plus curves, by id
    grid: list                  # every cell of the grid (lth_mpi.plan.Cell), by id
    timings: list               # Timings of each job that finished, oldest first
    runs: list = dataclasses.field(default_factory=list)        # every finished cell, as
    #   written; with `seeds`, `cells` holds their means over the replicates instead
    dense_runs: list = dataclasses.field(default_factory=list)  # dense curves per replicate

    @property
    def name(self) -> str:
        return self.config.get("name", os.path.basename(self.path))

    @property
    def status(self) -> str:
        return self.attrs.get("status", "unknown")

    @property
    def world_size(self) -> int:
        return int(self.attrs.get("world_size", 0))

    @property
    def group_size(self) -> int:
        return int(self.attrs.get("group_size", self.config["parallel"]["group_size"]))

    @property
    def n_groups(self) -> int:
        return int(self.attrs.get("n_groups", max(1, self.world_size // self.group_size)))

    @property
    def batchnorm(self) -> dict | None:
        """{"dense": n, "cells": n}: examples per BatchNorm batch statistic in the dense phase
        and in the cells (None inside: no BatchNorm); None for files before it was recorded."""
        value = self.attrs.get("batchnorm_examples")    # decoded from JSON by _value
        return value if isinstance(value, dict) else None

    @property
    def mixed_batchnorm(self) -> bool:
        """Did the dense net and the cells normalize over different batches?"""
        regime = self.batchnorm
        return bool(regime) and regime["dense"] != regime["cells"]

    @property
    def expected(self) -> list:
        return [c.name for c in self.grid]

    @property
    def replicated(self) -> bool:
        return bool(self.config.get("seeds"))

    @property
    def missing(self) -> list:
        done = {c["name"] for c in self.runs}
        return [n for n in self.expected if n not in done]

    @property
    def complete(self) -> bool:
        return not self.missing and self.status == "complete"

    @property
    def selection(self) -> str:
        """The split tickets and early stops are chosen on: `val` or (old files) `test`."""
        from .tickets import selection_split
        return selection_split(self.dense, self.cells)

    def point_label(self, rewind: int) -> str:
        return f"{self.unit} {self.points[rewind]}" if rewind >= 0 else "reinit"


def _value(v):
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v.item() if hasattr(v, "item") and np.ndim(v) == 0 else v


def open_results(path: str) -> h5py.File:
    """The file opened read-only, or AnalysisError saying in one line why it cannot be."""
    if not os.path.exists(path):
        raise AnalysisError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r", locking=False)
    except OSError:
        raise AnalysisError(f"{path} is not an lth-mpi results file (not an HDF5 file)") from None
    try:
        lth_results.check_format(f, path)
    except lth_results.NotAResultsFile as exc:
        f.close()
        raise AnalysisError(str(exc)) from None
    version = int(f.attrs.get("format_version", 0))
    if version > lth_results.VERSION:
        f.close()
        raise AnalysisError(f"{path} has format version {version}; this analysis reads "
                            f"version {lth_results.VERSION}")
    return f


def load(path: str, attempts: int = 20) -> Results:
    """The file's contents; a running job's file too (see lth_mpi.results.while_running:
    a read that lands inside one of the writer's writes is tried again)."""
    for attempt in range(attempts):
        try:
            return _load(path)
        except (OSError, KeyError, RuntimeError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.1)


def _load(path: str) -> Results:
    with open_results(path) as f:
        attrs = {k: _value(v) for k, v in f.attrs.items()}
        try:
            cfg = yaml.safe_load(attrs["config"])
        except (KeyError, yaml.YAMLError):
            raise AnalysisError(
                f"{path} is not an lth-mpi results file (no readable config)") from None
        sparsities = lth_results.sparsities(f, cfg)
        points, controls = list(cfg["rewind"]["points"]), list(cfg["controls"])
        done = lth_results.dense_complete(f)
        where = [lth_results.replicate_group(f, k) for k in lth_results.replicates_in(f)]
        realized = where[0]["masks"].attrs["sparsity_realized"][()] if done else None
        dense_runs = [lth_results.read_curves(w["dense"]) for w in where] if done else []
        cells = []
        for name, g in f["cells"].items() if "cells" in f else ():
            if not lth_results.cell_complete(f, g):
                continue          # a write cut short (see lth_mpi.results)
            row = {"name": name, **{k: _value(v) for k, v in g.attrs.items()}}
            row.update(lth_results.read_curves(g))
            cells.append(lth_results.upgrade_cell(row))
        timings = []
        for key in sorted(f.get("timings", {}), key=lambda k: int(k[3:])):
            d = f["timings"][key]
            timings.append(Timings(int(key[3:]), d[()].reshape(-1, 5),
                                   tuple(json.loads(d.attrs["phases"])), float(d.attrs["t0"])))
    grid = plan.grid_for(cfg, len(sparsities))
    runs = sorted(cells, key=lambda c: c["id"])
    dense = dense_runs[0] if len(dense_runs) == 1 else tickets.mean_curves(dense_runs) \
        if dense_runs else None
    cells = tickets.replicate_means(runs) if cfg.get("seeds") else runs
    return Results(path, cfg, attrs, sparsities, realized, points, cfg["rewind"]["unit"],
                   controls, dense, cells, grid, timings, runs, dense_runs)
