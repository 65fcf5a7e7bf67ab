"""`seeds: [...]` replicates: one grid, every seed's dense phase and cells, means and spreads.

Through the real pipeline (mpiexec, real Fashion-MNIST, HDF5): replicate k must be exactly the
search `seed: seeds[k]` runs alone, the dense phases run on different ranks side by side, a
stop inside the second seed's dense write resumes to the same numbers, and the analysis
averages replicates and judges tickets against the dense networks' spread.
"""
import os

import h5py
import numpy as np
import pytest

from analysis import tickets
from analysis.report import report
from lth_mpi import config, data, plan, results
from mpi_helpers import TINY, assert_same_cells, lth

SMALL = ["--set", "controls=[random_reinit]", "--set", "rewind.points=[0]",
         "--set", "parallel.group_size=1"]
SEEDS = ["--set", "seeds=[0, 1]"]


def test_seeds_config_is_checked():
    base = {"model": {"name": "lenet_300_100"}, "prune": {"sparsities": [0.5]},
            "parallel": {"group_size": 1}}
    assert config.load(raw={**base, "seeds": [3, 1]})["seeds"] == [3, 1]
    for extra, message in (({"seeds": [0, 1], "seed": 5}, "seeds: give seed (one search) or "
                                                            "seeds (replicates), not both"),
                           ({"seeds": []}, "seeds: needs at least one seed"),
                           ({"seeds": [1, 1]}, "seeds: duplicate values in [1, 1]"),
                           ({"seeds": [-1]}, "seeds: -1 is not an integer in [0, 2^32)"),
                           ({"seeds": [0.5]}, "seeds: 0.5 is not an integer")):
        with pytest.raises(config.ConfigError) as exc:
            config.load(raw={**base, **extra})
        assert message in str(exc.value)


def test_replicate_grid_names_and_chains():
    one = plan.cells(2, 1, ["random_reinit"])
    many = plan.cells(2, 1, ["random_reinit"], replicates=3)
    assert [c.name for c in many[:4]] == [c.name + "_s0" for c in one]
    assert [c.id for c in many] == list(range(12)) and many[-1].name == "m01_init_random_reinit_s2"
    assert len(plan.chains(many)) == 3 * len(plan.chains(one))


def test_replicate_means_average_and_spread():
    def cell(rep, m, acc):
        return {"name": f"m{m:02d}_r0_none_s{rep}", "id": rep * 2 + m, "mask": m, "rewind": 0,
                "control": "none", "replicate": rep, "status": "trained", "sparsity": 0.5,
                "final_test_accuracy": acc, "final_val_accuracy": acc - 0.01,
                "best_test_accuracy": acc, "best_val_accuracy": acc,
                **{k: np.array([acc, acc]) for k in results.CURVES}}
    cells = [cell(0, 0, 0.80), cell(1, 0, 0.84), cell(0, 1, 0.70), cell(1, 1, 0.60)]
    cells[3]["status"] = "diverged"
    means = tickets.replicate_means(cells)
    assert [c["name"] for c in means] == ["m00_r0_none", "m01_r0_none"]
    assert means[0]["final_test_accuracy"] == pytest.approx(0.82)
    assert means[0]["final_test_accuracy_sd"] == pytest.approx(0.02)
    assert means[0]["replicates"] == 2 and means[1]["replicates"] == 1   # diverged left out
    np.testing.assert_allclose(means[0]["test_accuracy"], [0.82, 0.82])
    runs = [{"test_accuracy": np.array([0.5, 0.80])}, {"test_accuracy": np.array([0.5, 0.84])}]
    assert tickets.dense_spread(runs) == pytest.approx((0.82, 0.02))


needs_data = pytest.mark.skipif(not os.path.isdir(data.FASHION_MNIST_DIR),
                                reason="dataset-fashion-mnist not installed (run/install.sh)")


@pytest.fixture(scope="module")
def replicated(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("seeds") / "r.h5")
    proc = lth(2, TINY, "--output", out, *SMALL, *SEEDS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc


@needs_data
def test_each_replicate_is_the_search_its_seed_runs_alone(replicated, tmp_path):
    out, proc = replicated
    assert "dense test accuracy:" in proc.stdout and "±" in proc.stdout
    runs = {c["name"]: c for c in results.read_cells(out)}
    assert len(runs) == 8 and {c["seed"] for c in runs.values()} == {0, 1}
    with h5py.File(out, "r") as f:
        assert sorted(f["replicates"]) == ["0", "1"] and f.attrs["dense_complete"] == 1
        dense = [f[f"replicates/{k}/dense/test_accuracy"][-1] for k in "01"]
        import json
        ranks = {r["rank"]: r for r in json.loads(f.attrs["ranks"])}
        rows = f["timings/run0"][()]
    # the two dense phases ran on ranks 0 and 1 side by side
    phases = results.PHASES
    dense_rows = rows[rows[:, 1] == phases.index("dense")]
    assert sorted(dense_rows[:, 0].astype(int)) == [0, 1] and len(ranks) == 2
    (a0, b0), (a1, b1) = dense_rows[:, 3:5]
    assert min(b0, b1) > max(a0, a1)                    # they overlap in time
    alone = str(tmp_path / "alone.h5")
    proc = lth(2, TINY, "--output", alone, *SMALL, "--set", "seed=1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    single = {c["name"]: c for c in results.read_cells(alone)}
    with h5py.File(alone, "r") as f:
        assert f["dense/test_accuracy"][-1] == dense[1]
    for name, c in single.items():
        for k in ("train_loss", "test_accuracy", "val_accuracy"):
            np.testing.assert_array_equal(runs[name + "_s1"][k], c[k])


@needs_data
def test_a_stop_in_the_second_seeds_dense_write_resumes_identically(replicated, tmp_path):
    reference, _ = replicated
    out = str(tmp_path / "r.h5")
    proc = lth(2, TINY, "--output", out, *SMALL, *SEEDS,
               env={"LTH_FAULT": "exit:dense-masks:2"})
    assert proc.returncode != 0
    with h5py.File(out, "r") as f:
        assert f["replicates/0"].attrs["dense_complete"] == 1
        assert not f["replicates/1"].attrs.get("dense_complete") and not f.attrs.get("dense_complete")
    proc = lth(2, TINY, "--output", out, *SMALL, *SEEDS, "--resume")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "dense phases of 1 of 2 seeds and 0 of 8 cells already done" in proc.stdout
    assert_same_cells(out, {c["name"]: c for c in results.read_cells(reference)})


@needs_data
def test_the_report_averages_replicates_and_judges_by_the_dense_spread(replicated, tmp_path):
    out, _ = replicated
    got = report(out, str(tmp_path / "rep"))
    res = got["results"]
    assert len(res.runs) == 8 and len(res.cells) == 4 and not res.missing
    assert all(c["replicates"] == 2 for c in res.cells)
    text = open(got["summary"]).read()
    spread = tickets.dense_spread(res.dense_runs, res.selection)[1]
    assert f"at most {100 * spread:.3g} percentage points (the dense networks' spread" in text
    assert "over the 2 seeds [0, 1] the final test accuracy is" in text and " ± " in text
    table = results.accuracy_table(out)
    assert table.startswith("dense test accuracy:") and "±" in table.splitlines()[2]
