"""MPI tests under real mpiexec at 2 and 4 ranks (the scripts work at any size)."""
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from lth_mpi import data
from mpi_helpers import ROOT, TINY, lth, mpiexec, needs_horovod

needs_data = pytest.mark.skipif(not os.path.isdir(data.FASHION_MNIST_DIR),
                                reason="dataset-fashion-mnist not installed (run/install.sh)")

SIZES = [2, 4]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("script", ["check_broadcast.py", "check_groups.py", "check_queue.py"])
def test_collectives(n, script):
    proc = mpiexec(n, [f"tests/mpi/{script}"], timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK" in proc.stdout


@pytest.mark.parametrize("n, way", [(2, "mpi"), pytest.param(4, "horovod", marks=needs_horovod)])
def test_data_parallel_group_of_two(n, way):
    """n=2: one group of 2; n=4: two independent groups of 2 at once (each way of averaging
    the gradients: the groups' default on CPUs, and Horovod's)."""
    proc = mpiexec(n, ["tests/mpi/check_data_parallel.py", "2", way], timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "data parallel OK" in proc.stdout


@needs_data
@needs_horovod
def test_batchnorm_group_is_one_model_and_sync_matches_one_rank(tmp_path):
    """A ResNet (depth 8, 7 BatchNorm layers) on real Fashion-MNIST, a group of 2 against one
    rank.

    The script asserts that both ranks end every epoch with bit-identical weights and moving
    statistics, with and without sync. Tolerance for "the same curve": a group of 2 with
    synchronized BatchNorm computes the one-rank step on the same global batches, so float
    summation order is the only difference; its size on this very trajectory is measured by a
    third run that changes nothing but that order (one rank, each batch's examples reversed).
    The group must stay within 3x that reference (measured ratio 1.0); without sync it is well
    outside (each rank normalizes by its half-batch statistics: measured about 19x), which
    shows the check has teeth. (Without XLA: the same semantics at a third of the time.)
    """
    out = tmp_path / "bn.npz"
    proc = mpiexec(2, ["tests/mpi/check_batchnorm.py", str(out)], timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    f = np.load(out)

    def distance(a, b):
        wa, wb = f[f"{a}_weights"], f[f"{b}_weights"]
        return np.linalg.norm(wa - wb) / np.linalg.norm(wb)
    reference = distance("g1rev_sync1", "g1_sync1")
    assert 0 < reference < 0.01, reference            # order matters, but only a little
    assert distance("g2_sync1", "g1_sync1") <= 3 * reference
    assert distance("g2_sync0", "g1_sync0") >= 3 * reference
    loss = f["g1_sync1_loss"]
    np.testing.assert_allclose(f["g2_sync1_loss"], loss, rtol=3 * reference)
    # the data-parallel dense phase's collectives train the same network as Horovod's
    assert distance("world_sync1", "g1_sync1") <= 3 * reference


@needs_data
def test_batchnorm_regime_is_the_same_for_dense_and_cells_by_default_and_recorded(tmp_path):
    """A BatchNorm model in groups of 2 through `lth-mpi run`: by default (auto) the cells
    synchronize BatchNorm, so they normalize over the dense net's batch; with sync off they
    normalize over half of it, the file says so, and the analysis refuses to compare the
    regimes unless told to, and then says so at the top."""
    small = ["--set", "model.name=resnet", "--set", "model.depth=8", "--set", "model.width=4",
             "--set", "train.epochs=1", "--set", "prune.sparsities=[0.5]",
             "--set", "rewind.points=[0]", "--set", "controls=[]", "--set", "parallel.group_size=2"]
    regimes = {}
    for sync in ("auto", "false"):
        out = str(tmp_path / f"{sync}.h5")
        proc = lth(2, TINY, "--output", out, *small, "--set", f"train.sync_batchnorm={sync}")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        with h5py.File(out, "r") as f:
            regimes[sync] = json.loads(f.attrs["batchnorm_examples"])

    def report(name, *extra):
        return subprocess.run([sys.executable, "-m", "analysis", "report",
                               str(tmp_path / f"{name}.h5"), "--out", str(tmp_path / name),
                               *extra], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert regimes == {"auto": {"dense": 100, "cells": 100}, "false": {"dense": 100, "cells": 50}}
    fair = report("auto")
    assert fair.returncode == 0, fair.stderr
    assert "BatchNorm statistics over 100 examples in every training" in \
        open(tmp_path / "auto" / "summary.md").read()
    mixed = report("false")
    errors = [l for l in mixed.stderr.splitlines() if l.startswith("analysis: error:")]
    assert mixed.returncode == 2 and len(errors) == 1, mixed.stderr
    assert "the dense network took BatchNorm statistics over 100 examples, the cells over 50" \
        in errors[0]
    marked = report("false", "--mixed-batchnorm")
    assert marked.returncode == 0, marked.stderr
    assert "**BatchNorm regimes differ**" in open(tmp_path / "false" / "summary.md").read()
