"""A group's gradient exchange three ways, on the same gradients, side by side in one run,
and what a group of 2 costs per step against one rank (prints, asserts nothing).

Exchanges, each inside a tf.function as the trainer calls it, on tensors shaped like the
model's trainable weights (float32):
  horovod     hvd.grouped_allreduce(grads, op=Average)   (groups with parallel.allreduce: horovod)
  mpi4py      one MPI Allreduce of the concatenated buffer, via tf.numpy_function
              (the data-parallel dense phase; groups with parallel.allreduce: mpi)
At 4 ranks (two groups of 2, {0, 1} and {2, 3}, exchanging at once; Horovod 0.28 refuses a
process set equal to the world, so process sets need two groups), one Horovod way per run
(Horovod cannot be started a second time in a process) against mpi4py in the same run:
  --horovod per-group      hvd.init(comm=group)                 (what Horovod groups use)
  --horovod process-sets   hvd.init(comm=world, process_sets=[{0,1}, {2,3}]),
                           grouped_allreduce(..., process_set=own group's)
  mpi4py                   one Allreduce of one buffer on the group's communicator
The ratio to mpi4py, measured side by side in each run, compares the two Horovod ways.
Alternating rounds, median; Horovod's knobs are read from the environment at hvd.init
(HOROVOD_CYCLE_TIME ms, HOROVOD_FUSION_THRESHOLD bytes): rerun with them to tune.
Then the whole training step: a group of 2, averaging with mpi4py and with Horovod, against
one rank alone with the same global batch (the mpi4py group and the lone rank are timed
before hvd.init: from then on Horovod's thread runs in the process).
At 2 ranks it also prints the CPU an idle rank uses before and after hvd.init: Horovod's
background thread polls every HOROVOD_CYCLE_TIME ms, and the cores it takes are the ones that
train.

Usage: mpiexec -n 2 python -m mpi4py benchmarks/allreduce.py [--models resnet20,mobilenet_v2]
       [--batch 128] [--rounds 7] [--reps 20] [--threads 1]
       mpiexec -n 4 python -m mpi4py benchmarks/allreduce.py --horovod per-group|process-sets
"""
import argparse
import os
import resource
import statistics
import time

import harness  # noqa: F401  (TensorFlow quiet: imported for its side effect)

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet20,mobilenet_v2")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--reps", type=int, default=20, help="exchanges per timed round")
    p.add_argument("--steps", type=int, default=5, help="training steps per timed round")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--idle", type=float, default=3.0, help="seconds of the idle-cost probe")
    p.add_argument("--horovod", choices=["per-group", "process-sets"], default="per-group",
                   help="at 4 ranks: how the groups start Horovod")
    args = p.parse_args()
    world = MPI.COMM_WORLD
    if world.Get_size() not in (2, 4):
        raise SystemExit("run on 2 or 4 ranks: mpiexec -n 2 python -m mpi4py benchmarks/allreduce.py")
    import horovod.tensorflow as hvd
    import tensorflow as tf
    from lth_mpi import data
    from lth_mpi.comm.reducers import mpi_reducers
    from lth_mpi.comm.world import split, wait_quietly
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(2, args.threads))
    if world.Get_size() == 4:
        return process_sets(args, world)
    layout = split(2)
    name = "fashion_mnist" if os.path.isdir(data.FASHION_MNIST_DIR) else "synthetic"
    models = args.models.split(",")
    # before hvd.init: the step of one rank alone and of a group averaging with mpi4py (once
    # Horovod is started its background thread runs in every later measurement)
    steps = {m: step_times(m, name, args, layout, world, "mpi") for m in models}
    idle = [idle_cores(world, args.idle)]
    hvd.init(comm=world)
    hvd.allreduce(tf.constant([1.0]))           # the background thread is running
    idle.append(idle_cores(world, args.idle))
    mpi_average = mpi_reducers(layout.world).average
    lines = []
    for model_name in models:
        grads, size = gradients_of(model_name, world.Get_rank())
        ways = {
            "horovod grouped_allreduce": tf.function(
                lambda g: hvd.grouped_allreduce(g, op=hvd.Average)),
            "mpi4py Allreduce, one buffer": tf.function(lambda g: mpi_average(g)),
        }
        check = {k: [np.asarray(x) for x in f(grads)] for k, f in ways.items()}   # warm up
        for k in ways:
            for a, b in zip(check[k], check["horovod grouped_allreduce"]):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        times = {k: [] for k in ways}
        for _ in range(args.rounds):
            for k, f in ways.items():
                world.Barrier()
                t0 = time.perf_counter()
                for _ in range(args.reps):
                    out = f(grads)
                float(np.asarray(out[0]).ravel()[0])
                times[k].append((time.perf_counter() - t0) / args.reps * 1e3)
        lines.append(f"{model_name}: {len(grads)} gradient tensors, {size / 2**20:.2f} MiB, "
                     f"median of {args.rounds} rounds of {args.reps}")
        for k, v in times.items():
            lines.append(f"  {k:<30} {statistics.median(v):8.2f} ms per exchange")
        steps[model_name].update(step_times(model_name, name, args, layout, world, "horovod"))
        alone = steps[model_name].pop("one rank alone", None)
        if alone is None:           # only rank 0 timed it, and only rank 0 prints
            continue
        lines.append(f"  step, one rank alone           {alone:8.1f} ms  (global batch "
                     f"{args.batch}, no XLA, before hvd.init)")
        for way, two in steps[model_name].items():
            lines.append(f"  step, group of 2, {way:<12} {two:8.1f} ms  = {two / alone:.2f}x "
                         f"one rank; {two - alone / 2:+.1f} ms per step over a perfect halving")
    wait_quietly()
    idle = world.gather(idle)
    if world.Get_rank() == 0:
        print(f"HOROVOD_CYCLE_TIME={os.environ.get('HOROVOD_CYCLE_TIME', 'default')} "
              f"HOROVOD_FUSION_THRESHOLD={os.environ.get('HOROVOD_FUSION_THRESHOLD', 'default')}"
              f", {args.threads} thread(s) per rank")
        print(f"idle ranks (sleeping {args.idle:g} s), CPU cores used per rank: before hvd.init "
              + ", ".join(f"{i[0]:.2f}" for i in idle) + "; after "
              + ", ".join(f"{i[1]:.2f}" for i in idle))
        print("\n".join(lines))


def idle_cores(world, seconds: float) -> float:
    """CPU time per second of wall this process uses while its Python thread sleeps (what
    Horovod's background thread costs the cores that train)."""
    world.Barrier()
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    time.sleep(seconds)
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    return (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) / (t1 - t0)


def gradients_of(model_name, seed):
    """Random tensors shaped like the model's trainable weights, and their size in bytes."""
    import tensorflow as tf
    from lth_mpi import data, models
    name = "fashion_mnist" if os.path.isdir(data.FASHION_MNIST_DIR) else "synthetic"
    ds = data.load({"name": name, "path": None, "train_examples": None,
                    "test_examples": 100, "validation_examples": 0})
    model = models.build(model_name, ds.input_shape, ds.num_classes, {}, 0)
    grads = [tf.constant(np.random.default_rng(seed).standard_normal(w.shape).astype(np.float32))
             for w in model.trainable_weights]
    return grads, sum(int(np.prod(g.shape)) for g in grads) * 4


def process_sets(args, world):
    """4 ranks, two groups of 2: Horovod per group, Horovod process sets, mpi4py."""
    import horovod.tensorflow as hvd
    import tensorflow as tf
    from lth_mpi.comm.world import wait_quietly
    rank = world.Get_rank()
    group = world.Split(rank // 2, rank)
    if args.horovod == "process-sets":         # Horovod cannot be started twice in a process
        sets = [hvd.ProcessSet([0, 1]), hvd.ProcessSet([2, 3])]
        hvd.init(comm=world, process_sets=sets)
        mine = sets[rank // 2]
    else:
        hvd.init(comm=group)
    lines = []
    for model_name in args.models.split(","):
        grads, size = gradients_of(model_name, rank)

        def mpi_average(*g):
            flat = np.concatenate([np.asarray(x).ravel() for x in g])
            group.Allreduce(MPI.IN_PLACE, flat)
            out, at = [], 0
            for x in g:
                out.append((flat[at:at + x.size] / 2).reshape(x.shape))
                at += x.size
            return out
        mpi = tf.function(lambda g: tf.numpy_function(mpi_average, g, [tf.float32] * len(g)))

        def timed(f):
            float(np.asarray(f(grads)[0]).ravel()[0])       # warm up (traces, registers)
            world.Barrier()
            t0 = time.perf_counter()
            for _ in range(args.reps):
                out = f(grads)
            float(np.asarray(out[0]).ravel()[0])
            return (time.perf_counter() - t0) / args.reps * 1e3

        if args.horovod == "process-sets":
            way = "horovod process sets"
            horovod = tf.function(lambda g: hvd.grouped_allreduce(g, op=hvd.Average,
                                                                  process_set=mine))
        else:
            way = "horovod, one init per group"
            horovod = tf.function(lambda g: hvd.grouped_allreduce(g, op=hvd.Average))
        for a, b in zip(horovod(grads), mpi(grads)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
        times = {way: [], "mpi4py Allreduce, one buffer": []}
        for _ in range(args.rounds):
            times[way].append(timed(horovod))
            times["mpi4py Allreduce, one buffer"].append(timed(mpi))
        lines.append(f"{model_name}: {len(grads)} gradient tensors, {size / 2**20:.2f} MiB, "
                     f"groups {{0,1}} and {{2,3}} at once, median of {args.rounds} rounds of "
                     f"{args.reps}")
        ref = statistics.median(times["mpi4py Allreduce, one buffer"])
        for k, v in times.items():
            m = statistics.median(v)
            lines.append(f"  {k:<30} {m:8.2f} ms per exchange  {m / ref:5.2f}x mpi4py")
    wait_quietly()
    if rank == 0:
        print(f"4 ranks, --horovod {args.horovod}, {args.threads} thread(s) per rank "
              "(oversubscribed on fewer cores: "
              "compare the rows, not the absolute times)")
        print("\n".join(lines))


def step_times(model_name, data_name, args, layout, world, way) -> dict:
    """Median step time (ms) of a group of 2 averaging with `way`, and with "mpi" (called
    before hvd.init) also of one rank alone, the other sleeping, with the same global batch."""
    from lth_mpi import config, data, training
    from lth_mpi.comm.reducers import group_reducers
    from lth_mpi.comm.world import wait_quietly

    def trainer(g):
        cfg = config.load(raw={
            "model": {"name": model_name}, "prune": {"sparsities": [0.5]},
            "dataset": {"name": data_name, "train_examples": args.steps * args.batch,
                        "test_examples": 100, "validation_examples": 0},
            "train": {"batch_size": args.batch, "optimizer": "sgd", "learning_rate": 0.01,
                      "xla": False}, "parallel": {"group_size": g}})
        d = data.load(cfg["dataset"], (layout.group_rank, g) if g > 1 else (0, 1))
        model, idx = training.build_for(config.resolve(cfg), d, seed=0)
        t = training.Trainer(model, d, config.resolve(cfg).train, idx,
                             group_reducers(layout, way) if g > 1 else None)
        t.train_epoch(1)
        return t

    def median_step(t, together):
        rounds = []
        for r in range(args.rounds):
            if together:
                world.Barrier()
            t0 = time.perf_counter()
            t.train_epoch(r + 2)
            rounds.append((time.perf_counter() - t0) / args.steps * 1e3)
        return statistics.median(rounds)

    out = {way: median_step(trainer(2), True)}
    if way == "mpi":
        if layout.rank == 0:          # the other rank sleeps
            out["one rank alone"] = median_step(trainer(1), False)
        wait_quietly()
    return out


if __name__ == "__main__":
    main()
