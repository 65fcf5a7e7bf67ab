"""The grid of retraining cells and which group runs which: pure, the same on every rank."""
from __future__ import annotations

import dataclasses

from . import config


@dataclasses.dataclass(frozen=True)
class Cell:
    id: int            # position in the full grid, stable across runs of the same config
    mask: int          # index into prune.sparsities
    rewind: int        # index into rewind.points; -1 for random_reinit (no rewind)
    control: str       # "none" (the ticket), "random_reinit" or "random_mask"

    @property
    def name(self) -> str:
        """HDF5 group name, e.g. m03_r1_none or m03_init_random_reinit."""
        r = f"r{self.rewind}" if self.rewind >= 0 else "init"
        return f"m{self.mask:02d}_{r}_{self.control}"


REWOUND_CONTROLS = ("random_mask",)   # trained from every rewind point, like the tickets


def cells(n_masks: int, n_rewinds: int, controls: list[str] = ()) -> list[Cell]:
    """Every (mask, rewind) ticket, then each control in the order given: random_reinit one
    cell per mask (a fresh init), random_mask one per (mask, rewind) (a random mask of the
    ticket's per-layer counts on the same rewound weights)."""
    out = [(m, r, "none") for m in range(n_masks) for r in range(n_rewinds)]
    for c in controls:
        if c in REWOUND_CONTROLS:
            out += [(m, r, c) for m in range(n_masks) for r in range(n_rewinds)]
        else:
            out += [(m, -1, c) for m in range(n_masks)]
    return [Cell(i, *c) for i, c in enumerate(out)]


def assign(grid: list[Cell], n_groups: int, by: str = "masks") -> list[list[Cell]]:
    """Cells per group.

    masks: group g gets masks g, g+G, ... with all their rewinds and controls (the design
    card: one group, all rewinds of a mask). cells: round robin over cells, which balances
    better when the masks do not divide evenly among the groups.
    """
    if by == "masks":
        return [[c for c in grid if c.mask % n_groups == g] for g in range(n_groups)]
    if by == "cells":
        return [grid[g::n_groups] for g in range(n_groups)]
    raise ValueError(f"parallel.assign: unknown assignment {by!r}")


def start_iteration(cell: Cell, cfg: dict, steps_per_epoch: int) -> int:
    """Where a cell's training starts. Under rewind.retrain: remaining, a ticket rewound to k
    trains the remaining T - k (iterations k+1..T, as open_lth does); under full, and for
    controls (which start from a fresh init), all T."""
    if cell.rewind < 0 or not config.remaining(cfg):
        return 0
    point = cfg["rewind"]["points"][cell.rewind]
    return point * steps_per_epoch if cfg["rewind"]["unit"] == "epoch" else point


def describe(cfg: dict, world_size: int, done: set[str] = frozenset()) -> str:
    """The --dry-run text: cells, groups, and trainings per group."""
    sp, pts = cfg["prune"]["sparsities"], cfg["rewind"]["points"]
    grid = cells(len(sp), len(pts), cfg["controls"])
    g = cfg["parallel"]["group_size"]
    groups = assign(grid, world_size // g, cfg["parallel"]["assign"])
    unit = cfg["rewind"]["unit"]
    lines = [f"plan: {len(sp)} masks x {len(pts)} rewind points ({unit}s {pts})"
             f" + controls {cfg['controls'] or 'none'} = {len(grid)} cells",
             f"output: {cfg['output']}",
             f"ranks: {world_size} in {len(groups)} groups of {g}; dense phase "
             + ("on rank 0" if cfg["parallel"]["dense"] == "rank0"
                else f"data-parallel on all {world_size} ranks")
             + f", {cfg['train']['epochs']} epochs; "
             + ("a ticket rewound to k retrains the remaining epochs or iterations, controls all"
                if config.remaining(cfg)
                else f"every cell retrains {cfg['train']['epochs']} epochs")]
    for i, mine in enumerate(groups):
        todo = [c for c in mine if c.name not in done]
        lines.append(f"group {i} (ranks {i * g}-{i * g + g - 1}): {len(todo)} trainings"
                     + (f" ({len(mine) - len(todo)} already done)" if len(todo) < len(mine) else ""))
        for c in mine:
            r = f"rewind {unit} {pts[c.rewind]}" if c.rewind >= 0 else "fresh init"
            if unit == "epoch":   # counted in epochs: one step per epoch
                first = start_iteration(c, cfg, 1) + 1
                r += f", trains epochs {first}-{cfg['train']['epochs']}"
            mark = " [done]" if c.name in done else ""
            lines.append(f"  {c.name}: sparsity {sp[c.mask]:.4g}, {r}, control {c.control}{mark}")
    return "\n".join(lines)
