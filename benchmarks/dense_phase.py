"""Does the serial phase use the whole node? The dense phase timed from each run's own
timeline, side by side in one run: one rank with all the cores, P ranks with rank 0 training
alone (parallel.dense: rank0), and P ranks sharing it (parallel.dense: data_parallel).
Prints, asserts nothing.

Goal (issue 11): the dense phase at -n P no slower than at -n 1.

Usage: python benchmarks/dense_phase.py [-n 2] [--epochs 3] [--rounds 2]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def dense_seconds(n: int, threads: int, mode: str, epochs: int) -> float:
    import h5py
    out = os.path.join(tempfile.mkdtemp(prefix="lth-dense-"), "d.h5")
    cmd = ["bash", os.path.join(ROOT, "run", "mpiexec.sh"), "-n", str(n), sys.executable,
           "-m", "mpi4py", "-m", "lth_mpi", "run", os.path.join(ROOT, "run", "configs",
                                                               "demo.yaml"),
           "--output", out, "--set", "prune.sparsities=[0.5]", "--set", "rewind.points=[0]",
           "--set", "parallel.group_size=1", "--set", f"parallel.threads={threads}",
           "--set", f"parallel.dense={mode}", "--set", f"train.epochs={epochs}"]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    with h5py.File(out, "r") as f:
        t = f["timings/run0"]
        table, phases = t[()], json.loads(t.attrs["phases"])
    rows = table[(table[:, 1] == phases.index("dense")) & (table[:, 0] == 0)]
    return float((rows[:, 4] - rows[:, 3]).sum())


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds; median reported")
    args = p.parse_args()
    cores = os.cpu_count()
    setups = {f"-n 1, {cores} threads": (1, cores, "rank0"),
              f"-n {args.n}, rank 0 alone, {cores // args.n} thread(s) each":
                  (args.n, max(1, cores // args.n), "rank0"),
              f"-n {args.n}, data-parallel, {cores // args.n} thread(s) each":
                  (args.n, max(1, cores // args.n), "data_parallel")}
    times = {k: [] for k in setups}
    for _ in range(args.rounds):
        for k, (n, threads, mode) in setups.items():
            times[k].append(dense_seconds(n, threads, mode, args.epochs))
    print(f"dense phase, LeNet-300-100 Fashion-MNIST, {args.epochs} epochs, median of "
          f"{args.rounds} rounds:")
    med = {k: statistics.median(v) for k, v in times.items()}
    base = next(iter(med.values()))
    for k, v in med.items():
        print(f"  {k:<45} {v:7.1f} s   {v / base:.2f}x of -n 1")
    print("goal: -n P no slower than -n 1 (ratio <= 1.00)")


if __name__ == "__main__":
    main()
