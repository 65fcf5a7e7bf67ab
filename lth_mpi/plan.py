"""The grid of retraining cells and which group runs which: pure, the same on every rank."""
from __future__ import annotations

import dataclasses

from . import config


@dataclasses.dataclass(frozen=True)
class Cell:
    id: int            # position in the full grid, stable across runs of the same config
    mask: int          # index into the sparsities (iterative pruning: level mask + 1)
    rewind: int        # index into rewind.points; -1 for random_reinit (no rewind)
    control: str       # "none" (the ticket), "random_reinit" or "random_mask"
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
        return f"m{self.mask:02d}_{r}_{self.control}{tail}"


REWOUND_CONTROLS = ("random_mask",)   # trained from every rewind point, like the tickets


def rewound_controls(cfg: dict) -> tuple[str, ...]:
    """Controls with one cell per (mask, rewind point): random_mask always; random_reinit
    under iterative pruning too, since each rewind point's ticket chain prunes masks of its
    own from level 2 on and the control takes that chain's mask (Frankle & Carbin's control:
    the ticket's mask, a fresh initialization)."""
    return REWOUND_CONTROLS + ("random_reinit",) * config.iterative(cfg)


def follows_ticket(cell: Cell, cfg: dict) -> bool:
    """Iterative pruning's controls train the level-l mask of their rewind point's ticket
    chain (random_mask: shuffled within each layer), so they run once that chain has pruned
    it (the second pass)."""
    return cell.control != "none" and config.iterative(cfg)


def passes(grid: list[Cell], cfg: dict) -> list[tuple[list[Cell], bool]]:
    """The grid in passes run one after the other, each as (cells, chained): the tickets
    first (chained under iterative pruning: a chain's levels run in order on one group),
    then cells that need masks the first pass makes (independent of each other)."""
    later = [c for c in grid if follows_ticket(c, cfg)]
    first = [c for c in grid if not follows_ticket(c, cfg)]
    return [(first, config.iterative(cfg))] + [(later, False)] * bool(later)


def cells(n_masks: int, n_rewinds: int, controls: list[str] = (),
          replicates: int | None = None, rewound: tuple[str, ...] = REWOUND_CONTROLS
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


def grid_for(cfg: dict, n_masks: int) -> list[Cell]:
    """The grid of a config, given its number of masks (or levels)."""
    seeds = cfg.get("seeds")
    return cells(n_masks, len(cfg["rewind"]["points"]), cfg["controls"],
                 None if seeds is None else len(seeds), rewound_controls(cfg))


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
    if by == "masks":
        return [[c for c in grid if c.mask % n_groups == g] for g in range(n_groups)]
    if by == "cells":
        return [grid[g::n_groups] for g in range(n_groups)]
    raise ValueError(f"parallel.assign: unknown assignment {by!r}")


def start_iteration(cell: Cell, cfg: dict, steps_per_epoch: int) -> int:
    """Where a cell's training starts. Under rewind.retrain: remaining, a ticket rewound to k
    trains the remaining T - k (iterations k+1..T, as open_lth does); under full, and for
    random_reinit (which starts from a fresh init), all T."""
    if cell.rewind < 0 or cell.control == "random_reinit" or not config.remaining(cfg):
        return 0
    point = cfg["rewind"]["points"][cell.rewind]
    return point * steps_per_epoch if cfg["rewind"]["unit"] == "epoch" else point


def assignment(cfg: dict, chained: bool | None = None) -> str:
    """How cells are dealt to groups: dynamic (a shared queue), or statically; chains
    (iterative pruning's first pass) are dealt whole either way."""
    by = cfg["parallel"]["assign"]
    chained = config.iterative(cfg) if chained is None else chained
    return "chains" if chained and by != "dynamic" else by


def length(cell: Cell, cfg: dict, steps_per_epoch: int) -> int:
    """Iterations a cell trains (a late rewind under `remaining` trains fewer)."""
    return cfg["train"]["epochs"] * steps_per_epoch - start_iteration(cell, cfg, steps_per_epoch)


def queue(grid: list[Cell], cfg: dict, steps_per_epoch: int,
          done: set[str] = frozenset(), chained: bool | None = None) -> list[list[Cell]]:
    """Dynamic scheduling's tasks, in the order groups take them: each unfinished cell (each
    chain's unfinished levels, under iterative pruning), longest first, so that short ones
    fill the gaps at the end (longest-processing-time first: at most 4/3 of the optimum,
    usually within a cell of it)."""
    chained = config.iterative(cfg) if chained is None else chained
    units = (chains(grid) if chained else [[c] for c in grid])
    units = [[c for c in u if c.name not in done] for u in units]
    return sorted((u for u in units if u),
                  key=lambda u: -sum(length(c, cfg, steps_per_epoch) for c in u))


def describe(cfg: dict, world_size: int, sparsities: list[float],
             done: set[str] = frozenset(), steps_per_epoch: int = 1) -> str:
    """The --dry-run text: cells, groups, and trainings per group (or the queue's order)."""
    sp, pts = sparsities, cfg["rewind"]["points"]
    grid = grid_for(cfg, len(sp))
    g = cfg["parallel"]["group_size"]
    n_groups, dynamic = world_size // g, cfg["parallel"]["assign"] == "dynamic"
    unit = cfg["rewind"]["unit"]
    p = cfg["prune"]
    if config.iterative(cfg):
        what = (f"{len(sp)} levels of iterative pruning (rate {p['rate']:g}"
                + "".join(f", {k} {v:g}" for k, v in p["layer_rates"].items())
                + f"; {len(chains(passes(grid, cfg)[0][0]))} ticket chains, one per rewind "
                "point" + ("; the controls train each chain's masks once it has pruned them"
                           if cfg["controls"] else "") + ")")
    elif config.gradual(cfg):
        what = (f"{len(sp)} final sparsities of gradual pruning (from {p['initial']:g} at "
                f"iteration {p['begin']} to the final one at {p['end']}, every "
                f"{p['frequency']} iterations, cubic)")
    else:
        what = f"{len(sp)} masks"
    seeds = cfg.get("seeds")
    lines = [f"plan: {what} x {len(pts)} rewind points ({unit}s {pts})"
             f" + controls {cfg['controls'] or 'none'}"
             + (f", x {len(seeds)} replicates (seeds {seeds})" if seeds else "")
             + f" = {len(grid)} cells",
             f"output: {cfg['output']}",
             f"ranks: {world_size} in {n_groups} groups of {g}; "
             + (f"dense phases of the {len(seeds)} seeds dealt round robin over the ranks"
                if seeds and cfg["parallel"]["dense"] == "rank0" else
                "dense phase on rank 0" if cfg["parallel"]["dense"] == "rank0"
                else f"dense phase data-parallel on all {world_size} ranks")
             + f", {cfg['train']['epochs']} epochs; "
             + ("a ticket rewound to k retrains the remaining epochs or iterations, controls all"
                if config.remaining(cfg)
                else f"every cell retrains {cfg['train']['epochs']} epochs")]

    def cell_line(c):
        r = (f"fresh init, mask of the {unit} {pts[c.rewind]} ticket"
             if c.control == "random_reinit" and c.rewind >= 0 else
             "fresh init" if c.rewind < 0 else f"rewind {unit} {pts[c.rewind]}")
        if unit == "epoch":   # counted in epochs: one step per epoch
            r += f", trains epochs {start_iteration(c, cfg, 1) + 1}-{cfg['train']['epochs']}"
        mark = " [done]" if c.name in done else ""
        level = f"level {c.mask + 1}, " if config.iterative(cfg) else ""
        return f"  {c.name}: {level}sparsity {sp[c.mask]:.4g}, {r}, control {c.control}{mark}"

    for n, (cells_, chained) in enumerate(passes(grid, cfg)):
        if n:
            lines.append("then, once the first pass has pruned their masks:")
        if dynamic:
            order = queue(cells_, cfg, steps_per_epoch, done, chained)
            left = sum(len(t) for t in order)
            lines.append(f"{n_groups} groups take {len(order)} tasks from a shared queue as "
                         f"they free up, longest first: {left} trainings"
                         + (f" ({len(cells_) - left} already done)" if left < len(cells_)
                            else ""))
            lines += [cell_line(c) for t in order for c in t]
            continue
        for i, mine in enumerate(assign(cells_, n_groups, assignment(cfg, chained))):
            todo = [c for c in mine if c.name not in done]
            lines.append(f"group {i} (ranks {i * g}-{i * g + g - 1}): {len(todo)} trainings"
                         + (f" ({len(mine) - len(todo)} already done)" if len(todo) < len(mine)
                            else ""))
            lines += [cell_line(c) for c in mine]
    return "\n".join(lines)
