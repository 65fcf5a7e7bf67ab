"""One-shot magnitude pruning: every mask pruned at once from the trained dense network."""
from __future__ import annotations

import numpy as np

from .. import pruning
from .base import Mode


def check_sparsities(prune: dict) -> None:
    """One-shot and gradual pruning take a list of distinct sparsities in (0, 1)."""
    sp = prune["sparsities"]
    if sp is None:
        raise ValueError("prune.sparsities: required key is missing")
    if not sp:
        raise ValueError("prune.sparsities: needs at least one sparsity")
    for s in sp:
        if not fraction(s):
            raise ValueError(f"prune.sparsities: {s!r} is outside (0, 1)")
    if len(set(sp)) != len(sp):
        raise ValueError(f"prune.sparsities: duplicate values in {sp}")


def fraction(value) -> bool:
    """A number strictly between 0 and 1 (sparsities and pruning rates)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 < value < 1


class OneShot(Mode):
    name = "oneshot"

    @staticmethod
    def check(prune: dict, controls: list) -> None:
        check_sparsities(prune)

    def dense_masks(self, trained: dict[str, np.ndarray]):
        packed, realized = [], []
        for s in self.prune["sparsities"]:
            masks = pruning.magnitude_masks(trained, s, self.scope)
            realized.append(pruning.realized_sparsity(masks))
            packed.append(pruning.pack_masks(list(masks.values())))
        return np.stack(packed), np.array(realized)
