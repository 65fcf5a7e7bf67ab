"""XLA or not, per model, on this machine: one rank's training epoch with the trainer's steps
compiled by XLA against the same trainer without, side by side in one process (alternating
rounds, median; prints, asserts nothing). It is what `train.xla: auto` decides on: XLA on a
GPU, and on a CPU only for models without convolutions.

Usage: python benchmarks/xla_cpu.py [--models lenet_300_100,resnet20,mobilenet_v2]
       [--train 5120] [--batch 128] [--rounds 3] [--threads N]
"""
import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="lenet_300_100,resnet20,mobilenet_v2")
    p.add_argument("--train", type=int, default=5120, help="training examples per epoch")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args()
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(2, args.threads))
    from lth_mpi import config, data, training
    name = "fashion_mnist" if os.path.isdir(data.FASHION_MNIST_DIR) else "synthetic"
    print(f"one epoch of {args.train} {name} examples (+ 1000 test evaluated), batch "
          f"{args.batch}, SGD, {args.threads} thread(s), median of {args.rounds}")
    for model_name in args.models.split(","):
        trainers, first = {}, {}
        for xla in (True, False):
            cfg = config.load(raw={
                "model": {"name": model_name}, "prune": {"sparsities": [0.5]},
                "dataset": {"name": name, "train_examples": args.train, "test_examples": 1000,
                            "validation_examples": 0},
                "train": {"batch_size": args.batch, "optimizer": "sgd", "learning_rate": 0.05,
                          "xla": xla}, "parallel": {"group_size": 1}})
            ds = data.load(cfg["dataset"])
            model, idx = training.build_for(cfg, ds, 0)
            trainers[xla] = training.Trainer(model, ds, cfg["train"], idx)
            t0 = time.perf_counter()
            trainers[xla].fit(1, seed=1)             # tracing and compiling
            first[xla] = time.perf_counter() - t0
            auto = training.use_xla("auto", model)
        times = {xla: [] for xla in trainers}
        for r in range(args.rounds):
            for xla, t in trainers.items():
                t0 = time.perf_counter()
                t.fit(1, seed=r + 2)
                times[xla].append(time.perf_counter() - t0)
        on, off = statistics.median(times[True]), statistics.median(times[False])
        print(f"  {model_name:<14} XLA {on:6.2f} s (first {first[True]:5.1f} s)   no XLA "
              f"{off:6.2f} s (first {first[False]:5.1f} s)   XLA / no XLA = {on / off:.2f}"
              f"   auto: {'XLA' if auto else 'no XLA'}")


if __name__ == "__main__":
    main()
