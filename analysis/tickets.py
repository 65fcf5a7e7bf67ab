"""Accuracy numbers of a search: the dense reference, the (sparsity x rewind) grid, the winners.

Pure functions over the cell dicts of analysis.load (attributes plus curves), so they can be
tested on hand-made tables. `metric` is `final` (after the last epoch: cells and the dense net
end at the same iteration) or `best` (at the early-stop iteration, chosen on validation).
`split` says which accuracy is compared: selection (best ticket, winning tickets) is made on
`val` when the search held out a validation split, and the accuracy reported is `test`, at the
same point; files without a validation split select on test, which biases what is reported.
"""
from __future__ import annotations

import numpy as np

from lth_mpi.results import CURVES, select

METRICS = ("final", "best")
SPLITS = ("test", "val")


def accuracy(cell: dict, metric: str = "final", split: str = "test") -> float:
    if metric not in METRICS:
        raise ValueError(f"metric: {metric!r} is not one of {', '.join(METRICS)}")
    if split not in SPLITS:
        raise ValueError(f"split: {split!r} is not one of {', '.join(SPLITS)}")
    return float(cell[f"{metric}_{split}_accuracy"])


def selection_split(dense: dict | None, cells: list[dict]) -> str:
    """`val` when the dense run and every cell that trained to the end have validation
    curves, else `test`. Diverged cells are left out: their NaN curves say nothing of the split
    (one of them would otherwise move every selection onto the test set)."""
    have = [dense["val_accuracy"]] if dense is not None else []
    have += [c["val_accuracy"] for c in trained(cells)]
    return "val" if have and all(np.all(np.isfinite(v)) for v in have) else "test"


def dense_reference(dense: dict, metric: str = "final", split: str = "test") -> float:
    """The dense accuracy on `split` a ticket is compared with, at the point the cells use:
    the end of training, or the early stop chosen as for the cells (results.select)."""
    index = -1 if metric == "final" else select(dense)[0]
    return float(np.asarray(dense[f"{split}_accuracy"], np.float64)[index])


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


ACCURACIES = ("final_test_accuracy", "final_val_accuracy", "best_test_accuracy",
              "best_val_accuracy")


def mean_curves(runs: list[dict]) -> dict:
    """Element-wise mean of replicates' curves (the same epochs in each)."""
    return {k: np.mean([np.asarray(r[k], np.float64) for r in runs], axis=0) for k in runs[0]}


def replicate_means(cells: list[dict]) -> list[dict]:
    """`seeds` replicates: one cell per (mask, rewind, control) holding the mean over its
    trained replicates of every accuracy and curve, `<accuracy>_sd` (population sd) and
    `replicates` (how many); diverged only if every replicate diverged. Named as the
    replicates without their _s<k>."""
    groups: dict[tuple, list] = {}
    for c in sorted(cells, key=lambda c: c["id"]):
        groups.setdefault((c["mask"], c["rewind"], c["control"]), []).append(c)
    out = []
    for members in groups.values():
        ok = trained(members) or members
        mean = dict(ok[0])
        mean["name"] = members[0]["name"].rsplit("_s", 1)[0]
        mean["replicates"], mean["replicate"] = len(ok), -1
        mean["id"] = min(c["id"] for c in members)
        for k in ACCURACIES:
            values = np.array([c[k] for c in ok], np.float64)
            mean[k], mean[k + "_sd"] = float(values.mean()), float(values.std())
        lengths = {len(c["epoch"]) for c in ok}
        if len(lengths) == 1:
            mean.update(mean_curves([{k: c[k] for k in CURVES} for c in ok]))
        out.append(mean)
    return sorted(out, key=lambda c: c["id"])


def dense_spread(runs: list[dict], split: str = "test") -> tuple[float, float]:
    """(mean, population sd) of the dense networks' final accuracy over `seeds`."""
    values = np.array([np.asarray(r[f"{split}_accuracy"], np.float64)[-1] for r in runs])
    return float(values.mean()), float(values.std())


def trained(cells: list[dict]) -> list[dict]:
    """The cells that trained to the end: diverged ones have no accuracy to compare."""
    return [c for c in cells if c.get("status", "trained") != "diverged"]


def diverged(cells: list[dict]) -> list[dict]:
    return [c for c in cells if c.get("status", "trained") == "diverged"]


def tickets(cells: list[dict]) -> list[dict]:
    """The retrained tickets, without the controls and without diverged cells."""
    return [c for c in trained(cells) if c["control"] == "none"]


def grid(cells: list[dict], n_masks: int, n_rewinds: int, metric: str = "final",
         split: str = "test") -> np.ndarray:
    """(mask, rewind) accuracy of the tickets; NaN where the cell has not finished."""
    out = np.full((n_masks, n_rewinds), np.nan)
    for c in tickets(cells):
        out[c["mask"], c["rewind"]] = accuracy(c, metric, split)
    return out


def best_cell(cells: list[dict], metric: str = "final", split: str = "test") -> dict | None:
    """The most accurate ticket on `split` (the sparser one on a tie)."""
    t = tickets(cells)
    return max(t, key=lambda c: (accuracy(c, metric, split), c["sparsity"])) if t else None


def winning_tickets(cells: list[dict], reference: float, tolerance: float,
                    metric: str = "final", split: str = "test") -> list[dict]:
    """For each rewind point, the sparsest ticket within `tolerance` of `reference`, both
    measured on `split` (the dense reference from dense_reference on the same split).

    Sorted sparsest first (then most accurate), so the first entry is the winning ticket of
    the search and the others show what rewinding elsewhere achieves. Controls never win: a
    ticket is a mask plus its rewound weights. Empty if no ticket comes within the tolerance.
    """
    best = {}
    for c in tickets(cells):
        if accuracy(c, metric, split) >= reference - tolerance:
            r = c["rewind"]
            if r not in best or (c["sparsity"], accuracy(c, metric, split)) > \
                    (best[r]["sparsity"], accuracy(best[r], metric, split)):
                best[r] = c
    return sorted(best.values(), key=lambda c: (-c["sparsity"], -accuracy(c, metric, split)))
