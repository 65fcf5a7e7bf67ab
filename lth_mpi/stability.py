"""Linear mode connectivity (Frankle et al. 2020), the math of it: pure numpy.

A stability pair is two trainings of one subnetwork from the same rewound weights with
different data orders. Its instability is the largest error on the straight line between the
two trained weight vectors minus the mean of the two ends' errors: near 0 when both ended in
one linearly connected basin ("stable"), large when a barrier lies between them.
"""
from __future__ import annotations

import numpy as np

# the columns of a pair's stored path, one row per point on the line
PATH_COLUMNS = ("alpha", "test_accuracy", "test_loss", "val_accuracy", "val_loss")
LADDER = (0.0, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08)   # rewind.points: auto's candidates
THRESHOLD = 0.02    # instability below this (2 points of error, as in the paper) is stable


def pack(ends, path: np.ndarray) -> np.ndarray:
    """A finished pair as one float64 row (how it travels to the writer): both copies'
    final (test, val) accuracies, then the path's rows (PATH_COLUMNS)."""
    return np.concatenate([np.asarray(ends, np.float64), np.asarray(path, np.float64).ravel()])


def unpack(pair: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ends, path) of a packed pair; an empty one (a copy diverged): NaN ends, no rows."""
    ends = pair[:4] if pair.size else np.full(4, np.nan)
    return ends, pair[4:].reshape(-1, len(PATH_COLUMNS))


def alphas(n: int) -> np.ndarray:
    """n evenly spaced points from one end (0) to the other (1), ends included."""
    return np.linspace(0.0, 1.0, n)


def interpolate(a: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
    """The point alpha of the line from a to b: exactly a at 0 and exactly b at 1 (so the
    path's ends are the trainings' own weights), and exactly a everywhere if a == b."""
    if alpha == 0.0:
        return a
    if alpha == 1.0:
        return b
    return a + np.float32(alpha) * (b - a)


def instability(accuracies) -> float:
    """Max error on the path minus the mean of its two ends' errors (accuracies in path
    order, ends first and last); NaN if the path holds no number (an empty split)."""
    acc = np.asarray(accuracies, np.float64)
    if acc.size < 2 or not np.isfinite(acc).all():
        return float("nan")
    errors = 1.0 - acc
    return float(errors.max() - (errors[0] + errors[-1]) / 2)


def ladder(fractions, last_iteration: int) -> list[int]:
    """The candidate rewind iterations: each fraction of the training's iterations, rounded,
    duplicates (short trainings) dropped, in order."""
    points = (min(int(round(f * last_iteration)), last_iteration - 1) for f in fractions)
    return sorted(set(points))


def choose(instabilities, threshold: float) -> tuple[int, bool]:
    """(index of the earliest point whose instability is below threshold, whether one is);
    with none stable, the last point (the latest rewind tried)."""
    for i, value in enumerate(instabilities):
        if np.isfinite(value) and value < threshold:
            return i, True
    return len(instabilities) - 1, False


def evidence(pairs: list[dict], points: list[int], threshold: float, replicates: int) -> dict:
    """rewind.points: auto's choice from the dense net's finished pairs (the file's rows,
    with `rewind` and `instability`, `instability_val`): each point's instability is the
    worst over the seeds (NaN if a pair diverged), measured on validation when the data has
    it (test numbers then stay out of the choice), else on test."""
    on_val = any(np.isfinite(p["instability_val"]) for p in pairs)
    key = "instability_val" if on_val else "instability"
    worst = []
    for r in range(len(points)):
        values = [float(p[key]) for p in pairs if p["rewind"] == r]
        bad = len(values) < replicates or not all(np.isfinite(values))
        worst.append(float("nan") if bad else max(values))
    index, stable = choose(worst, threshold)
    return {"ladder": list(points), "threshold": threshold, "chosen_on": "val" if on_val
            else "test", "instability": worst, "chosen_index": index,
            "chosen_point": points[index], "stable": stable}
