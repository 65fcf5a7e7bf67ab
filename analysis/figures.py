"""PNG figures; the numbers come from tickets, timeline and amdahl, the drawing only here.

Every function takes loaded results (analysis.load.Results) or plain numbers and a path,
writes one small PNG with the Agg backend (no display needed) and returns the path.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

from . import amdahl, tickets, timeline  # noqa: E402

DPI = 100
IDLE_STYLE = {"facecolor": "#f4f4f4", "edgecolor": "#bbbbbb", "hatch": "///"}
PHASE_COLOR = {"setup": "#9e9e9e", "dense": "#2b2b2b", "broadcast": "#e6550d"}


def _rewind_color(r: int):
    return plt.get_cmap("tab10")(r % 10)


def _save(fig, path: str) -> str:
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _remaining(cell: dict) -> float:
    """Percent of the prunable weights kept."""
    return 100.0 * (1.0 - cell["sparsity_realized"])


def _log_remaining_axis(ax, values):
    """Log x axis of the percent remaining, dense on the left as in Frankle & Carbin."""
    ax.set_xscale("log")
    ticks = sorted(set(round(v, 3) for v in values))
    ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    lo, hi = min(ticks), max(ticks)
    ax.set_xlim(hi * 1.25, lo / 1.25)
    ax.set_xlabel("weights remaining (%, log scale)")


def _by_curve(res, metric_key: str):
    """{label: (rewind or -1, control, sorted [(remaining, value)])} over the finished cells
    (diverged ones left out: they have no accuracy)."""
    curves = {}
    for c in tickets.trained(res.cells):
        label = (f"rewind to {res.point_label(c['rewind'])}" if c["control"] == "none"
                 else c["control"].replace("_", " ") + (
                     f", rewind to {res.point_label(c['rewind'])}" if c["rewind"] >= 0 else ""))
        curves.setdefault(label, (c["rewind"], c["control"], []))[2].append(
            (_remaining(c), c[metric_key]))
    return {k: (r, ctl, sorted(v)) for k, (r, ctl, v) in
            sorted(curves.items(), key=lambda kv: (kv[1][1] != "none", kv[1][0]))}


def accuracy_vs_remaining(res, path: str, metric: str = "final", window: int | None = None) -> str:
    """The Lottery Ticket paper's figure: accuracy against the fraction of weights left."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    xs = []
    for label, (r, control, pts) in _by_curve(res, f"{metric}_test_accuracy").items():
        x, y = np.array(pts).T
        xs += list(x)
        if control == "none":
            ax.plot(x, 100 * y, "o-", color=_rewind_color(r), label=label, ms=4)
        else:
            ax.plot(x, 100 * y, "s--", color=_rewind_color(r) if r >= 0 else "#555555",
                    label=f"{label} (control)", ms=4)
    if res.dense is not None:
        mean, spread, n = tickets.dense_band(res.dense["test_accuracy"], window)
        ref = tickets.dense_reference(res.dense, metric)
        ax.axhspan(100 * (mean - spread), 100 * (mean + spread), color="#bbbbbb", alpha=0.5,
                   label=f"dense: mean ± sd of last {n} epochs")
        ax.axhline(100 * ref, color="black", lw=1, label=f"dense ({metric}) {100 * ref:.2f}%")
    if xs:
        _log_remaining_axis(ax, xs)
    ax.set_ylabel(f"{metric} test accuracy (%)")
    ax.set_title(f"{res.name}: {len(res.cells)} of {len(res.expected)} cells", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return _save(fig, path)


def heatmap(res, path: str, metric: str = "final") -> str:
    """Accuracy over (sparsity x rewind point), the best ticket outlined in red."""
    acc = tickets.grid(res.cells, len(res.sparsities), len(res.points), metric)
    n_m, n_r = acc.shape
    fig, ax = plt.subplots(figsize=(max(4.2, 1.8 + 1.1 * n_r), max(2.8, 1.2 + 0.45 * n_m)))
    cmap = plt.get_cmap("viridis").with_extremes(bad="#e0e0e0")   # unfinished cells grey
    finite = acc[np.isfinite(acc)]
    vmin, vmax = (100 * finite.min(), 100 * finite.max()) if finite.size else (0, 100)
    im = ax.imshow(100 * acc, cmap=cmap, vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1,
                   aspect="auto")
    for m in range(n_m):
        for r in range(n_r):
            v = acc[m, r]
            text = "–" if np.isnan(v) else f"{100 * v:.1f}"
            light = not np.isnan(v) and (100 * v - vmin) < 0.6 * (vmax - vmin)
            ax.text(r, m, text, ha="center", va="center", fontsize=8,
                    color="white" if light else "black")
    best = tickets.best_cell(res.cells, metric, res.selection)
    if best is not None:
        ax.add_patch(Rectangle((best["rewind"] - 0.5, best["mask"] - 0.5), 1, 1, fill=False,
                               edgecolor="red", lw=2.5))
    ax.set_xticks(range(n_r), [res.point_label(r) for r in range(n_r)], fontsize=8)
    ax.set_yticks(range(n_m), [f"{100 * (1 - s):g}%" for s in res.sparsities], fontsize=8)
    ax.set_xlabel("rewind point")
    ax.set_ylabel("weights remaining")
    on = "validation" if res.selection == "val" else "test"
    ax.set_title(f"{metric} test accuracy (%), best on {on} outlined", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.08, pad=0.03)
    fig.tight_layout()
    return _save(fig, path)


def default_sparsities(res, k: int = 3) -> list[float]:
    """Up to k sparsities spread over those that have finished cells: least, middle, most."""
    done = sorted({c["sparsity"] for c in res.cells})
    if len(done) <= k:
        return done
    return [done[round(i * (len(done) - 1) / (k - 1))] for i in range(k)]


def learning_curves(res, path: str, sparsities: list[float]) -> str:
    """Test accuracy against iteration at chosen sparsities: tickets, controls, the dense net."""
    fig, axes = plt.subplots(1, len(sparsities), figsize=(2.2 + 2.6 * len(sparsities), 3.4),
                             sharey=True, squeeze=False)
    for ax, s in zip(axes[0], sparsities):
        for c in (c for c in res.cells if np.isclose(c["sparsity"], s)):
            if c["control"] == "none":
                ax.plot(c["iteration"], 100 * c["test_accuracy"], "o-", ms=3,
                        color=_rewind_color(c["rewind"]),
                        label=f"rewind to {res.point_label(c['rewind'])}")
            else:
                ax.plot(c["iteration"], 100 * c["test_accuracy"], "s--", ms=3,
                        color=_rewind_color(c["rewind"]) if c["rewind"] >= 0 else "#555555",
                        label=c["control"].replace("_", " ") + (
                            f", {res.point_label(c['rewind'])}" if c["rewind"] >= 0 else ""))
        if res.dense is not None:
            ax.plot(res.dense["iteration"], 100 * res.dense["test_accuracy"], ":", color="black",
                    label="dense")
        ax.set_title(f"{100 * (1 - s):g}% of weights remaining", fontsize=9)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def early_stop(res, path: str) -> str:
    """The early-stop iteration (chosen on validation, or test in old files) against the
    weights remaining."""
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    xs = []
    for label, (r, control, pts) in _by_curve(res, "best_iteration").items():
        x, y = np.array(pts).T
        xs += list(x)
        # earlier rewinds drawn wider, so curves on top of each other all stay visible
        size = 3.5 + 2.5 * (len(res.points) - 1 - r) if control == "none" else 3.5
        style = dict(color=_rewind_color(r), ls="-", marker="o", lw=1 + 0.8 * size / 3.5) \
            if control == "none" else dict(color="#555555", ls="--", marker="s")
        ax.plot(x, y, ms=size, label=label, **style)
    if xs:
        _log_remaining_axis(ax, xs)
    last = max([int(c["iteration"][-1]) for c in res.cells], default=0)
    ax.set_ylim(0, 1.08 * last if last else 1)
    ax.set_ylabel("early-stop iteration")
    on = "validation" if res.selection == "val" else "test"
    ax.set_title(f"iteration of the best {on} accuracy (training ends at {last})", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return _save(fig, path)


def run_timeline(res, timings, path: str) -> str:
    """One row per rank, its phases as bars; cells coloured by mask, labelled m<mask>r<rewind>
    (m<mask>c for a control)."""
    table, phases = timings.table, timings.phases
    start, end = timeline.span(table)
    wall = end - start
    rank_list = timeline.ranks(table)
    fig, ax = plt.subplots(figsize=(8.0, max(2.6, 1.3 + 0.42 * min(len(rank_list), 24))))
    mask_cmap = plt.get_cmap("viridis")
    n_masks = max(1, len(res.sparsities))
    for rank, phase, cell, t0, t1 in table:
        name, y, cell = phases[int(phase)], rank_list.index(int(rank)), int(cell)
        box = (t0 - start, t1 - t0)
        if name == "cell":
            known = 0 <= cell < len(res.grid)
            shade = (res.grid[cell].mask if known else 0) / max(1, n_masks - 1)
            ax.broken_barh([box], (y - 0.35, 0.7), facecolor=mask_cmap(shade),
                           edgecolor="white", lw=0.5)
            if known and box[1] > 0.045 * wall:
                c = res.grid[cell]
                short = f"m{c.mask}" + (f"r{c.rewind}" if c.control == "none" else "c")
                ax.text(box[0] + box[1] / 2, y, short, ha="center", va="center", fontsize=6.5,
                        color="white" if shade < 0.6 else "black")
        elif name in timeline.IDLE:
            ax.broken_barh([box], (y - 0.35, 0.7), lw=0.3, **IDLE_STYLE)
        else:
            ax.broken_barh([box], (y - 0.35, 0.7), facecolor=PHASE_COLOR.get(name, "#cccccc"),
                           edgecolor="white", lw=0.5)
    ax.set_yticks(range(len(rank_list)), [f"rank {r}" for r in rank_list], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, wall)
    ax.set_xlabel("seconds since the job started")
    util = timeline.utilization(table, phases)
    serial = timeline.serial_fraction(table, phases)
    ax.set_title(f"job {timings.job}: {len(rank_list)} ranks, wall {wall:.1f} s, utilization "
                 f"{100 * util:.1f}%, serial fraction {100 * serial:.1f}%", fontsize=9)
    handles = [Patch(facecolor=c, label=p) for p, c in PHASE_COLOR.items()]
    handles += [Patch(facecolor=mask_cmap(0.5), label="cell (colour: mask)"),
                Patch(label="idle: wait / drain / gather", **IDLE_STYLE)]
    fig.legend(handles=handles, fontsize=7, ncol=5, loc="lower center", frameon=False)
    fig.tight_layout(rect=(0, 0.3 / fig.get_figheight(), 1, 1))
    return _save(fig, path)


def scaling(p, t, t1: float, f_fit: float, path: str, title: str = "",
            f_phases: float | None = None) -> str:
    """Speed-up and efficiency against P: measured, ideal, and Amdahl with the fitted f (and
    with the f of the measured serial phases, when given)."""
    p, t = np.asarray(p, np.float64), np.asarray(t, np.float64)
    s = t1 / t
    grid = np.geomspace(1, max(p.max(), 2), 100)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8.0, 3.4))
    a1.plot(grid, grid, ":", color="gray", label="ideal")
    a1.plot(grid, amdahl.speedup(f_fit, grid), "-", color="C1",
            label=f"Amdahl, f = {f_fit:.3f} (fit)")
    if f_phases is not None:
        a1.plot(grid, amdahl.speedup(f_phases, grid), "--", color="C2",
                label=f"Amdahl, f = {f_phases:.3f} (phases)")
    a1.plot(p, s, "o", color="C0", label="measured")
    a1.set_yscale("log", base=2)
    a1.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    a1.set_ylabel("speed-up T(1) / T(P)")
    a2.axhline(1, ls=":", color="gray", label="ideal")
    a2.plot(grid, amdahl.speedup(f_fit, grid) / grid, "-", color="C1", label="Amdahl (fit)")
    if f_phases is not None:
        a2.plot(grid, amdahl.speedup(f_phases, grid) / grid, "--", color="C2",
                label="Amdahl (phases)")
    a2.plot(p, s / p, "o", color="C0", label="measured")
    a2.set_ylabel("efficiency S(P) / P")
    a2.set_ylim(0, 1.1 * max(1.0, (s / p).max()))
    for ax in (a1, a2):
        ax.set_xscale("log", base=2)
        ticks = sorted(set(p.tolist()) | {1.0})
        ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("ranks P")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def instability(res, path: str) -> str:
    """Instability (points of error on the path above its ends' mean) against the rewind
    point: the dense net (rewind.points: auto's candidates) and each sparsity with pairs;
    the threshold dashed, auto's chosen point marked."""
    from . import stability
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    lines = stability.curves(res, stability.key(res))
    for which, points in sorted(lines.items(), key=lambda kv: (kv[0] != "dense", str(kv[0]))):
        x, y = zip(*points)
        if which == "dense":
            ax.plot(x, 100 * np.array(y), "o-", color="black", label="dense")
        else:
            s = res.sparsities[which]
            ax.plot(x, 100 * np.array(y), "s--", ms=4, label=f"{100 * (1 - s):.3g}% remaining")
    ax.axhline(100 * stability.threshold(res), color="gray", ls=":", label="threshold")
    if "chosen_point" in res.choice:
        ax.axvline(res.choice["chosen_point"], color="C3", lw=1,
                   label=f"auto's choice ({res.unit} {res.choice['chosen_point']})")
    ax.set_xscale("symlog", linthresh=1)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.set_xlabel(f"rewind point ({res.unit}s, symlog)")
    on = "validation" if stability.key(res) == "instability_val" else "test"
    ax.set_ylabel(f"instability ({on}, points of error)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
