"""What synchronized BatchNorm costs a group: step time in a group of G (the ranks it runs on)
with and without `train.sync_batchnorm`, measured side by side in one run (prints, asserts
nothing).

Both trainers are built once and timed in alternating rounds, so the machine's noise hits them
alike; the median round is reported, with one rank alone (G = 1, the same global batch) for
scale. A synchronized forward pass holds collectives, so that half of the step cannot be one
XLA program: the group without sync is also timed without XLA, to separate the two effects. Real Fashion-MNIST when installed, else synthetic data of the same shape.

Usage: mpiexec -n G python -m mpi4py benchmarks/sync_batchnorm.py [--model resnet20]
       [--batch 128] [--steps 10] [--rounds 5] [--threads 1]
"""
import argparse
import os
import statistics
import time

import harness  # noqa: F401  (TensorFlow quiet: imported for its side effect)

from mpi4py import MPI  # noqa: E402

from lth_mpi import config, data, training  # noqa: E402
from lth_mpi.comm import reducers  # noqa: E402
from lth_mpi.comm.world import split, wait_quietly  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per rank")
    args = p.parse_args()
    world = MPI.COMM_WORLD
    G = world.Get_size()
    if G < 2:
        raise SystemExit("run on G >= 2 ranks: mpiexec -n 2 python -m mpi4py "
                         "benchmarks/sync_batchnorm.py")
    layout = split(G)
    reducers.choose(layout, "auto", training.configure(layout, args.threads))
    group = reducers.group_reducers(layout)    # Horovod on GPUs, mpi4py on CPUs (auto)
    name = "fashion_mnist" if os.path.isdir(data.FASHION_MNIST_DIR) else "synthetic"

    def trainer(sync, g, xla=True):
        cfg = config.load(raw={
            "model": {"name": args.model}, "prune": {"sparsities": [0.5]},
            "dataset": {"name": name, "train_examples": args.steps * args.batch, "test_examples": 100},
            "train": {"batch_size": args.batch, "optimizer": "sgd", "learning_rate": 0.01,
                      "sync_batchnorm": sync, "xla": xla}, "parallel": {"group_size": g}})
        d = data.load(cfg["dataset"], (layout.group_rank, g) if g > 1 else (0, 1))
        model, idx = training.build_for(config.resolve(cfg), d, seed=0)
        t = training.Trainer(model, d, config.resolve(cfg).train, idx, group if g > 1 else None)
        t.train_epoch(1)          # trace and compile
        return t

    runs = {f"group of {G}": trainer(False, G), f"group of {G}, no XLA": trainer(False, G, False),
            f"group of {G}, sync_batchnorm": trainer(True, G)}
    times = {k: [] for k in runs}
    for r in range(args.rounds):
        for k, t in runs.items():
            world.Barrier()
            t0 = time.perf_counter()
            t.train_epoch(r + 2)
            times[k].append((time.perf_counter() - t0) / args.steps)
    alone = None
    if layout.rank == 0:          # the other rank sleeps: one rank, same global batch
        alone = {}
        for xla in (True, False):
            t, rounds = trainer(False, 1, xla), []
            for r in range(args.rounds):
                t0 = time.perf_counter()
                t.train_epoch(r + 2)
                rounds.append((time.perf_counter() - t0) / args.steps)
            alone[xla] = statistics.median(rounds)
    wait_quietly()
    if layout.rank == 0:
        base = statistics.median(times[f"group of {G}"])
        print(f"{args.model}, global batch {args.batch}, {args.threads} thread(s) per rank, "
              f"{layout.allreduce} allreduce, "
              f"{name}, median of {args.rounds} rounds of {args.steps} steps")
        print(f"  one rank alone                 {alone[True] * 1e3:8.1f} ms/step")
        print(f"  one rank alone, no XLA         {alone[False] * 1e3:8.1f} ms/step")
        for k, v in times.items():
            m = statistics.median(v)
            print(f"  {k:<30} {m * 1e3:8.1f} ms/step   ratio to group of {G}: {m / base:.2f}")


if __name__ == "__main__":
    main()
