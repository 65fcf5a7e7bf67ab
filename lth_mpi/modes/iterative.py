"""Iterative magnitude pruning (Frankle & Carbin 2019): chains of levels.

A chain is one rewind point (and replicate); level 1 prunes `rate` of the dense net's
trained weights, level l prunes `rate` of what level l - 1 kept, by the magnitude of level
l - 1's trained weights, and every level retrains from the chain's rewind point. Controls do
not prune: at level l they train the ticket chain's level-l mask from a fresh
initialization (random_reinit) or shuffled within each layer (random_mask), as open_lth's
control branches do, once the chains have pruned it (a second pass).
"""
from __future__ import annotations

import numpy as np

from .. import pruning
from .base import Kernels, Mode
from .oneshot import fraction

RATE = 0.2    # Frankle & Carbin's per-level rate for fully connected layers


class Levels:
    """The pruning schedule over a model's prunable kernels (lists in prunable order, named
    by `names`, weight paths); `rates` gives some of them a rate of their own. Pure numpy."""

    def __init__(self, prune: dict, names: list[str], shapes: list[tuple],
                 rates: dict[str, float]):
        self.prune = prune
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


class Iterative(Mode):
    name = "iterative"
    chained = True
    has_levels = True
    rewound_controls = ("random_mask", "random_reinit", "stability")   # each follows its
    #                                                                       rewind's chain

    @staticmethod
    def check(prune: dict, controls: list) -> None:
        if prune["sparsities"] is not None:
            raise ValueError("prune.sparsities: not used with prune.mode: iterative "
                             "(prune.levels and prune.rate decide the sparsities)")
        if prune["levels"] is None:
            raise ValueError("prune.levels: required with prune.mode: iterative")
        if prune["levels"] < 1:
            raise ValueError(f"prune.levels: must be >= 1, got {prune['levels']}")
        if prune["rate"] is None:
            prune["rate"] = RATE
        rates = {"prune.rate": prune["rate"]}
        rates.update({f"prune.layer_rates.{k}": v for k, v in prune["layer_rates"].items()})
        for key, r in rates.items():
            if not fraction(r):
                raise ValueError(f"{key}: {r!r} is outside (0, 1)")

    def check_model(self, last_iteration: int) -> None:
        pruned = list(dict.fromkeys(self.kernels.layers))
        for name in self.prune["layer_rates"]:
            if name not in pruned:
                raise ValueError(f"prune.layer_rates: {name!r} is not a pruned layer "
                                 f"(pruned: {', '.join(pruned)})")

    def bind(self, kernels: Kernels) -> "Iterative":
        own = self.prune["layer_rates"]
        rates = {n: own[layer] for n, layer in zip(kernels.names, kernels.layers)
                 if layer in own}
        self.levels = Levels(self.prune, list(kernels.names), list(kernels.shapes), rates)
        return super().bind(kernels)

    def n_masks(self) -> int:
        return self.prune["levels"]

    def targets(self) -> list[float]:
        return self.levels.sparsities()

    def stored_targets(self, masks_attrs) -> list[float]:
        if masks_attrs is None:       # the dense phase has not written them yet
            return [float("nan")] * self.prune["levels"]
        return [float(s) for s in masks_attrs["sparsity_target"]]

    def mask_rows(self) -> int:
        return 1         # level 1's; each chain prunes the later ones itself

    def dense_masks(self, trained: dict[str, np.ndarray]):
        first = self.levels.first(list(trained.values()))
        return pruning.pack_masks(first)[None], np.array(self.levels.sparsities())

    def follows_ticket(self, cell) -> bool:
        return cell.control != "none"

    def cell_mask(self, cell, dense_rows, chain_mask):
        return chain_mask

    def after_cell(self, trainer, masks, trained, history, chained, last):
        """The level's mask, and (tickets) the next level's, pruned from its trained kernels;
        none after the last level or a divergence."""
        following = None
        if chained and not history["diverged"] and not last:
            following = pruning.pack_masks(self.levels.next(trained, masks))
        return pruning.pack_masks(masks), following

    def level(self, cell) -> int:
        return cell.mask + 1

    def summary(self, n_masks: int) -> str:
        return (f"{n_masks} levels of iterative pruning at rate {self.prune['rate']:g} "
                f"({self.scope})")

    def describe(self, n_masks: int, n_chains: int, controls: list) -> str:
        p = self.prune
        return (f"{n_masks} levels of iterative pruning (rate {p['rate']:g}"
                + "".join(f", {k} {v:g}" for k, v in p["layer_rates"].items())
                + f"; {n_chains} ticket chains, one per rewind point"
                + ("; the controls train each chain's masks once it has pruned them"
                   if controls else "") + ")")

    def resumable(self, cells) -> str | None:
        if any("_init_" in n or g.attrs.get("control") != "none" and "mask_next" in g
               for n, g in cells.items()):
            return ("was written when iterative pruning's controls pruned masks of their own "
                    "(not the ticket's); run it again into a new file")
        return None
