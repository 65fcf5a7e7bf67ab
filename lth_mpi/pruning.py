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
    if scope not in SCOPES:
        raise ValueError(f"unknown pruning scope {scope!r}; valid: {', '.join(SCOPES)}")
    names = list(weights)
    if scope == "layerwise":
        return {name: ~_smallest(np.abs(weights[name]).ravel(),
                                 n_to_prune(weights[name].size, sparsity)
                                 ).reshape(weights[name].shape)
                for name in names}
    flat = np.concatenate([np.abs(weights[n]).ravel() for n in names])
    keep = ~_smallest(flat, n_to_prune(flat.size, sparsity))
    masks, start = {}, 0
    for name in names:
        size = weights[name].size
        masks[name] = keep[start:start + size].reshape(weights[name].shape)
        start += size
    return masks


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
