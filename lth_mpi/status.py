"""`lth-mpi status RESULTS.h5`: how a search stands, read from its file while it runs (or
after). No MPI, no TensorFlow: runs on a login node next to the job.

Cells done and total, diverged cells, elapsed time and an ETA from the cells' own times, which
groups still have cells to train, and the best ticket so far (chosen on validation when the
file has it, its test accuracy shown).
"""
from __future__ import annotations

import time

import numpy as np

from . import config, plan, results


def liveness(got: results.Contents, now: float) -> tuple[str, str]:
    """(state, how status shows it) of a file: a status other than `running` is final and
    shown as it is; `running` is running while its writer's heartbeat is fresh, and dead
    once it has been silent for results.STALE seconds (a job killed outright or a lost node
    leaves `running` behind: no handler runs); a file written before the heartbeat is taken
    as running, and says it cannot tell."""
    if got.status != "running":
        return got.status, got.status
    beat = float(got.attrs.get("heartbeat", np.nan))
    if not np.isfinite(beat):
        return "running", "running (or dead: this file has no heartbeat to tell)"
    silent = now - beat
    if silent <= results.STALE:
        return "running", "running"
    return "dead", (f"dead: the file says running, but its writer has been silent for "
                    f"{silent:.0f} s (since "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(beat))}; "
                    f"it beats every {results.HEARTBEAT:g} s): the job was killed or lost its "
                    "node; --resume continues it")


def report(path: str, now: float | None = None) -> str:
    got = results.read(path)
    now = time.time() if now is None else now
    a, cells, s = got.attrs, got.cells, config.stored(got.config)
    started, n_groups = float(a.get("job_started", np.nan)), int(a.get("n_groups", 1))
    grid = plan.grid_for(got.config, len(got.sparsities))
    done = {c["name"] for c in cells}
    state, shown = liveness(got, now)
    running = state == "running"
    lines = [f"{path}: {shown}" + (f" ({a['error']})" if a.get("error") else "")
             + (f", resumed {a['resumed']} time(s)" if a.get("resumed") else ""),
             f"cells done: {len(done)} / {len(grid)}"
             + ("" if got.dense_complete else " (dense phase not finished yet)")]
    if s.auto:
        choice = got.choice
        lines.append(f"rewind.points: auto: {len(got.ladder)} dense stability pairs done; "
                     + (f"chose {s.unit} {choice['chosen_point']}"
                        + ("" if choice["stable"] else " (none was stable: the latest)")
                        if "chosen_point" in choice else "no point chosen yet"))
    diverged = [c for c in cells if c.get("status") == "diverged"]
    if diverged:
        lines.append(f"diverged: {len(diverged)}: " + ", ".join(
            f"{c['name']} (epoch {c['diverged_epoch']})" for c in diverged))
    this_job = [c for c in cells if c["t_start"] >= started - 1]
    end = now if running else float(a["heartbeat"]) if state == "dead" else \
        max([c["t_end"] for c in this_job], default=float("nan"))
    elapsed = end - started
    line = (f"elapsed (latest job): {elapsed:.0f} s" if np.isfinite(elapsed)
            else "elapsed: unknown (the file does not record its job's start)")
    left = len(grid) - len(done)
    if running and this_job and left:
        per_cell = float(np.mean([c["seconds"] for c in this_job]))
        eta = per_cell * int(np.ceil(left / max(1, n_groups)))
        line += f"; ETA about {eta:.0f} s ({left} cells at {per_cell:.1f} s each over " \
                f"{n_groups} group(s))"
    lines.append(line)
    if running and plan.assignment(s) == "dynamic":
        lines.append(f"queue: {left} cells left, each taken by the next group to free up "
                     f"({n_groups} group(s))")
    elif running:
        groups = [[] for _ in range(n_groups)]
        for cells_, chained in plan.passes(grid, s):
            for g, mine in enumerate(plan.assign(cells_, n_groups,
                                                 plan.assignment(s, chained))):
                groups[g] += mine
        busy = [f"group {g} ({len([c for c in mine if c.name not in done])} left)"
                for g, mine in enumerate(groups) if any(c.name not in done for c in mine)]
        lines.append("busy: " + (", ".join(busy) if busy else "none (finishing)"))
    tickets = [c for c in cells if c["control"] == "none" and c.get("status") != "diverged"]
    if tickets:
        on_val = all(np.isfinite(c["final_val_accuracy"]) for c in tickets)
        key = "final_val_accuracy" if on_val else "final_test_accuracy"
        best = max(tickets, key=lambda c: (c[key], c["sparsity"]))
        lines.append(f"best ticket{' so far' if running else ''} "
                     f"(chosen on {'validation' if on_val else 'test'}): "
                     f"{best['name']}, {100 * (1 - best['sparsity']):.3g}% of weights, "
                     f"test accuracy {100 * best['final_test_accuracy']:.2f}%")
    return "\n".join(lines)


def main(path: str) -> int:
    import os
    import sys
    try:
        if not os.path.isfile(path):
            raise ValueError("no such file")
        print(report(path))
    except (OSError, KeyError, ValueError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"lth-mpi: error: status: {path}: {text}", file=sys.stderr)
        return 2
    return 0
