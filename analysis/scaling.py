"""`python -m analysis scaling`: a strong-scaling study from runs of one config at several P.

Each file must be a finished run (it holds the timings of exactly one job: a resumed file's
wall time is split over jobs) of the same config; only `output` and `parallel` may differ.
"""
from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from lth_mpi import config

from . import AnalysisError, amdahl, figures, timeline
from .load import Results, load


@dataclasses.dataclass
class Measured:
    """What one run at P ranks measured."""
    path: str
    p: int
    groups: int
    group_size: int
    wall: float
    serial: float
    cell: float          # mean seconds of one cell on one group
    utilization: float


def same_experiment(a: Results, b: Results) -> list[str]:
    """Config keys in which b differs from a, ignoring where the output goes and the layout."""
    fa, fb = (config.flat({k: v for k, v in r.config.items() if k not in ("output", "parallel")})
              for r in (a, b))
    return sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))


def measure(res: Results) -> Measured:
    if res.missing or not res.timings:
        raise AnalysisError(f"{res.path}: not a finished run ({len(res.cells)} of "
                            f"{len(res.expected)} cells, status {res.status}); scaling needs "
                            "finished runs")
    if len(res.timings) > 1:
        raise AnalysisError(f"{res.path} was resumed ({len(res.timings)} jobs): its wall time is "
                            "split over jobs; rerun it without interruption for scaling")
    t = res.timings[0]
    return Measured(res.path, res.world_size, res.n_groups, res.group_size,
                    timeline.wall_seconds(t.table),
                    timeline.serial_seconds(t.table, t.phases)["total"],
                    float(np.mean([c["seconds"] for c in res.cells])),
                    timeline.utilization(t.table, t.phases))


def study(paths: list[str], out_dir: str, efficiency: float = 1.0) -> dict:
    """Fit, figure and text; returns the numbers and writes scaling.png and scaling.txt."""
    runs = [load(p) for p in paths]
    for r in runs[1:]:
        diff = same_experiment(runs[0], r)
        if diff:
            raise AnalysisError(f"{r.path} is not the same experiment as {runs[0].path} "
                                f"(differs in {', '.join(diff[:5])})")
    rows = sorted((measure(r) for r in runs), key=lambda m: (m.p, m.path))
    p = np.array([m.p for m in rows], np.float64)
    t = np.array([m.wall for m in rows])
    try:
        f_fit, t1_fit = amdahl.fit(p, t)
    except ValueError as exc:
        raise AnalysisError(f"{exc} (got P = {sorted(set(p.astype(int).tolist()))})") from None
    ones = [m for m in rows if m.p == 1]
    if ones:
        t1 = float(np.mean([m.wall for m in ones]))
        base = f"T(1) = {t1:.1f} s measured"
    else:
        t1 = t1_fit
        base = f"T(1) = {t1:.1f} s from the fit (no run at P = 1)"
    low = rows[0]
    f_phase = amdahl.fraction_from_phases(low.serial, low.wall, low.p)
    fit_t = t1_fit * (f_fit + (1 - f_fit) / p)
    rms = float(np.sqrt(np.mean(((fit_t - t) / t) ** 2)))

    lines = [f"scaling: {len(rows)} runs of {runs[0].name}, {len(runs[0].expected)} cells each",
             f"{'P':>4} {'groups':>6} {'size':>4} {'wall s':>8} {'serial s':>8} "
             f"{'serial/wall':>11} {'f(phases)':>9} {'speed-up':>8} {'efficiency':>10} "
             f"{'util':>6} {'cell s':>7}  file"]
    for m in rows:
        s = t1 / m.wall
        lines.append(f"{m.p:>4} {m.groups:>6} {m.group_size:>4} {m.wall:>8.1f} {m.serial:>8.1f} "
                     f"{m.serial / m.wall:>11.3f} "
                     f"{amdahl.fraction_from_phases(m.serial, m.wall, m.p):>9.3f} {s:>8.2f} "
                     f"{s / m.p:>10.2f} {m.utilization:>6.2f} {m.cell:>7.2f}  "
                     f"{os.path.basename(m.path)}")
    lines += [f"speed-up and efficiency against {base}",
              f"Amdahl fit of T(P) = T(1) (f + (1 - f) / P) over P = "
              f"{', '.join(str(int(x)) for x in sorted(set(p)))}: f = {f_fit:.3f}, "
              f"T(1) = {t1_fit:.1f} s, rms relative residual {100 * rms:.1f}%",
              f"serial fraction from measured phases (setup, dense, broadcast, gather tail) of "
              f"the P = {low.p} run: f = {f_phase:.3f}"
              + ("" if low.p == 1 else f" (its serial {low.serial:.1f} s over serial + "
                                       f"{low.p} x its parallel part)"),
              f"  Amdahl limit: speed-up at most {1 / f_fit:.1f} (fit), "
              f"{1 / f_phase:.1f} (phases)" if 0 < f_fit < 1 and f_phase > 0 else
              "  the fit is outside 0 < f < 1: more ranks did not shorten this run (too "
              "little work per rank, or ranks sharing cores)" if f_fit >= 1 else None,
              ""]
    s = amdahl.SEEDS
    n = s["masks"] * s["rewinds"]
    lines.append(f"projection to the seeds' cluster: {s['groups']} groups x {s['group_size']} "
                 f"GPUs, M = {s['masks']} x N = {s['rewinds']} = {n} cells, "
                 f"{math.ceil(n / s['groups'])} cells per group")
    lines.append(f"{'from P':>6} {'cell s':>7} {'cell s on 4':>11} {'serial s':>8} "
                 f"{'projected s':>11} {'one group s':>11} {'speed-up':>8}")
    projections = []
    for m in rows:
        pr = amdahl.project(m.cell, m.serial, m.group_size, efficiency)
        projections.append(pr)
        lines.append(f"{m.p:>6} {m.cell:>7.2f} {pr.cell_seconds:>11.2f} {m.serial:>8.1f} "
                     f"{pr.wall:>11.1f} {pr.one_group:>11.1f} {pr.speedup:>8.1f}")
    lines.append("  projected = serial + cells per group x cell on 4; one group = serial + "
                 f"{n} x cell on 4 (every cell one after another)")
    lines += ["  assumption: " + a for a in
              ["a cluster cell takes the measured mean cell time x measured group size / "
               f"(4 x data-parallel efficiency {efficiency:g}, assumed: --group-efficiency); "
               "one cluster device is as fast as one measured rank",
               "the serial part (setup, dense phase, broadcast, gather) is as measured",
               "the 100 cells share the 20 groups evenly, without load imbalance",
               "a run at larger P measures a slower cell when ranks share cores: the smallest "
               "P gives the least contended cell time"]]
    text = "\n".join(line for line in lines if line is not None) + "\n"
    os.makedirs(out_dir, exist_ok=True)
    fig = figures.scaling(p, t, t1, f_fit, os.path.join(out_dir, "scaling.png"),
                          f"{runs[0].name}: strong scaling, {len(runs[0].expected)} cells",
                          f_phase)
    with open(os.path.join(out_dir, "scaling.txt"), "w") as f:
        f.write(text)
    return {"rows": rows, "f_fit": f_fit, "t1_fit": t1_fit, "t1": t1, "f_phases": f_phase,
            "projections": projections, "text": text, "figure": fig}
