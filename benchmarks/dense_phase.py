"""Does the serial phase use the whole node? The dense phase timed from each run's own
timeline, side by side in one run: one rank with all the cores, P ranks with rank 0 training
alone (parallel.dense: rank0), and P ranks sharing it (parallel.dense: data_parallel).
Prints, asserts nothing.

Goal (issue 11): the dense phase at -n P no slower than at -n 1.

Usage: python benchmarks/dense_phase.py [-n 2] [--epochs 3] [--rounds 2] [--grid]
           [--set KEY=VALUE ...]   (e.g. --set model.name=resnet20 --set dataset.train_examples=6400)
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

import grid as grid_bench  # its fixed grid, for --grid
from harness import ROOT, search_command


def job(n: int, mode: str, epochs: int, grid: bool, sets=()) -> tuple[float, float, float]:
    """One search; (rank 0's dense phase, the cells' span, job wall) in seconds."""
    import h5py
    out = os.path.join(tempfile.mkdtemp(prefix="lth-dense-"), "d.h5")
    cmd = search_command(n, "run/configs/demo.yaml", out, "--set", f"parallel.dense={mode}",
                         "--set", f"train.epochs={epochs}",
                         *(grid_bench.SETTINGS if grid else ["--set", "prune.sparsities=[0.5]",
                                                             "--set", "rewind.points=[0]",
                                                             "--set", "parallel.group_size=1"]),
                         *(a for kv in sets for a in ("--set", kv)))
    t0 = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    wall = time.time() - t0
    with h5py.File(out, "r") as f:
        t = f["timings/run0"]
        table, phases = t[()], json.loads(t.attrs["phases"])
    rows = table[(table[:, 1] == phases.index("dense")) & (table[:, 0] == 0)]
    cells = table[table[:, 1] == phases.index("cell")]
    span = float(cells[:, 4].max() - cells[:, 3].min())
    return float((rows[:, 4] - rows[:, 3]).sum()), span, wall


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds; median reported")
    p.add_argument("--grid", action="store_true",
                   help="run grid.py's 16-cell grid after the dense phase (not one cell), and "
                        "print its span and the job's wall too")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override for every run (another model, fewer examples)")
    args = p.parse_args()
    cores, share = os.cpu_count(), max(1, os.cpu_count() // args.n)
    setups = {f"-n 1, {cores} threads": (1, "rank0"),
              f"-n {args.n}, rank 0 alone, {share} thread(s) each": (args.n, "rank0"),
              f"-n {args.n}, data-parallel, {share} thread(s) each":
                  (args.n, "data_parallel")}
    times = {k: [] for k in setups}
    for _ in range(args.rounds):
        for k, (n, mode) in setups.items():
            times[k].append(job(n, mode, args.epochs, args.grid, args.set))
    print(f"dense phase, demo config {' '.join(args.set) or '(LeNet-300-100)'}, "
          f"{args.epochs} epochs"
          + (", then grid.py's 16 cells" if args.grid else "")
          + f", median of {args.rounds} rounds:")
    med = {k: [statistics.median(r[i] for r in v) for i in range(3)] for k, v in times.items()}
    base = next(iter(med.values()))
    for k, (dense, span, wall) in med.items():
        print(f"  {k:<40} dense {dense:5.1f} s  {dense / base[0]:.2f}x of -n 1"
              + (f"   grid span {span:5.1f} s   job {wall:5.1f} s" if args.grid else ""))
    print("goal: -n P no slower than -n 1 (ratio <= 1.00)")


if __name__ == "__main__":
    main()
