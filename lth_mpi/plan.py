"""The grid of retraining cells and which group runs which: pure, the same on every rank.

Everything here reads the resolved settings (config.Settings) and asks the pruning mode.
"""
from __future__ import annotations

import dataclasses

from . import modes


@dataclasses.dataclass(frozen=True)
class Cell:
    id: int            # position in the full grid, stable across runs of the same config
    mask: int          # index into the sparsities (iterative pruning: level mask + 1); -1:
    #                    the dense net (rewind.points: auto's stability pairs)
    rewind: int        # index into rewind.points; -1 for random_reinit (no rewind)
    control: str       # "none" (the ticket), "random_reinit", "random_mask" or "stability"
    replicate: int = -1   # index into `seeds` (replicates), -1 for a search with one seed

    @property
    def chain(self) -> tuple[int, str, int]:
        """Iterative pruning: the cells of one (rewind, control, replicate) are one chain."""
        return self.rewind, self.control, self.replicate

    @property
    def name(self) -> str:
        """HDF5 group name, e.g. m03_r1_none or m03_init_random_reinit; replicate k of
        `seeds` adds _s{k} (m03_r1_none_s2)."""
        r = f"r{self.rewind}" if self.rewind >= 0 else "init"
        tail = f"_s{self.replicate}" if self.replicate >= 0 else ""
        m = f"m{self.mask:02d}" if self.mask >= 0 else "dense"
        return f"{m}_{r}_{self.control}{tail}"

    @property
    def pair(self) -> bool:
        """A stability pair: two trainings, then their linear path (lth_mpi.stability)."""
        return self.control == "stability"

    @property
    def dense(self) -> bool:
        """A pair of the dense net (rewind.points: auto), stored under /stability."""
        return self.mask < 0


def passes(grid: list[Cell], s) -> list[tuple[list[Cell], bool]]:
    """The grid in passes run one after the other, each as (cells, chained): the tickets
    first (chained under iterative pruning: a chain's levels run in order on one group),
    then cells that train masks the first pass makes (independent of each other)."""
    later = [c for c in grid if s.mode.follows_ticket(c)]
    first = [c for c in grid if not s.mode.follows_ticket(c)]
    return [(first, s.mode.chained)] + [(later, False)] * bool(later)


def cells(n_masks: int, n_rewinds: int, controls: list[str] = (),
          replicates: int | None = None, rewound: tuple[str, ...] = ("random_mask",)
          ) -> list[Cell]:
    """Every (mask, rewind) ticket, then each control in the order given: random_reinit one
    cell per mask (a fresh init), random_mask one per (mask, rewind) (a random mask of the
    ticket's per-layer counts on the same rewound weights); a control in `rewound` one per
    (mask, rewind). With `replicates` (the number of `seeds`), all of that once per
    replicate, replicate after replicate."""
    out = [(m, r, "none") for m in range(n_masks) for r in range(n_rewinds)]
    for c in controls:
        if c in rewound:
            out += [(m, r, c) for m in range(n_masks) for r in range(n_rewinds)]
        else:
            out += [(m, -1, c) for m in range(n_masks)]
    if replicates is None:
        return [Cell(i, *c) for i, c in enumerate(out)]
    return [Cell(k * len(out) + i, *c, k) for k in range(replicates) for i, c in enumerate(out)]


def grid(s) -> list[Cell]:
    """The grid of a search's settings."""
    return grid_for(s.cfg, s.mode.n_masks())


def grid_for(cfg: dict, n_masks: int) -> list[Cell]:
    """The grid a validated config describes, given its number of masks (or levels); also
    what readers of a results file rebuild from the config it stores."""
    seeds = cfg.get("seeds")
    points = cfg["rewind"]["points"]
    return cells(n_masks, 1 if points == "auto" else len(points), cfg["controls"],
                 None if seeds is None else len(seeds), modes.of(cfg).rewound_controls)


def ladder(s, first_id: int) -> list[Cell]:
    """rewind.points: auto: a stability pair of the dense net at each candidate point (the
    bound settings' points), per replicate; ids follow the grid's (`first_id`)."""
    out = [(r, k) for k in s.replicates for r in range(len(s.points))]
    return [Cell(first_id + i, -1, r, "stability", k) for i, (r, k) in enumerate(out)]


def chains(grid: list[Cell]) -> list[list[Cell]]:
    """Iterative pruning: one chain per rewind point and control, its levels in order (each
    level's mask is pruned from the level before, so a chain runs in sequence)."""
    out: dict[tuple, list[Cell]] = {}
    for c in sorted(grid, key=lambda c: c.mask):
        out.setdefault(c.chain, []).append(c)
    return list(out.values())


def assign(grid: list[Cell], n_groups: int, by: str = "masks") -> list[list[Cell]]:
    """Cells per group, in the order the group trains them.

    masks: group g gets masks g, g+G, ... with all their rewinds and controls (the design
    card: one group, all rewinds of a mask). cells: round robin over cells, which balances
    better when the masks do not divide evenly among the groups. chains (iterative pruning):
    round robin over whole chains, each trained level by level.
    """
    if by == "chains":
        return [[c for chain in chains(grid)[g::n_groups] for c in chain]
                for g in range(n_groups)]
    if by == "masks" and grid and grid[0].dense:   # the dense net's pairs: one "mask"
        by = "cells"
    if by == "masks":
        return [[c for c in grid if c.mask % n_groups == g] for g in range(n_groups)]
    if by == "cells":
        return [grid[g::n_groups] for g in range(n_groups)]
    raise ValueError(f"parallel.assign: unknown assignment {by!r}")


def start_iteration(cell: Cell, s, steps_per_epoch: int) -> int:
    """Where a cell's training starts. Under rewind.retrain: remaining, a ticket rewound to k
    trains the remaining T - k (iterations k+1..T, as open_lth does); under full, and for
    random_reinit (which starts from a fresh init), all T."""
    if cell.rewind < 0 or cell.control == "random_reinit" or not s.remaining:
        return 0
    point = s.points[cell.rewind]
    return point * steps_per_epoch if s.unit == "epoch" else point


def assignment(s, chained: bool | None = None) -> str:
    """How cells are dealt to groups: dynamic (a shared queue), or statically; chains
    (iterative pruning's first pass) are dealt whole either way."""
    chained = s.mode.chained if chained is None else chained
    return "chains" if chained and s.assign != "dynamic" else s.assign


def length(cell: Cell, s, steps_per_epoch: int) -> int:
    """Iterations a cell trains (a late rewind under `remaining` trains fewer; a stability
    pair trains twice)."""
    return (1 + cell.pair) * (s.epochs * steps_per_epoch - start_iteration(cell, s,
                                                                           steps_per_epoch))


def queue(grid: list[Cell], s, steps_per_epoch: int,
          done: set[str] = frozenset(), chained: bool | None = None) -> list[list[Cell]]:
    """Dynamic scheduling's tasks, in the order groups take them: each unfinished cell (each
    chain's unfinished levels, under iterative pruning), longest first, so that short ones
    fill the gaps at the end (longest-processing-time first: at most 4/3 of the optimum,
    usually within a cell of it)."""
    chained = s.mode.chained if chained is None else chained
    units = (chains(grid) if chained else [[c] for c in grid])
    units = [[c for c in u if c.name not in done] for u in units]
    return sorted((u for u in units if u),
                  key=lambda u: -sum(length(c, s, steps_per_epoch) for c in u))


def trainings(cells: list[Cell]) -> int:
    """The trainings of `cells`: one each, two for a stability pair."""
    return sum(1 + c.pair for c in cells)


def describe(s, world_size: int, sparsities: list[float],
             done: set[str] = frozenset(), steps_per_epoch: int = 1) -> str:
    """The --dry-run text: cells, groups, and trainings per group (or the queue's order)."""
    sp, pts, unit = sparsities, s.points, s.unit
    cells_ = grid(s)
    g, n_groups, dynamic = s.group_size, world_size // s.group_size, s.assign == "dynamic"
    what = s.mode.describe(len(sp), len(chains(passes(cells_, s)[0][0])), list(s.controls))
    seeds = list(s.seeds) if s.replicated else None
    rewinds = (f"1 rewind point (auto: the earliest stable of {unit}s {list(pts)})"
               if s.auto else f"{len(pts)} rewind points ({unit}s {list(pts)})")
    lines = [f"plan: {what} x {rewinds}"
             f" + controls {list(s.controls) or 'none'}"
             + (f", x {len(seeds)} replicates (seeds {seeds})" if seeds else "")
             + f" = {len(cells_)} cells",
             f"output: {s.output}",
             f"ranks: {world_size} in {n_groups} groups of {g}; "
             + (f"dense phases of the {len(seeds)} seeds dealt round robin over the ranks"
                if seeds and not s.dense_parallel else
                "dense phase on rank 0" if not s.dense_parallel
                else f"dense phase data-parallel on all {world_size} ranks")
             + f", {s.epochs} epochs; "
             + ("a ticket rewound to k retrains the remaining epochs or iterations, controls all"
                if s.remaining else f"every cell retrains {s.epochs} epochs")]

    def cell_line(c):
        r = (f"fresh init, mask of the {unit} {pts[c.rewind]} ticket"
             if c.control == "random_reinit" and c.rewind >= 0 else
             "fresh init" if c.rewind < 0 else
             f"rewind {unit} (auto's choice)" if s.auto and not c.dense else
             f"rewind {unit} {pts[c.rewind]}")
        if c.pair:
            r += f", two trainings and a path of {s.stability.path_points} points"
        if unit == "epoch":   # counted in epochs: one step per epoch
            r += f", trains epochs {start_iteration(c, s, 1) + 1}-{s.epochs}"
        mark = " [done]" if c.name in done else ""
        if c.dense:
            return f"  {c.name}: the dense net, {r}{mark}"
        level = f"level {s.mode.level(c)}, " if s.mode.level(c) else ""
        return f"  {c.name}: {level}sparsity {sp[c.mask]:.4g}, {r}, control {c.control}{mark}"

    if s.auto:
        pairs = ladder(s, len(cells_))
        lines.append(f"first, rewind.points: auto: {len(pairs)} stability pairs of the dense "
                     f"net, over the groups like cells; the earliest {unit} whose instability "
                     f"is below {s.stability.threshold:g} (in every seed) is the grid's rewind "
                     "point")
        lines += [cell_line(c) for t in queue(pairs, s, steps_per_epoch, done, False)
                  for c in t]
        lines.append("then the grid:")
    for n, (cells_n, chained) in enumerate(passes(cells_, s)):
        if n:
            lines.append("then, once the first pass has pruned their masks:")
        if dynamic:
            order = queue(cells_n, s, steps_per_epoch, done, chained)
            left = trainings([c for t in order for c in t])
            lines.append(f"{n_groups} groups take {len(order)} tasks from a shared queue as "
                         f"they free up, longest first: {left} trainings"
                         + (f" ({trainings(cells_n) - left} already done)"
                            if left < trainings(cells_n) else ""))
            lines += [cell_line(c) for t in order for c in t]
            continue
        for i, mine in enumerate(assign(cells_n, n_groups, assignment(s, chained))):
            todo = trainings([c for c in mine if c.name not in done])
            lines.append(f"group {i} (ranks {i * g}-{i * g + g - 1}): {todo} trainings"
                         + (f" ({trainings(mine) - todo} already done)"
                            if todo < trainings(mine) else ""))
            lines += [cell_line(c) for c in mine]
    return "\n".join(lines)
