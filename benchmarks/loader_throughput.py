"""Input pipeline vs training: images/s one rank's loader produces (with augmentation) against
images/s one rank's training step consumes, on this machine (prints, asserts nothing).

Goal: the loader is at least 10x faster than the step, so input never holds training up.
One rank of a group of --group ranks is simulated: shard (0, G), local batch = batch / G.

  loader alone   train_batches over the rank's whole shard, random crop + flip, no prefetch
                 thread: what one core produces.
  step           lth_mpi.training.Trainer.train_epoch fed by the same loader with its
                 prefetch thread; the time the step waited on input is reported, and the
                 step's rate is computed from the time not spent waiting.

Cases: Fashion-MNIST (Debian's IDX files converted to /tmp with data_prep; conv4 and
lenet_300_100) and a synthetic ImageNet-64 of --images images written to /tmp as data_prep's
sharded format and streamed from disk (mobilenet_v2, alpha 1, stem stride 1, as the seeds).

Usage: python benchmarks/loader_throughput.py [--images 50000] [--group 4] [--steps 20]
"""
import argparse
import os
import time

import harness  # noqa: F401  (TensorFlow quiet: imported for its side effect)

import numpy as np  # noqa: E402

from lth_mpi.data import h5format, idx  # noqa: E402
from lth_mpi import config, data, training  # noqa: E402

FMNIST_H5 = "/tmp/lth_bench_fashion_mnist.h5"
IMAGENET_H5 = "/tmp/lth_bench_imagenet64/imagenet64.h5"


def fashion_mnist_file() -> str:
    if not os.path.exists(FMNIST_H5):
        out = idx.convert(data.FASHION_MNIST_DIR, "fashion_mnist")
        h5format.write_file(FMNIST_H5, "fashion_mnist", out["splits"], out["class_names"],
                            out["source"], out["sources"])
    return FMNIST_H5


def imagenet_file(n: int, classes: int = 1000, shard: int = 5000) -> str:
    """A synthetic ImageNet-64: smooth random images (not noise), in shards plus an index."""
    if os.path.exists(IMAGENET_H5) and h5format.describe(IMAGENET_H5)["train_total"] >= n:
        return IMAGENET_H5
    folder = IMAGENET_H5[:-3] + ".shards"
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = {"train": [], "test": []}
    for split, total in (("train", n), ("test", max(1000, n // 50))):
        for k, start in enumerate(range(0, total, shard)):
            m = min(shard, total - start)
            coarse = rng.integers(0, 256, (m, 8, 8, 3), dtype=np.uint8)
            images = np.repeat(np.repeat(coarse, 8, 1), 8, 2)          # 64x64 blocks
            images = images + rng.integers(0, 16, images.shape, dtype=np.uint8)
            arrays = {"images": images, "labels": rng.integers(0, classes, m).astype(np.int32)}
            total_px, squares = h5format.pixel_sums(images)
            p = os.path.join(folder, f"{split}-{k:05d}.h5")
            h5format.write_shard(p, arrays, {"pixel_sum": total_px, "pixel_sumsq": squares,
                                             "skipped": "[]"}, "synthetic")
            paths[split].append(p)
    h5format.write_index(IMAGENET_H5, paths, "imagenet", [f"n{i:08d}" for i in range(classes)],
                         "synthetic", {}, [], {"size": 64})
    return IMAGENET_H5


def loader_rate(dataset_cfg, group, batch) -> tuple[float, str]:
    cfg = dict(dataset_cfg, prefetch=0)
    d = data.load(cfg, (0, group))
    steps = d.train_total // batch
    t = time.perf_counter()
    n = sum(len(y) for _, y in d.train_batches(1, steps, batch))
    return n / (time.perf_counter() - t), type(d).__name__


def step_rate(model_cfg, dataset_cfg, group, batch, steps) -> tuple[float, float]:
    """(images/s consumed by the training step, fraction of the epoch spent waiting)."""
    cfg = config.load(raw={"model": model_cfg, "prune": {"sparsities": [0.5]},
                           "dataset": dict(dataset_cfg, train_examples=steps * batch),
                           "train": {"batch_size": batch, "optimizer": "sgd",
                                     "learning_rate": 0.01},
                           "parallel": {"group_size": group}})
    d = data.load(cfg["dataset"], (0, group))
    model, idx_ = training.build_for(config.resolve(cfg), d, seed=0)
    trainer = training.Trainer(model, d, config.resolve(cfg).train, idx_)   # one rank's share of the work
    trainer.train_epoch(1)                                   # tracing and compilation
    d.stats.wait_seconds, d.stats.batches = 0.0, 0
    t = time.perf_counter()
    trainer.train_epoch(2)
    elapsed = time.perf_counter() - t
    busy = elapsed - d.stats.wait_seconds
    return d.stats.batches * (batch // group) / busy, d.stats.wait_seconds / elapsed


def report(name, dataset_cfg, models, group, batch, steps):
    local = batch // group
    rate, kind = loader_rate(dataset_cfg, group, batch)
    print(f"{name}: loader alone ({kind}, augment, local batch {local}): {rate:10.0f} images/s")
    for model_cfg in models:
        consume, waited = step_rate(model_cfg, dataset_cfg, group, batch, steps)
        print(f"  {model_cfg['name']:<14} step consumes {consume:8.0f} images/s -> loader is "
              f"{rate / consume:6.1f}x faster ({'met' if rate >= 10 * consume else 'NOT met'}: "
              f">= 10x); step waited on input {100 * waited:.2f}% of the epoch")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=50000, help="synthetic ImageNet-64 images")
    p.add_argument("--group", type=int, default=4, help="ranks per group (the rank's share)")
    p.add_argument("--steps", type=int, default=20, help="training steps timed per model")
    args = p.parse_args()
    import tensorflow as tf
    print(f"{os.cpu_count()} CPUs, TensorFlow {tf.__version__}, one simulated rank of a "
          f"group of {args.group}")
    if os.path.isdir(data.FASHION_MNIST_DIR):
        cfg = {"name": "h5", "path": fashion_mnist_file(), "train_examples": None,
               "test_examples": None, "augment": True, "flip": False}
        report("fashion-mnist (60000, 28x28x1, in memory)", cfg,
               [{"name": "conv4"}, {"name": "lenet_300_100"}], args.group, 128, args.steps * 5)
    t = time.perf_counter()
    path = imagenet_file(args.images)
    print(f"synthetic imagenet64: {h5format.describe(path)['train_total']} images in {path} "
          f"(ready in {time.perf_counter() - t:.0f}s)")
    cfg = {"name": "imagenet64", "path": path, "train_examples": None, "test_examples": None,
           "augment": True, "in_memory": False}
    report(f"imagenet64 ({args.images}, 64x64x3, streamed from disk)", cfg,
           [{"name": "mobilenet_v2", "alpha": 1.0, "stem_stride": 1}], args.group, 256, args.steps)


if __name__ == "__main__":
    main()
