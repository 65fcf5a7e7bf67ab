"""bfloat16 against float32 on this CPU: resnet20 step time side by side, and the accuracy
of a short run in each precision (prints, asserts nothing).

Both trainers are built in one process and timed in alternating rounds (median of
--rounds), so the machine's noise hits them alike; XLA is off for both unless --xla (oneDNN
runs the bfloat16 convolutions and matmuls with AVX-512 BF16 / AMX where the CPU has them).
Then each trains the same --epochs on the same Fashion-MNIST examples from the same
initialization and reports test accuracy; --seeds N repeats that from N initializations and
reports mean ± sd and the paired difference (one short run's accuracy is mostly noise).

Goal (issue 11): bfloat16 >= 1.3x faster per step, accuracy within 0.3 points.

Usage: python benchmarks/bf16.py [--model resnet20] [--batch 128] [--steps 10]
       [--rounds 5] [--epochs 2] [--train 10000] [--threads 2] [--seeds 1] [--xla]
"""
import harness

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def main():
    p = harness.parser(__doc__, rounds=5, threads=True)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="steps per timed round")
    p.add_argument("--epochs", type=int, default=2, help="epochs of the accuracy run")
    p.add_argument("--train", type=int, default=10000, help="training examples (accuracy run)")
    p.add_argument("--seeds", type=int, default=1,
                   help="accuracy runs from this many initializations (mean and sd over them)")
    p.add_argument("--xla", action="store_true", help="compile the steps with XLA")
    args = p.parse_args()
    harness.tf_threads(args.threads)
    from lth_mpi import config, data, training
    name = harness.dataset_name()

    def trainer(precision):
        cfg = harness.one_rank(args.model, args.batch,
                               {"train_examples": args.train, "validation_examples": 0},
                               optimizer="sgd", learning_rate=0.05, xla=args.xla,
                               mixed_precision=precision)
        ds = data.load(cfg["dataset"])
        model, idx = training.build_for(config.resolve(cfg), ds, cfg["seed"])   # the same init in both
        t = training.Trainer(model, ds, config.resolve(cfg).train, idx)
        return t, [np.asarray(w, np.float32) for w in model.get_weights()], cfg

    def start(seed):
        """float32 initial weights from `seed`, loaded into both trainers."""
        cfg = runs[False][2]
        model, _ = training.build_for(config.resolve(cfg), runs[False][0].data, seed)
        return [np.asarray(w, np.float32) for w in model.get_weights()]

    runs = {p: trainer(p) for p in (False, "bfloat16")}
    import keras
    keras.mixed_precision.set_global_policy("float32")
    first = runs[False][1]
    x, y = next(iter(runs[False][0].data.train_batches(0, 1, args.batch)))
    x, y = tf.constant(x), tf.constant(y)
    def steps(t):
        for _ in range(args.steps):
            t._train_step(x, y)
        float(t.loss_sum.numpy())          # wait for the last step

    for t, _, _ in runs.values():
        t.load(first)
        for _ in range(3):                      # compile and warm up
            t._train_step(x, y)
    med = harness.medians(harness.alternate({p: (lambda t=t: steps(t)) for p, (t, _, _)
                                             in runs.items()}, args.rounds,
                                            scale=1000 / args.steps, warm_up=False))
    f32, b16 = med[False], med["bfloat16"]
    print(f"{args.model}, batch {args.batch}, {args.threads} threads, "
          f"{'XLA' if args.xla else 'no XLA'}, median of "
          f"{args.rounds} rounds of {args.steps} steps")
    print(f"  float32   {f32:8.1f} ms/step")
    print(f"  bfloat16  {b16:8.1f} ms/step")
    print(f"speed-up bfloat16 / float32 = {f32 / b16:.2f}x (goal >= 1.3)")
    if args.epochs < 1:
        return
    acc = {p: [] for p in runs}
    for seed in range(args.seeds):
        weights = start(seed)
        for p, (t, _, _) in runs.items():
            t.load(weights)
            acc[p].append(100 * t.fit(args.epochs, seed=seed + 1)["test_accuracy"][-1])
    f32, b16 = np.array(acc[False]), np.array(acc["bfloat16"])
    sd = (lambda a: f" ± {a.std(ddof=1):.2f}" if len(a) > 1 else "")
    print(f"test accuracy after {args.epochs} epochs on {args.train} {name} examples, "
          f"{args.seeds} initialization(s): float32 {f32.mean():.2f}%{sd(f32)}, bfloat16 "
          f"{b16.mean():.2f}%{sd(b16)}; difference {(b16 - f32).mean():+.2f}{sd(b16 - f32)} "
          "points (goal within 0.3)")


if __name__ == "__main__":
    main()
