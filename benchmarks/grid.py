"""A fixed small grid through lth-mpi, and the same cells as independent plain processes,
side by side in one run (prints, asserts nothing).

1. `mpiexec -n P` runs the search (LeNet-300-100 on real Fashion-MNIST, 4 sparsities x
   rewinds 0, 1, 2 with `remaining` retraining, so cells differ in length, + random_reinit;
   groups of one, dynamic scheduling unless --assign says otherwise). From its own timeline:
   cells per hour, utilization (whole job and grid alone), serial fraction.
2. The same cells, from the same dense phase (read from the results file), trained by P plain
   Python processes without MPI or Horovod, each its longest-first share one after another.
   The ratio compares the grid's span (first cell start to last cell end) with the plain
   processes' span (the same, measured inside them): what the MPI machinery costs per cell.

Goal (issue 11): grid span / plain span <= 1.10.

Usage: python benchmarks/grid.py [-n 2] [--epochs 3] [--assign dynamic] [--threads 1]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from harness import ROOT, search_command

SETTINGS = ["--set", "prune.sparsities=[0.5, 0.8, 0.9, 0.95]", "--set", "rewind.points=[0, 1, 2]",
            "--set", "controls=[random_reinit]", "--set", "parallel.group_size=1"]


def plain_worker(path: str, names: list[str], threads: int) -> None:
    """Train the named cells of `path` one after another in this process, no MPI; print
    a JSON line with each cell's start and end."""
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    import h5py
    from lth_mpi import config as config_mod
    from lth_mpi import data, models, plan, search, training
    with h5py.File(path, "r") as f:
        cfg = config_mod.yaml.safe_load(f.attrs["config"])
        dense = search.Dense(f["checkpoints"][()][None], f["masks"][()][None],
                             f["masks"].attrs["sparsity_realized"][None])
    s = config_mod.resolve(cfg)
    dataset = data.load(s.dataset)
    model, idx = training.build_for(s, dataset, s.setup_seed)
    s = s.bind(training.kernels_of(model, idx), models.layer_names(model),
               dataset.train_total // s.batch_size, dataset.train_total)
    setup = search.Setup(s, None, dataset, model, idx, [tuple(w.shape) for w in model.weights],
                         plan.grid(s))
    trainer = training.Trainer(model, dataset, s.train, idx)
    grid = {c.name: c for c in setup.grid}
    rows = []
    for name in names:
        cell = grid[name]
        t0 = time.time()
        start, masks = search.cell_inputs(setup, cell, dense, None)
        search.train_cell(setup, cell, trainer, start, masks)
        rows.append((name, t0, time.time()))
    print(json.dumps(rows), flush=True)


def search(n: int, threads: int, args) -> tuple[str, float]:
    """Run the grid on n ranks of `threads` threads; (results file, wall seconds)."""
    out = os.path.join(tempfile.mkdtemp(prefix="lth-grid-"), "grid.h5")
    cmd = search_command(n, "run/configs/demo.yaml", out, *SETTINGS,
                         "--set", f"train.epochs={args.epochs}",
                         "--set", f"parallel.assign={args.assign}",
                         "--set", f"parallel.threads={threads}")
    print("benchmark: " + " ".join(cmd), flush=True)
    t0 = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return out, time.time() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=2, help="ranks, and plain processes")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--assign", default="dynamic", help="parallel.assign: dynamic|masks|cells")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per rank/process")
    p.add_argument("--one-rank", action="store_true",
                   help="also run the grid on 1 rank with n x threads threads (more ranks "
                        "must not lose throughput: goal P-rank wall / 1-rank wall <= 0.95)")
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return plain_worker(args.worker[0], args.worker[1:], args.threads)

    from analysis import timeline
    from lth_mpi import config as config_mod
    from lth_mpi import plan, results
    out, job_wall = search(args.n, args.threads, args)

    import h5py
    with h5py.File(out, "r") as f:
        t = f["timings/run0"]
        table, phases = t[()], json.loads(t.attrs["phases"])
        cfg = config_mod.yaml.safe_load(f.attrs["config"])
    cells = results.read_cells(out)
    cell_rows = table[[phases[int(p)] == "cell" for p in table[:, 1]]]
    grid_span = cell_rows[:, 4].max() - cell_rows[:, 3].min()

    # the same cells, longest first, dealt to the plain process that frees up first
    from lth_mpi import data
    steps = data.load(cfg["dataset"]).train_total // cfg["train"]["batch_size"]
    s = config_mod.resolve(cfg)
    grid = plan.grid(s)
    order = [t[0] for t in plan.queue(grid, s, steps)]
    shares, load = [[] for _ in range(args.n)], [0] * args.n
    for c in order:
        k = load.index(min(load))
        shares[k].append(c.name)
        load[k] += plan.length(c, s, steps)
    procs = [subprocess.Popen([sys.executable, __file__, "--threads", str(args.threads),
                               "--worker", out, *names], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for names in shares]
    rows = [r for proc in procs for r in json.loads(proc.communicate()[0].strip().splitlines()[-1])]
    plain_span = max(r[2] for r in rows) - min(r[1] for r in rows)

    util = timeline.utilization(table, phases)
    grid_util = timeline.grid_utilization(table, phases)
    serial = timeline.serial_fraction(table, phases)
    print(f"\ngrid: {len(cells)} cells on {args.n} ranks (groups of 1, assign {args.assign}, "
          f"{args.threads} thread(s) each), {args.epochs} epochs, LeNet-300-100 Fashion-MNIST")
    print(f"  job wall {job_wall:.1f} s (incl. start-up): {3600 * len(cells) / job_wall:.0f} "
          f"cells per hour")
    print(f"  utilization {100 * util:.1f}% of the job, {100 * grid_util:.1f}% of the grid; "
          f"serial fraction {100 * serial:.1f}%")
    print(f"  grid span {grid_span:.1f} s vs the same cells in {args.n} plain processes "
          f"{plain_span:.1f} s: ratio {grid_span / plain_span:.3f} (goal <= 1.10)")
    if args.one_rank:
        _, one_wall = search(1, args.n * args.threads, args)
        print(f"  the same grid on 1 rank with {args.n * args.threads} threads: job wall "
              f"{one_wall:.1f} s; {args.n} ranks / 1 rank = {job_wall / one_wall:.3f} "
              "(goal <= 0.95)")


if __name__ == "__main__":
    main()
