"""Gradual magnitude pruning (Zhu & Gupta 2017): each cell prunes while it trains.

Between `begin` and `end` (iterations counted from the start of the dense run, like rewind
points), every `frequency` iterations and at `end` itself, the weights of smallest
magnitude are pruned up to

    s(t) = final + (initial - final) * (1 - (t - begin) / (end - begin)) ** 3

so pruning is fast early, when there are many redundant weights, and slow near the end; at
`end` the sparsity is `final` exactly (round(final * n) weights per pool).
"""
from __future__ import annotations

import numpy as np

from .. import pruning
from .base import Mode
from .oneshot import check_sparsities

DEFAULTS = {"initial": 0.0, "begin": 0, "frequency": 100}


class Schedule:
    """Which steps prune, and to what sparsity (pure)."""

    def __init__(self, prune_cfg: dict, final: float):
        self.initial, self.final = prune_cfg["initial"], final
        self.begin, self.end, self.frequency = (prune_cfg["begin"], prune_cfg["end"],
                                                prune_cfg["frequency"])

    def sparsity(self, step: int) -> float:
        if step <= self.begin:
            return self.initial
        if step >= self.end:
            return self.final
        left = 1.0 - (step - self.begin) / (self.end - self.begin)
        return self.final + (self.initial - self.final) * left ** 3

    def due(self, step: int) -> bool:
        """Does the mask change after `step` iterations?"""
        return self.begin <= step <= self.end and (
            (step - self.begin) % self.frequency == 0 or step == self.end)

    def at_start(self, start: int) -> float | None:
        """The sparsity to prune to before a cell's first step at iteration `start` (a
        rewound cell starts inside the schedule), or None for none."""
        if start < self.begin or (start == self.begin and self.initial == 0):
            return None
        return self.sparsity(start)


class Gradual(Mode):
    name = "gradual"

    @staticmethod
    def check(prune: dict, controls: list) -> None:
        check_sparsities(prune)
        for key, value in DEFAULTS.items():
            if prune[key] is None:
                prune[key] = value
        if prune["end"] is None:
            raise ValueError("prune.end: required with prune.mode: gradual (the iteration at "
                             "which the final sparsity is reached)")
        if prune["begin"] < 0:
            raise ValueError(f"prune.begin: must be >= 0, got {prune['begin']}")
        if prune["end"] <= prune["begin"]:
            raise ValueError(f"prune.end: must be after prune.begin ({prune['begin']}), "
                             f"got {prune['end']}")
        if prune["frequency"] < 1:
            raise ValueError(f"prune.frequency: must be >= 1, got {prune['frequency']}")
        if not 0 <= prune["initial"] < min(prune["sparsities"]):
            raise ValueError(f"prune.initial: must be in [0, the smallest final sparsity "
                             f"{min(prune['sparsities'])}), got {prune['initial']}")
        if "stability" in controls:
            raise ValueError("controls: stability is not defined for prune.mode: gradual (the "
                             "two copies would prune to different masks); rewind.points: "
                             "auto, the dense net's stability, is")
        if "random_mask" in controls:
            raise ValueError("controls: random_mask is not defined for prune.mode: gradual "
                             "(the mask comes from training); random_reinit is")

    def check_model(self, last_iteration: int) -> None:
        if self.prune["end"] > last_iteration:
            raise ValueError(f"prune.end: iteration {self.prune['end']} is beyond the "
                             f"{last_iteration} iterations of training, so the final sparsity "
                             "would never be reached")

    def mask_rows(self) -> int:
        return 0         # no masks yet: each cell prunes while it trains

    def dense_masks(self, trained: dict[str, np.ndarray]):
        return (np.zeros((0, self.kernels.packed_len), np.uint8),
                np.array([pruning.exact_sparsity(self.kernels.sizes, s, self.scope)
                          for s in self.prune["sparsities"]]))

    def cell_mask(self, cell, dense_rows, chain_mask):
        return None      # dense at the start; pruned on schedule while training

    def pruner(self, final: float, trainer, start: int):
        """Prunes now if the cell starts inside the schedule, and returns the on_step
        callback that prunes at every scheduled iteration, by the magnitude of the kernels
        at that moment (the leader's, so a group agrees on the mask)."""
        schedule = Schedule(self.prune, final)

        def prune(sparsity):
            names = [str(i) for i in range(len(trainer.masked))]
            new = pruning.prune_to(dict(zip(names, trainer.leader_kernels())),
                                   dict(zip(names, trainer.current_masks())), sparsity,
                                   self.scope)
            trainer.set_masks([new[n] for n in names])

        if schedule.at_start(start) is not None:
            prune(schedule.at_start(start))

        def on_step(step):
            if schedule.due(step):
                prune(schedule.sparsity(step))
        return on_step

    def after_cell(self, trainer, masks, trained, history, chained, last):
        return pruning.pack_masks(trainer.current_masks()), None   # the mask it ended with

    def summary(self, n_masks: int) -> str:
        return (f"{n_masks} final sparsities of gradual pruning ({self.scope}, iterations "
                f"{self.prune['begin']} to {self.prune['end']})")

    def describe(self, n_masks: int, n_chains: int, controls: list) -> str:
        p = self.prune
        return (f"{n_masks} final sparsities of gradual pruning (from {p['initial']:g} at "
                f"iteration {p['begin']} to the final one at {p['end']}, every "
                f"{p['frequency']} iterations, cubic)")
