"""Time per training step, measured side by side in one process (prints, asserts nothing).

  1. lth-mpi's masked step   vs  plain tf.keras model.fit   (goal: ratio <= 1.0)
  2. lth-mpi's masked step   vs  lth-mpi's dense step        (goal: masking costs <= 5%)

Same model, data, batch size and optimizer; the three are timed in alternating rounds so
that the machine's noise hits them alike, and the median round is reported.

Usage: python benchmarks/step_time.py [--model lenet_300_100] [--batch 128] [--rounds 15]
"""
import harness

import keras  # noqa: E402  (after harness: TensorFlow quiet)
import numpy as np  # noqa: E402

from lth_mpi import config, data, pruning, training  # noqa: E402


def main():
    p = harness.parser(__doc__, rounds=15)
    p.add_argument("--model", default="lenet_300_100")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=200, help="steps per timed round")
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--no-xla", action="store_true", help="lth-mpi steps without XLA")
    args = p.parse_args()

    n = args.steps * args.batch
    cfg = harness.one_rank(args.model, args.batch, {"train_examples": n, "test_examples": 1000},
                           optimizer="adam", xla=not args.no_xla)
    ds = data.load(cfg["dataset"])
    print(f"data: {cfg['dataset']['name']} ({n} examples), model {args.model}, batch "
          f"{args.batch}, Adam, {args.steps} steps per round, {args.rounds} rounds, "
          f"XLA {'off' if args.no_xla else 'on'} for lth-mpi, Keras' default for fit")

    # plain Keras: the usual compile + fit on normalized float arrays
    ref_model, _ = training.build_for(config.resolve(cfg), ds, seed=0)
    ref_model.compile(optimizer=keras.optimizers.Adam(cfg["train"]["learning_rate"]),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = ((ds.x_train.astype(np.float32) / 255 - np.float32(ds.mean)) / np.float32(ds.std))
    y = ds.y_train

    def keras_fit():
        ref_model.fit(x, y, batch_size=args.batch, epochs=1, shuffle=True, verbose=0)

    # lth-mpi: masked (a ticket being retrained) and dense (the dense phase's step)
    model, idx = training.build_for(config.resolve(cfg), ds, seed=0)
    masked = training.Trainer(model, ds, config.resolve(cfg).train, idx)
    kernels = training.prunable_weights(model, idx, masked.weights())
    masked.load(masked.weights(), list(pruning.magnitude_masks(kernels, args.sparsity).values()))
    dense_model, _ = training.build_for(config.resolve(cfg), ds, seed=0)
    dense = training.Trainer(dense_model, ds, config.resolve(cfg).train, prunable_idx=[])

    runs = {"keras fit": keras_fit,
            "lth-mpi masked": lambda: masked.train_epoch(1),
            "lth-mpi dense": lambda: dense.train_epoch(1)}
    times = harness.alternate(runs, args.rounds, scale=1e3 / args.steps)   # ms per step
    med = harness.medians(times)
    for k, v in med.items():
        print(f"  {k:<15} {v:7.3f} ms/step   (rounds: {', '.join(f'{t:.3f}' for t in times[k])})")
    r1 = med["lth-mpi masked"] / med["keras fit"]
    r2 = med["lth-mpi masked"] / med["lth-mpi dense"]
    print(f"masked / keras fit = {r1:.3f}   (goal <= 1.0: {'met' if r1 <= 1.0 else 'NOT met'})")
    print(f"masked / dense     = {r2:.3f}   (goal <= 1.05: {'met' if r2 <= 1.05 else 'NOT met'})")
    zeros = sum(int((masked.weights()[i] == 0).sum()) for i in idx)
    print(f"check: {zeros} pruned weights are exactly zero after "
          f"{int(masked.optimizer.iterations.numpy())} masked steps")


if __name__ == "__main__":
    main()
