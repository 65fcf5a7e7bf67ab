"""Iterative magnitude pruning (Frankle & Carbin 2019): which mask each level trains with.

Pure numpy, no TensorFlow or MPI. A chain is one rewind point and control (plan.chains);
level 1 prunes `rate` of the dense net's trained weights, level l prunes `rate` of what level
l - 1 kept, by the magnitude of level l - 1's trained weights, and every level retrains from
the chain's rewind point. Controls do not prune: at level l they train the ticket chain's
level-l mask from a fresh initialization (random_reinit) or shuffled within each layer
(random_mask), as open_lth's control branches do (search.cell_inputs).
"""
from __future__ import annotations

import numpy as np

from . import pruning


class Levels:
    """The pruning schedule of one search. Kernels are lists in prunable order, named by
    `names` (weight paths); `rates` gives some of them a rate of their own."""

    def __init__(self, cfg: dict, names: list[str], shapes: list[tuple],
                 rates: dict[str, float]):
        self.prune = cfg["prune"]
        self.names, self.shapes, self.rates = list(names), [tuple(s) for s in shapes], rates

    def _step(self, scores: list[np.ndarray], masks: list[np.ndarray]) -> list[np.ndarray]:
        out = pruning.prune_step(dict(zip(self.names, scores)), dict(zip(self.names, masks)),
                                 self.prune["rate"], self.prune["scope"], self.rates)
        return [out[n] for n in self.names]

    def sparsities(self) -> list[float]:
        """Level l's exact sparsity, the same in every chain."""
        sizes = {n: int(np.prod(s)) for n, s in zip(self.names, self.shapes)}
        return pruning.level_sparsities(sizes, self.prune["levels"], self.prune["rate"],
                                        self.prune["scope"], self.rates)

    def dense(self) -> list[np.ndarray]:
        return [np.ones(s, bool) for s in self.shapes]

    def first(self, dense_kernels: list[np.ndarray]) -> list[np.ndarray]:
        """Level 1's mask, from the trained dense kernels."""
        return self.next(dense_kernels, self.dense())

    def next(self, trained: list[np.ndarray], masks: list[np.ndarray]) -> list[np.ndarray]:
        """The next level's mask, pruned from this level's `masks` by the magnitude of this
        level's `trained` kernels."""
        return self._step([np.abs(t) for t in trained], masks)
