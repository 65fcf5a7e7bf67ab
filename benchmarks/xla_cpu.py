"""XLA or not, per model, on this machine: one rank's training epoch with the trainer's steps
compiled by XLA against the same trainer without, side by side in one process (alternating
rounds, median; prints, asserts nothing). It is what `train.xla: auto` decides on: XLA on a
GPU, and on a CPU only for models without convolutions.

Usage: python benchmarks/xla_cpu.py [--models lenet_300_100,resnet20,mobilenet_v2]
       [--train 5120] [--batch 128] [--rounds 3] [--threads N]
"""
import time

import harness


def main():
    p = harness.parser(__doc__, rounds=3, threads=True)
    p.add_argument("--models", default="lenet_300_100,resnet20,mobilenet_v2")
    p.add_argument("--train", type=int, default=5120, help="training examples per epoch")
    p.add_argument("--batch", type=int, default=128)
    args = p.parse_args()
    harness.tf_threads(args.threads)
    from lth_mpi import config, data, training
    print(f"one epoch of {args.train} {harness.dataset_name()} examples (+ 1000 test "
          f"evaluated), batch {args.batch}, SGD, {args.threads} thread(s), median of "
          f"{args.rounds}")
    for model_name in args.models.split(","):
        trainers, first = {}, {}
        for xla in (True, False):
            cfg = harness.one_rank(model_name, args.batch,
                                   {"train_examples": args.train, "test_examples": 1000,
                                    "validation_examples": 0},
                                   optimizer="sgd", learning_rate=0.05, xla=xla)
            ds = data.load(cfg["dataset"])
            model, idx = training.build_for(config.resolve(cfg), ds, 0)
            trainers[xla] = training.Trainer(model, ds, config.resolve(cfg).train, idx)
            t0 = time.perf_counter()
            trainers[xla].fit(1, seed=1)             # tracing and compiling
            first[xla] = time.perf_counter() - t0
            auto = training.use_xla("auto", model)
        med = harness.medians(harness.alternate(
            {xla: (lambda t=t: t.fit(1, seed=2)) for xla, t in trainers.items()},
            args.rounds, warm_up=False))
        on, off = med[True], med[False]
        print(f"  {model_name:<14} XLA {on:6.2f} s (first {first[True]:5.1f} s)   no XLA "
              f"{off:6.2f} s (first {first[False]:5.1f} s)   XLA / no XLA = {on / off:.2f}"
              f"   auto: {'XLA' if auto else 'no XLA'}")


if __name__ == "__main__":
    main()
