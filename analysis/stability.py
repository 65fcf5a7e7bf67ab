"""Instability against the rewind point, and which tickets are stable and which match
(Frankle et al. 2020: a sparse network matches the dense one iff it is stable): numbers only.

A pair's instability is stored by the search (lth_mpi.stability); this module gathers the
file's pairs, averages seeds, and sets each pair beside its ticket's accuracy.
"""
from __future__ import annotations

import numpy as np

from lth_mpi import stability

from . import tickets


def threshold(res) -> float:
    """The file's stability.threshold (files before it: the default)."""
    return float((res.config.get("stability") or {}).get("threshold", stability.THRESHOLD))


def key(res) -> str:
    """The instability the classification uses: on validation when the file has it (as the
    selection of tickets and auto's choice), else on test."""
    return "instability_val" if res.selection == "val" else "instability"


def pairs(res) -> list[dict]:
    """Every finished pair: the dense net's (rewind.points: auto), then the grid's."""
    return list(res.ladder) + [c for c in res.runs if c["control"] == "stability"]


def _mean(rows: list[dict], name: str) -> float:
    values = np.array([r[name] for r in rows], np.float64)
    return float(values.mean()) if len(values) and np.isfinite(values).all() else float("nan")


def curves(res, name: str = "instability") -> dict:
    """{"dense" or a mask index: [(rewind point, instability averaged over the seeds)]},
    sorted by point; a diverged pair makes its point NaN."""
    by: dict = {}
    for p in pairs(res):
        which = "dense" if p["mask"] < 0 else int(p["mask"])
        by.setdefault(which, {}).setdefault(int(p["rewind_point"]), []).append(p)
    return {which: [(point, _mean(rows, name)) for point, rows in sorted(points.items())]
            for which, points in by.items()}


def table(res, metric: str, tolerance: float) -> list[dict]:
    """One row per (mask, rewind point) of the grid's pairs: the instability (averaged over
    seeds; test and the classification's split), stable (below the threshold), the ticket's
    test accuracy and whether it matches (its selection-split accuracy at most `tolerance`
    below the dense net's, as winning tickets are chosen). A ticket not finished: None."""
    split, limit, on = res.selection, threshold(res), key(res)
    reference = tickets.dense_reference(res.dense, metric, split)
    grouped: dict = {}
    for p in pairs(res):
        if p["mask"] >= 0:
            grouped.setdefault((int(p["mask"]), int(p["rewind"])), []).append(p)
    out = []
    for (mask, rewind), rows in sorted(grouped.items()):
        ticket = next((c for c in tickets.tickets(res.cells)
                       if (c["mask"], c["rewind"]) == (mask, rewind)), None)
        value = _mean(rows, on)
        matching = None if ticket is None else \
            tickets.accuracy(ticket, metric, split) >= reference - tolerance
        out.append({"mask": mask, "rewind": rewind, "sparsity": rows[0]["sparsity"],
                    "point": int(rows[0]["rewind_point"]), "seeds": len(rows),
                    "instability": _mean(rows, "instability"), "classified_on": value,
                    "stable": bool(np.isfinite(value) and value < limit),
                    "accuracy": None if ticket is None else tickets.accuracy(ticket, metric),
                    "matching": matching})
    return out


def agreement(rows: list[dict]) -> tuple[int, int]:
    """(rows where stable and matching agree, rows with both known)."""
    known = [r for r in rows if r["matching"] is not None and np.isfinite(r["classified_on"])]
    return sum(r["stable"] == r["matching"] for r in known), len(known)
