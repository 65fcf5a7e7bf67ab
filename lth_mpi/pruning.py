"""Magnitude pruning as pure numpy functions: no TensorFlow, no MPI.

Weights come in as an ordered dict {name: array}; masks go out the same way, as boolean
arrays (True = kept). Counts are exact to the weight: a sparsity s over n prunable weights
removes exactly round(s * n) of them, ties broken by position so every rank and every run
computes the same mask.
"""
from __future__ import annotations

import numpy as np

SCOPES = ("global", "layerwise")


def n_to_prune(n: int, sparsity: float) -> int:
    """How many of n weights a sparsity removes (round half to even, as numpy)."""
    return int(np.rint(sparsity * n))


def _smallest(values: np.ndarray, k: int) -> np.ndarray:
    """Boolean array marking exactly the k smallest values, earlier index first on ties."""
    out = np.zeros(values.size, dtype=bool)
    if k > 0:
        order = np.argsort(values, kind="stable")
        out[order[:k]] = True
    return out


def magnitude_masks(weights: dict[str, np.ndarray], sparsity: float,
                    scope: str = "global") -> dict[str, np.ndarray]:
    """Masks that remove the smallest-magnitude weights.

    global: one threshold over all given layers (Frankle & Carbin's larger nets);
    layerwise: every layer loses the same fraction (their LeNet and Conv-2/4/6).
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    masks = {}
    for pool, _ in _pools(list(weights), {}, sparsity, scope):
        flat = np.concatenate([np.abs(weights[n]).ravel() for n in pool])
        keep, start = ~_smallest(flat, n_to_prune(flat.size, sparsity)), 0
        for name in pool:
            size = weights[name].size
            masks[name] = keep[start:start + size].reshape(weights[name].shape)
            start += size
    return masks


def _pools(names: list[str], rates: dict[str, float | None], rate: float,
           scope: str) -> list[tuple[list[str], float]]:
    """The groups that one pruning step treats as one: each tensor with its own rate alone;
    the rest one pool (global) or each alone (layerwise), at `rate`."""
    if scope not in SCOPES:
        raise ValueError(f"unknown pruning scope {scope!r}; valid: {', '.join(SCOPES)}")
    own = [([n], rates[n]) for n in names if rates.get(n) is not None]
    rest = [n for n in names if rates.get(n) is None]
    if scope == "global":
        return own + ([(rest, rate)] if rest else [])
    return own + [([n], rate) for n in rest]


def _prune(scores: dict[str, np.ndarray], masks: dict[str, np.ndarray], pools,
           count) -> dict[str, np.ndarray]:
    """In each pool (names, rate), prune the count(size, kept, rate) smallest-scored weights
    in all; pruned weights sort first whatever their score, so they stay pruned."""
    out = {}
    for names, r in pools:
        kept = np.concatenate([masks[n].ravel() for n in names]).astype(bool)
        value = np.where(kept, np.concatenate([np.abs(scores[n]).ravel() for n in names]),
                         -np.inf)
        k = max(int(kept.size - kept.sum()), count(kept.size, int(kept.sum()), r))
        keep, start = ~_smallest(value, k), 0
        for n in names:
            out[n] = keep[start:start + scores[n].size].reshape(scores[n].shape)
            start += scores[n].size
    return {n: out[n] for n in scores}


def prune_step(scores: dict[str, np.ndarray], masks: dict[str, np.ndarray], rate: float,
               scope: str = "global", rates: dict[str, float] | None = None
               ) -> dict[str, np.ndarray]:
    """One level of iterative pruning: in each pool, remove the fraction `rate` of the weights
    still kept, those with the smallest score; pruned weights stay pruned (the new mask is
    inside the old). Scores are |trained weights| for magnitude pruning, random numbers for
    random pruning. `rates` gives some tensors their own rate (Frankle & Carbin prune the
    output layer at half the rate), each then pruned on its own."""
    return _prune(scores, masks, _pools(list(scores), rates or {}, rate, scope),
                  lambda size, kept, r: size - kept + n_to_prune(kept, r))


def prune_to(scores: dict[str, np.ndarray], masks: dict[str, np.ndarray], sparsity: float,
             scope: str = "global") -> dict[str, np.ndarray]:
    """Gradual pruning's step: prune until `sparsity` of each pool is gone (exactly
    round(s * n)), the smallest scores first among what is still kept."""
    return _prune(scores, masks, _pools(list(scores), {}, sparsity, scope),
                  lambda size, kept, s: n_to_prune(size, s))


def exact_sparsity(sizes: dict[str, int], sparsity: float, scope: str = "global") -> float:
    """The sparsity magnitude_masks and prune_to realize: round(s * n) per pool."""
    pools = _pools(list(sizes), {}, sparsity, scope)
    return sum(n_to_prune(sum(sizes[n] for n in names), sparsity)
               for names, _ in pools) / sum(sizes.values())


def level_sparsities(sizes: dict[str, int], levels: int, rate: float, scope: str = "global",
                     rates: dict[str, float] | None = None) -> list[float]:
    """The exact sparsity after each of `levels` prune_steps from a dense net: the counts
    depend on sizes and rates only, so they are known before any training."""
    pools = [(sum(sizes[n] for n in names), r)
             for names, r in _pools(list(sizes), rates or {}, rate, scope)]
    kept = [n for n, _ in pools]
    total, out = sum(kept), []
    for _ in range(levels):
        kept = [k - n_to_prune(k, r) for k, (_, r) in zip(kept, pools)]
        out.append(1.0 - sum(kept) / total)
    return out


def random_like(masks: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """Random masks keeping exactly as many weights per layer as `masks` (Frankle & Carbin's
    random pruning control): the layer-wise structure of a ticket without its choice."""
    rng = np.random.default_rng(seed)
    out = []
    for m in masks:
        keep = np.zeros(m.size, bool)
        keep[rng.permutation(m.size)[:int(m.sum())]] = True
        out.append(keep.reshape(m.shape))
    return out


def realized_sparsity(masks: dict[str, np.ndarray]) -> float:
    """Fraction of the masked weights that are pruned."""
    total = sum(m.size for m in masks.values())
    return sum(int(m.size - m.sum()) for m in masks.values()) / total


def pack_masks(masks: list[np.ndarray]) -> np.ndarray:
    """All of one mask's layers as bits in one uint8 buffer (8x smaller to send and store)."""
    return np.packbits(np.concatenate([m.ravel() for m in masks]).astype(bool))


def unpack_masks(packed: np.ndarray, shapes: list[tuple]) -> list[np.ndarray]:
    """Inverse of pack_masks, given the layer shapes."""
    sizes = [int(np.prod(s)) for s in shapes]
    bits = np.unpackbits(packed, count=sum(sizes)).astype(bool)
    out, start = [], 0
    for shape, size in zip(shapes, sizes):
        out.append(bits[start:start + size].reshape(shape))
        start += size
    return out
