"""`python -m analysis report`: the figures of one results file and a summary page.

The summary is a list of blocks (heading, paragraph, list, table, image) rendered either as
markdown or as a standalone HTML page, so both formats always say the same thing.
"""
from __future__ import annotations

import html
import os
import re

import numpy as np

from . import AnalysisError, amdahl, figures, stability, tickets, timeline
from .load import Results, load

from lth_mpi import modes
from lth_mpi.results import per_rewind, select as results_select

FORMATS = ("md", "html")


# --- rendering -------------------------------------------------------------------------------

def render_markdown(blocks) -> str:
    out = []
    for kind, *body in blocks:
        if kind in ("h1", "h2"):
            out.append(("# " if kind == "h1" else "## ") + body[0])
        elif kind == "p":
            out.append(body[0])
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in body[0]))
        elif kind == "table":
            head, rows = body
            out.append("\n".join(["| " + " | ".join(head) + " |",
                                  "|" + "|".join("---" for _ in head) + "|"]
                                 + ["| " + " | ".join(map(str, r)) + " |" for r in rows]))
        elif kind == "img":
            out.append(f"![{body[1]}]({body[0]})")
    return "\n\n".join(out) + "\n"


def render_html(blocks, title: str) -> str:
    def e(text):   # escaped, with markdown `code` spans as <code>
        return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text, quote=True))
    out = [f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{e(title)}</title>",
           "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
           "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;"
           "text-align:right}img{max-width:100%}</style></head><body>"]
    for kind, *body in blocks:
        if kind in ("h1", "h2"):
            out.append(f"<{kind}>{e(body[0])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{e(body[0])}</p>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in body[0]) + "</ul>")
        elif kind == "table":
            head, rows = body
            out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in r) + "</tr>"
                                 for r in rows) + "</table>")
        elif kind == "img":
            out.append(f"<p><img src='{e(body[0])}' alt='{e(body[1])}'></p>")
    return "\n".join(out) + "\n</body></html>\n"


# --- sections --------------------------------------------------------------------------------

def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _remain(s: float) -> str:
    return f"{100 * (1 - s):.3g}%"


def overview(res: Results) -> list:
    cfg = res.config
    done = f"{len(res.cells)} of {len(res.expected)} cells finished"
    if res.missing:
        shown = ", ".join(res.missing[:8]) + (", ..." if len(res.missing) > 8 else "")
        done += f"; {len(res.missing)} missing ({shown}): this analysis uses the finished ones"
    return [("h1", f"lth-mpi report: {res.name}"),
            ("list", [f"file: `{res.path}` (status `{res.status}`, created "
                      f"{res.attrs.get('created', '?')}, resumed "
                      f"{res.attrs.get('resumed', 0)} times)",
                      done,
                      f"model `{cfg['model']['name']}` on `{cfg['dataset']['name']}`, "
                      f"{cfg['train']['epochs']} epochs (a ticket rewound to k retrains "
                      f"{'the remaining epochs' if cfg['rewind'].get('retrain') == 'remaining' else 'all of them'}), "
                      f"batch {cfg['train']['batch_size']}, "
                      f"{cfg['train']['optimizer']} lr {cfg['train']['learning_rate']:g}",
                      modes.of(cfg).summary(len(res.sparsities)) + " x "
                      + (f"{len(cfg['seeds'])} replicates (seeds {cfg['seeds']}) x "
                         if res.replicated else "")
                      + f"{len(res.points)} rewind points ({res.unit}s {res.points}), controls: "
                      f"{', '.join(res.controls) or 'none'}",
                      f"{res.world_size} ranks in {res.n_groups} groups of {res.group_size}"]
             + _batchnorm_line(res))]


def _batchnorm_line(res: Results) -> list:
    bn = res.batchnorm
    if not bn or bn["dense"] is None:
        return []
    if not res.mixed_batchnorm:
        return [f"BatchNorm statistics over {bn['dense']} examples in every training"]
    return [f"**BatchNorm regimes differ**: the dense network's statistics over {bn['dense']} "
            f"examples, the cells' over {bn['cells']} (train.sync_batchnorm: false); "
            "ticket-vs-dense differences include that change"]


def selection_note(res: Results) -> str:
    n_val = res.config["dataset"].get("validation_examples")
    gone = len(tickets.diverged(res.cells))
    if res.selection == "val":
        return ("Selection: early-stop points, the best ticket and the winning tickets are "
                "chosen on the validation split (examples held out of the training split, "
                f"{'the default size' if n_val is None else n_val}); every accuracy shown is "
                "the test accuracy at the chosen point."
                + (f" {gone} diverged cell(s) ignored by the selection." if gone else ""))
    return ("Selection: this file has no validation split (written before format version 2, "
            "or with dataset.validation_examples: 0), so early stops and tickets are chosen on "
            "the test set, which biases the accuracies reported upward.")


def accuracy_section(res: Results, metric: str, window, figs: dict) -> list:
    d = res.dense["test_accuracy"]
    mean, spread, n = tickets.dense_band(d, window)
    band = (f"band {_pct(mean)} ± {_pct(spread)} (mean ± sd of its last {n} epochs: the "
            "dense net is trained once)")
    if res.replicated:
        mean, spread = tickets.dense_spread(res.dense_runs)
        band = (f"over the {len(res.dense_runs)} seeds {res.config['seeds']} the final test "
                f"accuracy is {_pct(mean)} ± {_pct(spread)} (mean ± sd); every cell below is "
                "the mean of its replicates")
    best = tickets.best_cell(res.cells, metric, res.selection)
    stop = results_select(res.dense)[0]
    out = [("h2", "Accuracy"),
           ("p", selection_note(res)),
           ("list", [f"dense network: final {_pct(d[-1])}, at its early stop {_pct(d[stop])} "
                     f"(iteration {int(res.dense['iteration'][stop])}, chosen on "
                     f"{'validation' if res.selection == 'val' else 'test'}"
                     f"{', curves averaged over seeds' if res.replicated else ''}); {band}"]
            + ([f"best ticket: {best['name']} ({_remain(best['sparsity'])} of weights, rewind "
                f"to {res.point_label(best['rewind'])}): {_pct(tickets.accuracy(best, metric))}"]
               if best else [])),
           ("img", figs["accuracy"], "accuracy against weights remaining")]
    acc = tickets.grid(res.cells, len(res.sparsities), len(res.points), metric)
    controls = _control_columns(res)
    head = ["sparsity", "remaining"] + [res.point_label(r) for r in range(len(res.points))] \
        + [label for _, _, label in controls]
    rows = []
    for m, s in enumerate(res.sparsities):
        row = [f"{s:g}", _remain(s)]
        for r in range(len(res.points)):
            v = acc[m, r]
            mark = " (best)" if best and (best["mask"], best["rewind"]) == (m, r) else ""
            gone = [c for c in tickets.diverged(res.cells)
                    if (c["mask"], c["rewind"], c["control"]) == (m, r, "none")]
            hit = [c for c in tickets.tickets(res.cells) if (c["mask"], c["rewind"]) == (m, r)]
            sd = _sd(hit[0], metric) if hit else ""
            row.append("diverged" if gone else "–" if np.isnan(v) else f"{100 * v:.2f}{sd}{mark}")
        for ctl, r, _ in controls:
            hit = [c for c in res.cells if (c["mask"], c["rewind"], c["control"]) == (m, r, ctl)]
            row.append(_control_entry(hit, metric))
        rows.append(row)
    gone = tickets.diverged(res.cells)
    if gone:
        out += [("p", f"{len(gone)} cell(s) diverged (non-finite loss or weights) and are "
                      "left out of every selection: " + ", ".join(
                          f"{c['name']} (epoch {c['diverged_epoch']})" for c in gone) + ".")]
    out += [("p", f"{metric.capitalize()} test accuracy (%) by sparsity and rewind point "
                  "(– : not finished):"),
            ("table", head, rows),
            ("img", figs["heatmap"], "accuracy heatmap")]
    return out


def _control_columns(res: Results) -> list:
    """(control, rewind or -1, column label): random_mask (and iterative random_reinit) per
    rewind point, one-shot reinit once."""
    out = []
    for ctl in res.controls:
        out += ([(ctl, r, f"{ctl} {res.point_label(r)}") for r in range(len(res.points))]
                if per_rewind(ctl, res.cells, res.config) else [(ctl, -1, ctl)])
    return out


def _control_entry(hit: list, metric: str) -> str:
    if not hit:
        return "–"
    if tickets.diverged(hit):
        return "diverged"
    return f"{100 * tickets.accuracy(hit[0], metric):.2f}" + _sd(hit[0], metric)


def _sd(cell: dict, metric: str) -> str:
    """ ± the sd over replicates (`seeds`), or nothing for a single run."""
    sd = cell.get(f"{metric}_test_accuracy_sd")
    return "" if sd is None else f" ± {100 * sd:.2f}"


def tolerance_for(res: Results, tolerance: float | None) -> tuple[float, str]:
    """The winning-ticket tolerance and why: as given; else, with `seeds`, the dense nets'
    spread (sd of their final accuracy on the selection split over the seeds); else 1 point."""
    if tolerance is not None:
        return tolerance, ""
    if res.replicated and len(res.dense_runs) > 1:
        sd = tickets.dense_spread(res.dense_runs, res.selection)[1]
        return sd, (f" (the dense networks' spread: the sd of their final accuracy over "
                    f"the {len(res.dense_runs)} seeds)")
    return 0.01, ""


def winners_section(res: Results, metric: str, tolerance: float | None) -> tuple[list, list]:
    split = res.selection
    on = "validation" if split == "val" else "test"
    ref = tickets.dense_reference(res.dense, metric, split)
    test_ref = tickets.dense_reference(res.dense, metric, "test")
    tolerance, why = tolerance_for(res, tolerance)
    wins = tickets.winning_tickets(res.cells, ref, tolerance, metric, split)
    mean = " mean" if res.replicated else ""
    out = [("h2", "Winning tickets"),
           ("p", f"The sparsest ticket of each rewind point whose{mean} {metric} {on} accuracy "
                 f"is at most {100 * tolerance:.3g} percentage points{why} below the dense "
                 f"network's{mean} ({_pct(ref)}), i.e. at least {_pct(ref - tolerance)}; "
                 "sparsest first, the "
                 "first row is the winning ticket. Chosen on " + on + "; the accuracy shown is "
                 f"the test accuracy, against the dense network's {_pct(test_ref)}. Controls "
                 "(random reinit) at the same sparsity show whether the rewound weights matter.")]
    if not wins:
        return out + [("p", "No finished ticket is within the tolerance.")], wins
    head = ["cell", "remaining", "rewind", f"{on} acc", "test acc", "test vs dense"] \
        + list(res.controls)
    rows = []
    for c in wins:
        a = tickets.accuracy(c, metric)
        row = [c["name"], _remain(c["sparsity"]), res.point_label(c["rewind"]),
               f"{100 * tickets.accuracy(c, metric, split):.2f}",
               f"{100 * a:.2f}{_sd(c, metric)}", f"{100 * (a - test_ref):+.2f}"]
        for ctl in res.controls:   # the same mask (and rewind, for a per-rewind control)
            each = per_rewind(ctl, res.cells, res.config)
            hit = [k for k in res.cells if k["mask"] == c["mask"] and k["control"] == ctl
                   and (not each or k["rewind"] == c["rewind"])]
            row.append(_control_entry(hit, metric))
        rows.append(row)
    return out + [("table", head, rows)], wins


def curves_section(res: Results, sparsities, figs: dict) -> list:
    stops = sorted({int(c["best_iteration"]) for c in tickets.trained(res.cells)})
    return [("h2", "Learning curves and early stopping"),
            ("p", "Test accuracy after each epoch at sparsities "
                  + ", ".join(_remain(s) for s in sparsities) + " of weights remaining; the "
                  "dotted line is the dense network."),
            ("img", figs["learning_curves"], "learning curves"),
            ("p", "Early-stop iteration (the iteration of the best "
                  + ("validation" if res.selection == "val" else "test")
                  + " accuracy) against the weights remaining; the curves are sampled once per epoch, so it takes the "
                  f"values {stops}."),
            ("img", figs["early_stop"], "early-stop iteration")]


def stability_section(res: Results, metric: str, tolerance: float | None, fig: str) -> list:
    """Instability against the rewind point, auto's choice, and stable against matching."""
    limit, on = stability.threshold(res), stability.key(res)
    split = "validation" if on == "instability_val" else "test"
    out = [("h2", "Stability"),
            ("p", "A stability pair trains one network twice from the same rewound weights in "
                  "two data orders; its instability is the largest error on the straight line "
                  "between the two results minus the mean of the two ends' errors (BatchNorm "
                  "re-estimated at every point). Stable: below "
                  f"{100 * limit:.3g} points on {split}."),
           ("img", fig, "instability against rewind point")]
    choice = res.choice
    if "chosen_point" in choice:
        worst = ", ".join(f"{p}: {100 * v:.2f}" for p, v in zip(choice["ladder"],
                                                                 choice["instability"]))
        out.append(("p", f"rewind.points: auto chose {res.unit} {choice['chosen_point']}, "
                         + ("the earliest candidate below the threshold"
                            if choice["stable"] else "the latest candidate: none was below "
                            "the threshold")
                         + f" (the dense net's instability on {choice['chosen_on']}, points, "
                         f"worst over the seeds: {worst})."))
    rows = stability.table(res, metric, tolerance_for(res, tolerance)[0])
    if rows:
        agree, known = stability.agreement(rows)
        out += [("p", f"Tickets with a stability pair: stable, and matching the dense net as "
                      f"winning tickets are chosen ({metric} accuracy on the selection split); "
                      f"stable and matching agree for {agree} of {known}."),
                ("table", ["sparsity", "remaining", "rewind", "instability (test)",
                           f"instability ({split})", "stable", "ticket test acc", "matching"],
                 [[f"{r['sparsity']:g}", _remain(r["sparsity"]), f"{res.unit} {r['point']}",
                   f"{100 * r['instability']:.2f}", f"{100 * r['classified_on']:.2f}",
                   "yes" if r["stable"] else "no",
                   "–" if r["accuracy"] is None else f"{100 * r['accuracy']:.2f}",
                   "–" if r["matching"] is None else "yes" if r["matching"] else "no"]
                  for r in rows])]
    return out


def cells_section(res: Results) -> list:
    head = ["cell", "id", "sparsity", "remaining", "rewind", "final acc", "best acc",
            "best iter", "chosen on", "group", "seconds"]
    rows = [[c["name"], c["id"], f"{c['sparsity_realized']:.4f}",
             _remain(c["sparsity_realized"]), res.point_label(c["rewind"]),
             f"{100 * c['final_test_accuracy']:.2f}", f"{100 * c['best_test_accuracy']:.2f}",
             int(c["best_iteration"]), c["selected_on"], c["group"], f"{c['seconds']:.1f}"]
            for c in res.cells]
    return [("h2", "Cells"), ("table", head, rows)]


def _bill_line(res: Results, timings, wall: float) -> list:
    """The dry run's estimate (`lth-mpi run --dry-run`) beside what the job took."""
    bill = res.attrs.get("estimate")
    if not isinstance(bill, dict):
        return []
    if timings.job != 0:
        return [f"the bill before the run estimated {bill['wall']:.0f} s for the whole search; "
                "this file was resumed, so no one job's time compares with it"]
    return [f"the bill before the run (`--dry-run`, P = {bill['ranks']}): {bill['wall']:.0f} s "
            f"estimated ({bill['setup']:.0f} set-up, {bill['dense']:.0f} dense, "
            f"{bill['grid']:.0f} grid), {wall:.0f} s taken: {bill['wall'] / wall:.2f} of it"]


def timeline_section(res: Results, timings, fig: str | None) -> tuple[list, dict]:
    out = [("h2", "Timeline")]
    if timings is None:
        return out + [("p", "No timings: a job writes its timeline when it finishes, and no job "
                            f"of this file has (status `{res.status}`).")], {}
    t, ph = timings.table, timings.phases
    wall = timeline.wall_seconds(t)
    n = len(timeline.ranks(t))
    b = timeline.breakdown(t, ph)
    ser = timeline.serial_seconds(t, ph)
    util = timeline.utilization(t, ph)
    grid_util = timeline.grid_utilization(t, ph)
    parts = ", ".join(f"{p} {ser[p]:.1f} s" for p in ph if p in ser) \
        + f", untimed (e.g. Horovod start-up) {ser['untimed']:.1f} s"
    out += [("p", f"Job {timings.job} ({len(res.timings)} job(s) wrote this file"
                  + ("; earlier jobs' times are not included" if len(res.timings) > 1 else "")
                  + "): one row per rank; dense and cells are work, wait/drain/gather idle."),
            ("img", fig, "timeline"),
            ("list", [f"wall time {wall:.1f} s on {n} ranks = {n * wall:.1f} rank-seconds",
                      f"utilization (busy rank-seconds / rank-seconds) {_pct(util)}; "
                      + ", ".join(f"{k} {b[k]:.1f} ({_pct(b[k] / (n * wall))})" for k in b),
                      f"grid utilization (cell rank-seconds / ranks x the grid's span, from "
                      f"the first cell's start to the last one's end; parallel.assign "
                      f"{res.config['parallel'].get('assign', 'masks')}) {_pct(grid_util)}",
                      f"serial time {ser['total']:.1f} s = {_pct(ser['total'] / wall)} of the "
                      f"wall time: before the first cell {ser['head']:.1f} s ({parts}); after "
                      f"the last cell {ser['tail']:.1f} s"] + _bill_line(res, timings, wall))]
    per = timeline.phase_seconds(t, ph)
    groups = {r["rank"]: r["group"] for r in res.attrs.get("ranks", [])
              if isinstance(r, dict)}
    cell_code = ph.index("cell")
    rows = []
    for r, secs in per.items():
        busy = sum(secs[p] for p in timeline.BUSY)
        idle = sum(secs[p] for p in timeline.IDLE)
        n_cells = int(((t[:, 0] == r) & (t[:, 1] == cell_code)).sum())
        rows.append([r, groups.get(r, "?"), n_cells, f"{busy:.1f}", f"{idle:.1f}",
                     f"{wall - busy - idle:.1f}", _pct(busy / wall)])
    out.append(("table", ["rank", "group", "cells", "busy s", "idle s", "overhead+untimed s",
                          "utilization"], rows))
    return out, {"utilization": util, "grid_utilization": grid_util, "serial": ser,
                 "wall": wall}


def projection_section(res: Results, timings, efficiency: float) -> list:
    out = [("h2", "Projection to the seeds' cluster")]
    if timings is None or not res.cells:
        return out + [("p", "Needs a finished job's timings and finished cells.")]
    ser = timeline.serial_seconds(timings.table, timings.phases)["total"]
    cell = float(np.mean([c["seconds"] for c in res.cells]))
    p = amdahl.project(cell, ser, res.group_size, efficiency)
    s = amdahl.SEEDS
    return out + [("p", f"{s['groups']} groups x {s['group_size']} GPUs, M = {s['masks']} x "
                        f"N = {s['rewinds']} = {p.cells} cells, from this run's measured times:"),
                  ("list", [f"a cell on a group of {s['group_size']}: {p.cell_seconds:.2f} s; "
                            f"serial part {p.serial_seconds:.2f} s",
                            f"projected wall time: {p.serial_seconds:.1f} + {p.rounds} x "
                            f"{p.cell_seconds:.2f} = {p.wall:.1f} s",
                            f"one group for every cell: {p.serial_seconds:.1f} + {p.cells} x "
                            f"{p.cell_seconds:.2f} = {p.one_group:.1f} s; speed-up "
                            f"{p.speedup:.1f}x on {p.groups} groups"]),
                  ("p", "Assumptions: " + "; ".join(p.assumptions) + ".")]


# --- the command -----------------------------------------------------------------------------

def report(path: str, out_dir: str, tolerance: float | None = None, metric: str = "final",
           fmt: str = "md", sparsities=None, window=None, job=None,
           efficiency: float = 1.0, mixed_batchnorm: bool = False) -> dict:
    """Write the figures and the summary; returns the key numbers (for the CLI and tests).
    A file whose dense net and cells took BatchNorm statistics over different batches is
    refused unless `mixed_batchnorm` (then the summary says so at the top)."""
    if fmt not in FORMATS:
        raise AnalysisError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if tolerance is not None and tolerance < 0:
        raise AnalysisError(f"--tolerance: must be >= 0, got {tolerance}")
    res = load(path)
    if res.mixed_batchnorm and not mixed_batchnorm:
        bn = res.batchnorm
        raise AnalysisError(
            f"{path}: the dense network took BatchNorm statistics over {bn['dense']} examples, "
            f"the cells over {bn['cells']} (train.sync_batchnorm: false in groups of "
            f"{res.group_size}), so tickets and dense net differ in more than their weights; "
            "run with sync_batchnorm: auto, or pass --mixed-batchnorm to report it marked")
    timings = None
    if res.timings:
        jobs = {t.job: t for t in res.timings}
        if job is not None and job not in jobs:
            raise AnalysisError(f"--job: {path} has timings of jobs {sorted(jobs)}, not {job}")
        timings = jobs[job] if job is not None else res.timings[-1]
    elif job is not None:
        raise AnalysisError(f"--job: {path} has no timings (no job finished)")
    if sparsities is not None:
        unknown = [s for s in sparsities if not any(np.isclose(s, x) for x in res.sparsities)]
        if unknown:
            raise AnalysisError(f"--sparsities: {unknown} not among the file's "
                                f"{res.sparsities}")
    os.makedirs(out_dir, exist_ok=True)

    def at(name):
        return os.path.join(out_dir, name)

    blocks, out = overview(res), {"results": res, "figures": [], "winners": [],
                                  "missing": res.missing}
    if res.dense is None:
        blocks.append(("p", "The dense phase has not finished: there is nothing to plot yet."))
    elif not res.cells:
        blocks.append(("p", "No cell has finished yet: there is nothing to plot yet."))
    else:
        chosen = sparsities or figures.default_sparsities(res)
        figs = {"accuracy": "accuracy.png", "heatmap": "heatmap.png",
                "learning_curves": "learning_curves.png", "early_stop": "early_stop.png"}
        figures.accuracy_vs_remaining(res, at(figs["accuracy"]), metric, window)
        figures.heatmap(res, at(figs["heatmap"]), metric)
        figures.learning_curves(res, at(figs["learning_curves"]), chosen)
        figures.early_stop(res, at(figs["early_stop"]))
        out["figures"] += [at(f) for f in figs.values()]
        blocks += accuracy_section(res, metric, window, figs)
        win_blocks, out["winners"] = winners_section(res, metric, tolerance)
        blocks += win_blocks + curves_section(res, chosen, figs)
        if stability.pairs(res):
            fig = figures.instability(res, at("instability.png"))
            out["figures"].append(fig)
            out["stability"] = stability.table(res, metric, tolerance_for(res, tolerance)[0])
            blocks += stability_section(res, metric, tolerance, "instability.png")
        blocks += cells_section(res)
    fig = None
    if timings is not None:
        fig = figures.run_timeline(res, timings, at("timeline.png"))
        out["figures"].append(fig)
        fig = os.path.basename(fig)
    tl_blocks, numbers = timeline_section(res, timings, fig)
    out.update(numbers)
    blocks += tl_blocks + projection_section(res, timings, efficiency)
    text = render_markdown(blocks) if fmt == "md" else render_html(blocks, res.name)
    out["summary"] = at(f"summary.{fmt}")
    with open(out["summary"], "w") as f:
        f.write(text)
    return out
