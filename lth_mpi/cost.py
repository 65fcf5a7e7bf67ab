"""The bill before the run: what a search will cost here, from a few measured steps (pure).

`lth-mpi run --dry-run` times a few real steps and one evaluation of the configured model on
the machine it runs on (the dense phase's trainer on one rank, the cells' in every group at
once, as the grid will run them) and this module turns them into the number of trainings,
the expected wall time at the given P and G, rank-hours, the serial fraction and Amdahl's
efficiency. The model, in seconds:

- a training of L iterations over E epochs takes L x step + E x (an epoch's evaluation and
  other fixed cost); the step is timed as the difference of two step counts, so that the
  fixed cost is not counted as steps;
- the dense phase: train.epochs epochs of one rank (every rank, data-parallel); replicates'
  dense phases run side by side, ceil(R / P) after one another;
- the grid: each pass's cells (a chain's levels one after another) on the P / G groups, in
  the order the queue hands them out (longest first) or as dealt statically;
- stability pairs: two trainings, then their path's points (rewind.points: auto runs the
  dense net's pairs as a pass before the grid);
- the serial part: set-up as measured, plus the dense phase(s);
- each trainer's first steps and evaluation cost once what tracing and compiling take.
"""
from __future__ import annotations

import dataclasses
import heapq
import math

from . import plan


@dataclasses.dataclass
class Measured:
    """What the dry run timed here (seconds)."""
    setup: float          # from the process's start to the end of set-up
    dense_step: float     # one step of the dense phase's trainer
    dense_eval: float     # what an epoch costs it besides steps: evaluating test and
    #                       validation, the epoch's shuffle
    cell_step: float      # one step of a cell's trainer in a group of G (the slowest group)
    cell_eval: float
    steps: int            # steps timed after the warm-up
    dense_first: float = 0.0   # what the first steps and evaluation cost beyond later ones
    cell_first: float = 0.0    #   (tracing, compiling): once per trainer


@dataclasses.dataclass
class Estimate:
    ranks: int
    group_size: int
    trainings: int        # dense phases and cells
    setup: float
    dense: float
    grid: float
    serial_fraction: float   # of one group's time: (set-up + dense) / (set-up + dense + grid at 1 group)
    measured: Measured

    @property
    def wall(self) -> float:
        return self.setup + self.dense + self.grid

    @property
    def rank_hours(self) -> float:
        return self.ranks * self.wall / 3600

    @property
    def groups(self) -> int:
        return self.ranks // self.group_size

    def efficiency(self, groups: int | None = None) -> float:
        """Amdahl's efficiency at `groups` groups (default this layout's): 1 / (f n + 1 - f)."""
        n, f = groups or self.groups, self.serial_fraction
        return 1.0 / (f * n + 1 - f)

    @property
    def ranks_at_90(self) -> int:
        """The largest P (groups of G) whose Amdahl efficiency is still 90% or more."""
        f = self.serial_fraction
        n = math.inf if f <= 0 else math.floor((1 / 0.9 - 1 + f) / f + 1e-9)
        return self.group_size * max(1, n) if n != math.inf else -1


def cell_seconds(cell, s, steps_per_epoch: int, m: Measured) -> float:
    """A cell: its iterations, and an evaluation at the end of every epoch it trains in. A
    stability pair trains twice, then evaluates its path's points, each after BatchNorm's
    re-estimation (counted as that many steps: a forward pass is cheaper, an upper bound)."""
    first = plan.start_iteration(cell, s, steps_per_epoch)
    seconds = (plan.length(cell, s, steps_per_epoch) * m.cell_step
               + (1 + cell.pair) * (s.epochs - first // steps_per_epoch) * m.cell_eval)
    if cell.pair:
        st = s.stability
        seconds += st.path_points * (m.cell_eval + st.batchnorm_batches * m.cell_step)
    return seconds


def makespan(tasks: list[float], groups: int) -> float:
    """When the last of `tasks` (in the order given) ends, each taken by the group that
    frees up first."""
    free = [0.0] * groups
    for t in tasks:
        heapq.heappush(free, heapq.heappop(free) + t)
    return max(free)


def grid_seconds(grid, s, steps_per_epoch: int, m: Measured, groups: int) -> float:
    """The grid's passes one after the other, each on `groups` groups."""
    total = 0.0
    for cells, chained in plan.passes(grid, s):
        if plan.assignment(s, chained) == "dynamic":
            tasks = plan.queue(cells, s, steps_per_epoch, chained=chained)
            total += makespan([sum(cell_seconds(c, s, steps_per_epoch, m) for c in t)
                               for t in tasks], groups)
        else:
            total += max(sum(cell_seconds(c, s, steps_per_epoch, m) for c in mine)
                         for mine in plan.assign(cells, groups, plan.assignment(s, chained)))
    return total


def estimate(s, grid, ranks: int, m: Measured) -> Estimate:
    """The bill of a search with settings `s` (bound) and `grid` on `ranks` ranks; under
    rewind.points: auto, the dense net's stability pairs first (plan.ladder), and the grid
    at the earliest candidate (the longest it can be)."""
    spe, groups = s.steps_per_epoch, ranks // s.group_size
    one = s.epochs * (spe * m.dense_step + m.dense_eval)
    side_by_side = 1 if s.dense_parallel else min(len(s.replicates), ranks)
    dense = one * math.ceil(len(s.replicates) / side_by_side) + m.dense_first
    serial = m.setup + dense
    ladder = plan.ladder(s, len(grid)) if s.auto else []

    def seconds(n):
        return grid_seconds(grid, s, spe, m, n) + (
            makespan([cell_seconds(t[0], s, spe, m)       # longest first, as the queue
                      for t in plan.queue(ladder, s, spe, chained=False)], n) if ladder
            else 0.0)
    alone = seconds(1)
    trainings = len(s.replicates) + plan.trainings(grid + ladder)
    return Estimate(ranks, s.group_size, trainings, m.setup, dense,
                    m.cell_first + seconds(groups), serial / (serial + m.cell_first + alone), m)


def describe(e: Estimate) -> str:
    """The bill, as --dry-run prints it."""
    m = e.measured
    at90 = ("any P" if e.ranks_at_90 < 0 else f"up to P = {e.ranks_at_90}")
    return "\n".join([
        f"bill: measured here: a dense step {1e3 * m.dense_step:.1f} ms, a cell step in a "
        f"group of {e.group_size} {1e3 * m.cell_step:.1f} ms (the slowest group), an "
        f"epoch's evaluation and fixed cost {m.dense_eval:.2f} s / {m.cell_eval:.2f} s (up "
        f"to {m.steps} steps timed after a warm-up that took {m.dense_first:.1f} s / "
        f"{m.cell_first:.1f} s more), set-up {m.setup:.1f} s",
        f"bill: {e.trainings} trainings; at P = {e.ranks} ({e.groups} groups of "
        f"{e.group_size}) about {e.wall:.0f} s of wall time ({e.setup:.0f} s set-up, "
        f"{e.dense:.0f} s dense, {e.grid:.0f} s grid), {e.rank_hours:.2f} rank-hours",
        f"bill: serial fraction {e.serial_fraction:.3f}; Amdahl efficiency at this P "
        f"{100 * e.efficiency():.0f}%; 90% or more {at90} (groups of {e.group_size})"])
