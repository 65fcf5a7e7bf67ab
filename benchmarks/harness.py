"""What the benchmarks share: quiet TensorFlow, one parser, threads, the data at hand, a one-rank
config, searches launched like the README's, and timing in alternating rounds.

Timing rule (docs/performance.md): what is compared runs in one process (or one job), in
alternating rounds, and the median round is reported, so the machine's noise hits every side
alike. Benchmarks print ratios; they assert nothing.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parser(doc: str, rounds: int | None = None, threads: bool = False) -> argparse.ArgumentParser:
    """The benchmark's parser (its docstring's first line), with --rounds and --threads."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    if rounds is not None:
        p.add_argument("--rounds", type=int, default=rounds, help="alternating rounds; median")
    if threads:
        p.add_argument("--threads", type=int, default=os.cpu_count(),
                       help="TensorFlow intra-op threads")
    return p


def tf_threads(n: int) -> None:
    """TensorFlow's thread pools, before its first tensor (as training.configure does)."""
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(min(2, n))


def dataset_name() -> str:
    """Real Fashion-MNIST when Debian's package is installed, else synthetic of its shape."""
    from lth_mpi import data
    return "fashion_mnist" if os.path.isdir(data.FASHION_MNIST_DIR) else "synthetic"


def one_rank(model: str, batch: int, dataset: dict | None = None, **train) -> dict:
    """A validated config for one rank training `model` (a group of one)."""
    from lth_mpi import config
    return config.load(raw={"model": {"name": model}, "prune": {"sparsities": [0.5]},
                            "dataset": {"name": dataset_name(), **(dataset or {})},
                            "train": {"batch_size": batch, **train},
                            "parallel": {"group_size": 1}})


def alternate(runs: dict[str, Callable], rounds: int, scale: float = 1.0,
              warm_up: bool = True) -> dict[str, list[float]]:
    """Each run's seconds (times `scale`) per round, the runs taking turns in every round;
    one untimed call each first (tracing, compiling) unless warm_up is False."""
    if warm_up:
        for fn in runs.values():
            fn()
    times = {k: [] for k in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            t = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t) * scale)
    return times


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    return {k: statistics.median(v) for k, v in times.items()}


def search_command(ranks: int, config: str, out: str, *options: str) -> list[str]:
    """`lth-mpi run` of a config (relative to the checkout) on `ranks` ranks, as run/demo.sh
    launches it."""
    return ["bash", os.path.join(ROOT, "run", "mpiexec.sh"), "-n", str(ranks), sys.executable,
            "-m", "mpi4py", "-m", "lth_mpi", "run", os.path.join(ROOT, config), "--output", out,
            *options]
