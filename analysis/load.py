"""One results file as the analysis sees it: lth_mpi.results.read, plus the grid, the
replicates' means and what the report asks of them.

Works on finished, interrupted and still-running files: only the cells present under /cells
are used, and `missing` names the cells of the grid that are not there yet.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

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
    ladder: list = dataclasses.field(default_factory=list)   # the dense net's stability pairs
    choice: dict = dataclasses.field(default_factory=dict)   # rewind.points: auto's choice

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


def load(path: str) -> Results:
    """The file's contents (lth_mpi.results.read, the one reader), also while its job is
    writing it; AnalysisError saying in one line why a file cannot be read."""
    try:
        got = lth_results.read(path)
    except lth_results.NotAResultsFile as exc:
        raise AnalysisError(str(exc)) from None
    cfg = got.config
    runs, dense_runs = got.cells, got.dense_runs
    dense = dense_runs[0] if len(dense_runs) == 1 else tickets.mean_curves(dense_runs) \
        if dense_runs else None
    cells = tickets.replicate_means(runs) if cfg.get("seeds") else runs
    return Results(path, cfg, got.attrs, got.sparsities, got.realized,
                   got.points, cfg["rewind"]["unit"], list(cfg["controls"]),
                   dense, cells, plan.grid_for(cfg, len(got.sparsities)),
                   [Timings(*t) for t in got.timings], runs, dense_runs, got.ladder, got.choice)
