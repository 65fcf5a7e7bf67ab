"""Gradual magnitude pruning (Zhu & Gupta 2017): the sparsity rises during one training.

Pure: which steps prune, and to what sparsity. Between `begin` and `end` (iterations counted
from the start of the dense run, like rewind points), every `frequency` iterations and at
`end` itself, the weights of smallest magnitude are pruned up to

    s(t) = final + (initial - final) * (1 - (t - begin) / (end - begin)) ** 3

so pruning is fast early, when there are many redundant weights, and slow near the end; at
`end` the sparsity is `final` exactly (round(final * n) weights per pool).
"""
from __future__ import annotations


class Schedule:
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
