"""Where the time of a job went, from its timings table (rows rank, phase, cell, t_start, t_end).

Phases are classed as in docs/results.md: `cell` and `dense` are useful work, `wait`, `drain`
and `gather` are idle ranks, `setup` and `broadcast` are overhead. Time a rank spent outside
any recorded phase (e.g. Horovod start-up between broadcast and the first cell) is `untimed`.
"""
from __future__ import annotations

import numpy as np

BUSY = ("dense", "cell")
IDLE = ("wait", "drain", "gather")
OVERHEAD = ("setup", "broadcast")
CLASSES = ("busy", "idle", "overhead", "untimed")


def _names(table: np.ndarray, phases) -> np.ndarray:
    return np.array([phases[int(p)] for p in table[:, 1]], dtype=object)


def span(table: np.ndarray) -> tuple[float, float]:
    """(start, end) of the job: the first phase start and last phase end over all ranks."""
    return float(table[:, 3].min()), float(table[:, 4].max())


def wall_seconds(table: np.ndarray) -> float:
    start, end = span(table)
    return end - start


def ranks(table: np.ndarray) -> list[int]:
    return sorted(set(table[:, 0].astype(int).tolist()))


def phase_seconds(table: np.ndarray, phases) -> dict[int, dict[str, float]]:
    """Seconds per rank per phase name, plus `untimed`: the rest of that rank's wall time."""
    wall = wall_seconds(table)
    names = _names(table, phases)
    out = {}
    for r in ranks(table):
        mine = table[:, 0] == r
        row = {p: float((table[mine & (names == p), 4] - table[mine & (names == p), 3]).sum())
               for p in phases}
        row["untimed"] = wall - sum(row.values())
        out[r] = row
    return out


def breakdown(table: np.ndarray, phases) -> dict[str, float]:
    """Rank-seconds by class (busy, idle, overhead, untimed); they add up to ranks x wall."""
    out = dict.fromkeys(CLASSES, 0.0)
    for row in phase_seconds(table, phases).values():
        for p, s in row.items():
            cls = ("busy" if p in BUSY else "idle" if p in IDLE else
                   "overhead" if p in OVERHEAD else "untimed")
            out[cls] += s
    return out


def utilization(table: np.ndarray, phases) -> float:
    """Busy rank-seconds over the rank-seconds the job held (ranks x wall time)."""
    total = len(ranks(table)) * wall_seconds(table)
    return breakdown(table, phases)["busy"] / total if total > 0 else float("nan")


def grid_utilization(table: np.ndarray, phases) -> float:
    """The grid alone: cell rank-seconds over ranks x (first cell start .. last cell end).
    What scheduling decides: a rank idle at the end while another finishes its last cell
    counts against it; the dense phase before does not."""
    cells = table[_names(table, phases) == "cell"]
    if not len(cells):
        return float("nan")
    window = cells[:, 4].max() - cells[:, 3].min()
    total = len(ranks(table)) * window
    return float((cells[:, 4] - cells[:, 3]).sum() / total) if total > 0 else float("nan")


def serial_seconds(table: np.ndarray, phases, writer: int = 0) -> dict[str, float]:
    """The part of the wall time no parallelism can shorten (Amdahl's serial part).

    `head`: job start to the first cell on any rank (setup, the dense phase, broadcast and
    Horovod start-up), split into the phases of the writer rank that ran the dense phase;
    `tail`: the last cell's end to the job's end (results to rank 0, the final gather).
    Idle ranks waiting for other groups' cells are load imbalance, not serial time.
    """
    start, end = span(table)
    names = _names(table, phases)
    cells = names == "cell"
    first = float(table[cells, 3].min()) if cells.any() else end
    last = float(table[cells, 4].max()) if cells.any() else end
    head, tail = first - start, end - last
    out = {}
    mine = (table[:, 0] == writer) & (table[:, 4] <= first)
    for p in phases:
        sel = mine & (names == p)
        if sel.any():
            out[p] = float((table[sel, 4] - table[sel, 3]).sum())
    out["untimed"] = head - sum(out.values())
    out.update(head=head, tail=tail, total=head + tail)
    return out


def serial_fraction(table: np.ndarray, phases) -> float:
    """Serial seconds over the wall time of this job."""
    wall = wall_seconds(table)
    return serial_seconds(table, phases)["total"] / wall if wall > 0 else float("nan")
