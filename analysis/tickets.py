"""Accuracy numbers of a search: the dense reference, the (sparsity x rewind) grid, the winners.

Pure functions over the cell dicts of analysis.load (attributes plus curves), so they can be
tested on hand-made tables. `metric` is `final` (after the last epoch: cells and the dense net
end at the same iteration) or `best` (at the early-stop iteration).
"""
from __future__ import annotations

import numpy as np

METRICS = ("final", "best")


def accuracy(cell: dict, metric: str = "final") -> float:
    if metric not in METRICS:
        raise ValueError(f"metric: {metric!r} is not one of {', '.join(METRICS)}")
    return float(cell[f"{metric}_test_accuracy"])


def dense_reference(test_accuracy, metric: str = "final") -> float:
    """The dense accuracy a ticket is compared with, measured the same way as the cells."""
    acc = np.asarray(test_accuracy, np.float64)
    return float(acc[-1] if metric == "final" else acc.max())


def dense_band(test_accuracy, window: int | None = None) -> tuple[float, float, int]:
    """(mean, spread, epochs used) of the dense test accuracy over its last `window` epochs.

    The search trains the dense net once, so there is no spread over seeds; the band shows
    how much the dense accuracy still moves at the end of training instead: the mean and
    population standard deviation of its last epochs (default: the last half, at least two).
    """
    acc = np.asarray(test_accuracy, np.float64)
    if window is None:
        window = max(2, len(acc) // 2)
    window = max(1, min(window, len(acc)))
    tail = acc[-window:]
    return float(tail.mean()), float(tail.std()), window


def tickets(cells: list[dict]) -> list[dict]:
    """The retrained tickets, without the controls."""
    return [c for c in cells if c["control"] == "none"]


def grid(cells: list[dict], n_masks: int, n_rewinds: int, metric: str = "final") -> np.ndarray:
    """(mask, rewind) accuracy of the tickets; NaN where the cell has not finished."""
    out = np.full((n_masks, n_rewinds), np.nan)
    for c in tickets(cells):
        out[c["mask"], c["rewind"]] = accuracy(c, metric)
    return out


def best_cell(cells: list[dict], metric: str = "final") -> dict | None:
    """The most accurate ticket (the sparser one on a tie)."""
    t = tickets(cells)
    return max(t, key=lambda c: (accuracy(c, metric), c["sparsity"])) if t else None


def winning_tickets(cells: list[dict], reference: float, tolerance: float,
                    metric: str = "final") -> list[dict]:
    """For each rewind point, the sparsest ticket within `tolerance` of `reference`.

    Sorted sparsest first (then most accurate), so the first entry is the winning ticket of
    the search and the others show what rewinding elsewhere achieves. Controls never win: a
    ticket is a mask plus its rewound weights. Empty if no ticket comes within the tolerance.
    """
    best = {}
    for c in tickets(cells):
        if accuracy(c, metric) >= reference - tolerance:
            r = c["rewind"]
            if r not in best or (c["sparsity"], accuracy(c, metric)) > \
                    (best[r]["sparsity"], accuracy(best[r], metric)):
                best[r] = c
    return sorted(best.values(), key=lambda c: (-c["sparsity"], -accuracy(c, metric)))
