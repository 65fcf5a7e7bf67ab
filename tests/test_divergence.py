"""Divergence is a result: through mpiexec on real Fashion-MNIST, with real NaNs.

SGD with momentum 0.9 at learning rate 1.0 makes LeNet-300-100 diverge (loss and weights NaN
in the first epoch) when trained dense or nearly dense, while a ticket with 2% of the weights
stays finite: a sparse network has fewer weights to blow up (its Hessian's top eigenvalue is
at most the dense one's), so the same step size is stable for it.
"""
import os

import h5py
import numpy as np
import pytest

from lth_mpi import config, data, results
from mpi_helpers import ROOT, lth

pytestmark = pytest.mark.skipif(not os.path.isdir(data.FASHION_MNIST_DIR),
                                reason="dataset-fashion-mnist not installed (run/install.sh)")
RAW = {"name": "divergence", "model": {"name": "lenet_300_100"},
       "dataset": {"name": "fashion_mnist", "train_examples": 4000, "test_examples": 1000,
                   "validation_examples": 1000},
       "train": {"epochs": 2, "batch_size": 100, "optimizer": "sgd", "learning_rate": 0.05},
       "rewind": {"points": [0]}, "prune": {"sparsities": [0.2, 0.5, 0.98]},
       "parallel": {"group_size": 2}}
DIVERGING = ["--set", "train.learning_rate=1.0"]


def write_config(tmp_path, raw=RAW):
    path = tmp_path / "div.yaml"
    path.write_text(config.yaml.safe_dump(raw))
    return str(path)


def cells_at_a_diverging_rate(cfg_path: str, out: str):
    """The dense phase of a stable run, then its cells retrained at a diverging rate: the
    file of the first run is given the second config (as if it had been written by it) and
    resumed, so the masks come from a dense net that trained. Returns the resumed run."""
    proc = lth(2, cfg_path, "--output", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    hot = config.load(cfg_path, ["train.learning_rate=1.0", f"output={out}"])
    with h5py.File(out, "a") as f:
        del f["cells"]
        f.create_group("cells")
        f.attrs["config"], f.attrs["config_hash"] = config.dump(hot), results.config_hash(hot)
    proc = lth(2, cfg_path, "--output", out, "--resume", *DIVERGING)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_a_diverged_dense_network_stops_the_job_before_the_masks(tmp_path):
    out = str(tmp_path / "d.h5")
    proc = lth(2, write_config(tmp_path), "--output", out, *DIVERGING)
    assert proc.returncode != 0
    line = "lth-mpi: error: train: the dense network diverged in epoch 1"
    assert proc.stderr.count(line) == 2, proc.stderr                  # on every rank
    assert "Traceback" not in proc.stderr
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "failed" and "diverged" in f.attrs["error"]
        assert "masks" not in f and "dense" not in f


def test_diverged_cells_are_results_and_the_grid_goes_on(tmp_path):
    """The grid retrained at a diverging rate from a dense net that trained: the cells
    diverge or not by their sparsity alone."""
    cfg_path = write_config(tmp_path)
    out = str(tmp_path / "c.h5")
    proc = cells_at_a_diverging_rate(cfg_path, out)
    assert proc.stdout.count("DIVERGED in epoch 1") == 2
    cells = {c["sparsity"]: c for c in results.read_cells(out)}
    for s in (0.2, 0.5):
        c = cells[s]
        assert c["status"] == "diverged" and c["diverged_epoch"] == 1 and len(c["epoch"]) == 1
        assert np.isnan(c["final_test_accuracy"]) and c["best_iteration"] == -1
    sparse = cells[0.98]
    assert sparse["status"] == "trained" and sparse["diverged_epoch"] == 0
    assert np.isfinite(sparse["train_loss"]).all() and list(sparse["epoch"]) == [1, 2]
    assert "div@1" in results.accuracy_table(out)
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "complete"

    import subprocess
    import sys
    rep = subprocess.run([sys.executable, "-m", "analysis", "report", out, "--out",
                          str(tmp_path / "rep")], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    summary = (tmp_path / "rep" / "summary.md").read_text()
    assert "2 cell(s) diverged" in summary and "m00_r0_none (epoch 1)" in summary
    # their NaN curves do not move the selection onto the test set (issue 23 part 1)
    assert "chosen on the validation split" in summary
    assert "2 diverged cell(s) ignored by the selection." in summary
    assert "| diverged |" in summary


def test_a_diverged_level_ends_its_chain_and_resume_keeps_it_ended(tmp_path):
    """Iterative pruning, the levels retrained at a diverging rate from a dense net that
    trained. Level 1 (80% of the weights) diverges, so its
    chain has nothing to prune from: levels 2 and 3 are never trained, nor are their
    controls (the ticket never had their masks), and the file is complete. A second
    --resume finds nothing to do and leaves the chain ended."""
    cfg_path = write_config(tmp_path, {**RAW, "prune": {"mode": "iterative", "levels": 3},
                                       "controls": ["random_reinit"],
                                       "parallel": {"group_size": 1}})
    out = str(tmp_path / "c.h5")
    cells_at_a_diverging_rate(cfg_path, out)
    cells = {c["name"]: c for c in results.read_cells(out)}
    assert cells["m00_r0_none"]["status"] == "diverged"
    assert sorted(cells) == ["m00_r0_none", "m00_r0_random_reinit"]
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "complete"
        assert "mask_next" not in f["cells/m00_r0_none"]       # nothing pruned from NaNs
        np.testing.assert_array_equal(f["cells/m00_r0_random_reinit/mask"][()],
                                      f["cells/m00_r0_none/mask"][()])
    again = lth(2, cfg_path, "--output", out, "--resume", *DIVERGING)
    assert again.returncode == 0, again.stdout + again.stderr
    assert not [l for l in again.stdout.splitlines() if l.startswith("[")]   # nothing trained
    assert sorted(c["name"] for c in results.read_cells(out)) == sorted(cells)
