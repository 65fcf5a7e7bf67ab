"""A full real epoch, evaluation included, side by side in one process (prints, asserts
nothing): lth-mpi's masked and dense trainers against Keras `fit` + `evaluate` on the same
model, data (the whole Fashion-MNIST training split, its validation and test sets), batch and
optimizer. Alternating rounds, median.

Goals (issue 11): masked epoch <= 0.35 of Keras fit + evaluate; masked / dense <= 1.05.

Usage: python benchmarks/epoch_time.py [--model lenet_300_100] [--batch 128] [--rounds 3]
       [--threads N] [--per-step] [--xla auto|true|false]   (--per-step: one compiled call per step, as before)
"""
import harness

import numpy as np  # noqa: E402


def main():
    p = harness.parser(__doc__, rounds=3, threads=True)
    p.add_argument("--model", default="lenet_300_100")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--per-step", action="store_true", help="lth-mpi: one call per step")
    p.add_argument("--xla", default="auto", choices=["auto", "true", "false"],
                   help="lth-mpi's train.xla (auto: XLA for this dense model)")
    args = p.parse_args()
    import keras
    harness.tf_threads(args.threads)
    from lth_mpi import config, data, pruning, training
    cfg = harness.one_rank(args.model, args.batch, optimizer="adam",
                           xla={"true": True, "false": False}.get(args.xla, "auto"))
    ds = data.load(cfg["dataset"])

    def norm(x):
        return (x.astype(np.float32) / 255 - np.float32(ds.mean)) / np.float32(ds.std)
    ref, _ = training.build_for(config.resolve(cfg), ds, seed=0)
    ref.compile(optimizer=keras.optimizers.Adam(cfg["train"]["learning_rate"]),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
    xs = {k: norm(getattr(ds, f"x_{k}")) for k in ("train", "test", "val")}
    ys = {k: getattr(ds, f"y_{k}") for k in ("train", "test", "val")}

    def keras_epoch():
        ref.fit(xs["train"], ys["train"], batch_size=args.batch, epochs=1, shuffle=True,
                verbose=0)
        ref.evaluate(xs["test"], ys["test"], batch_size=1000, verbose=0)
        ref.evaluate(xs["val"], ys["val"], batch_size=1000, verbose=0)

    model, idx = training.build_for(config.resolve(cfg), ds, seed=0)
    masked = training.Trainer(model, ds, config.resolve(cfg).train, idx)
    kernels = training.prunable_weights(model, idx, masked.weights())
    masked.load(masked.weights(), list(pruning.magnitude_masks(kernels, args.sparsity).values()))
    dense_model, _ = training.build_for(config.resolve(cfg), ds, seed=0)
    dense = training.Trainer(dense_model, ds, config.resolve(cfg).train, [])
    hook = (lambda step: None) if args.per_step else None     # forces one call per step

    runs = {"keras fit + evaluate": keras_epoch,
            "lth-mpi masked": lambda: masked.fit(1, seed=1, on_step=hook),
            "lth-mpi dense": lambda: dense.fit(1, seed=1, on_step=hook)}
    med = harness.medians(harness.alternate(runs, args.rounds))
    print(f"{args.model}, {ds.train_total} training examples (+ {ds.val_total} validation, "
          f"{ds.test_total} test evaluated), batch {args.batch}, Adam, {args.threads} "
          f"thread(s), lth-mpi {'one call per step' if args.per_step else 'many steps per call'}"
          f", median of {args.rounds}")
    for k, v in med.items():
        print(f"  {k:<22} {v:6.2f} s per epoch")
    r1 = med["lth-mpi masked"] / med["keras fit + evaluate"]
    r2 = med["lth-mpi masked"] / med["lth-mpi dense"]
    print(f"masked / keras fit + evaluate = {r1:.3f}   (goal <= 0.35)")
    print(f"masked / dense                = {r2:.3f}   (goal <= 1.05)")


if __name__ == "__main__":
    main()
