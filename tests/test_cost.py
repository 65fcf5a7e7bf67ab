"""The bill before the run: the cost model (pure), and a dry run's bill recorded by the run
that follows it and put beside the run's own time by the report."""
import dataclasses
import os
import subprocess
import sys

import h5py
import json
import pytest

from lth_mpi import config, cost, data, plan, results
from mpi_helpers import ROOT, TINY, lth

M = cost.Measured(setup=5.0, dense_step=0.01, dense_eval=0.5, cell_step=0.02, cell_eval=0.25,
                  steps=10)


def settings(**sections):
    raw = {"model": {"name": "lenet_300_100"}, "prune": {"sparsities": [0.5, 0.9]},
           "rewind": {"points": [0, 1]}, "train": {"epochs": 3},
           "parallel": {"group_size": 1}, **sections}
    s = config.resolve(config.load(raw=raw))
    return dataclasses.replace(s, steps_per_epoch=100, targets=tuple(s.mode.n_masks() * [0.5]))


def test_a_cell_costs_its_steps_and_an_evaluation_per_epoch_it_trains():
    s = settings()
    ticket, late = plan.grid(s)[0], plan.grid(s)[1]       # rewound to epoch 0, and to 1
    assert cost.cell_seconds(ticket, s, 100, M) == pytest.approx(300 * 0.02 + 3 * 0.25)
    assert cost.cell_seconds(late, s, 100, M) == pytest.approx(200 * 0.02 + 2 * 0.25)


def test_a_stability_pair_costs_two_trainings_and_its_path():
    s = settings(controls=["stability"])
    pair = [c for c in plan.grid(s) if c.pair][0]               # rewound to epoch 0
    one = 300 * 0.02 + 3 * 0.25
    path = 11 * (0.25 + 10 * 0.02)     # each point: an evaluation after 10 BatchNorm batches
    assert cost.cell_seconds(pair, s, 100, M) == pytest.approx(2 * one + path)


def test_auto_bills_the_dense_nets_pairs_before_the_grid():
    s = settings(rewind={"points": "auto", "unit": "iteration"},
                 stability={"ladder": [0, 0.1, 0.5]})
    s = dataclasses.replace(s, points=(0, 30, 150))          # the ladder, as bind makes it
    grid = plan.grid(s)
    ladder = [cost.cell_seconds(c, s, 100, M) for c in plan.ladder(s, len(grid))]
    assert len(ladder) == 3 and ladder[0] > ladder[1] > ladder[2]
    plain = cost.grid_seconds(grid, s, 100, M, 1)
    assert cost.estimate(s, grid, 1, M).grid == pytest.approx(plain + sum(ladder))
    assert cost.estimate(s, grid, 1, M).trainings == 1 + len(grid) + 2 * 3
    # three groups: the three pairs side by side, then the two cells side by side
    assert cost.estimate(s, grid, 3, M).grid == pytest.approx(
        max(ladder) + cost.grid_seconds(grid, s, 100, M, 3))


def test_the_queue_is_timed_longest_first_on_the_groups_that_free_up():
    assert cost.makespan([5, 4, 3, 3, 3], 2) == 10      # 5+3+... : LPT, as the queue deals
    assert cost.makespan([1, 1, 1], 5) == 1 and cost.makespan([2, 2], 1) == 4


def test_the_bill_of_a_search():
    s = settings(controls=["random_reinit"])
    grid = plan.grid(s)
    cells = [cost.cell_seconds(c, s, 100, M) for c in grid]
    one = cost.estimate(s, grid, 1, M)
    dense = 3 * (100 * 0.01 + 0.5)
    assert one.trainings == 1 + len(grid) == 7
    assert (one.setup, one.dense) == (5.0, pytest.approx(dense))
    assert one.grid == pytest.approx(sum(cells)) and one.wall == pytest.approx(5 + dense + sum(cells))
    f = (5 + dense) / (5 + dense + sum(cells))
    two = cost.estimate(s, grid, 2, M)
    assert two.serial_fraction == pytest.approx(f) and two.grid < one.grid
    assert two.efficiency() == pytest.approx(1 / (2 * f + 1 - f))
    assert one.efficiency() == pytest.approx(1)
    at90 = two.ranks_at_90
    assert two.efficiency(at90) >= 0.9 > two.efficiency(at90 + 1)
    assert two.rank_hours == pytest.approx(2 * two.wall / 3600)
    # each trainer's first steps (tracing, compiling) once: the dense one, then the groups'
    warm = cost.estimate(s, grid, 2, dataclasses.replace(M, dense_first=2.0, cell_first=3.0))
    assert (warm.dense - two.dense, warm.grid - two.grid) == (pytest.approx(2), pytest.approx(3))
    # replicates' dense phases side by side on the ranks; iterative: the chain, then controls
    assert cost.estimate(settings(seeds=[0, 1, 2]), plan.grid(settings(seeds=[0, 1, 2])), 2,
                         M).dense == pytest.approx(2 * dense)
    imp = settings(prune={"mode": "iterative", "levels": 3}, rewind={"points": [0]},
                   controls=["random_reinit"])
    chain = sum(cost.cell_seconds(c, imp, 100, M) for c in plan.grid(imp)
                if c.control == "none")
    assert cost.estimate(imp, plan.grid(imp), 1, M).grid == pytest.approx(2 * chain)
    # three groups: the one chain, then its three controls side by side
    assert cost.estimate(imp, plan.grid(imp), 3, M).grid == pytest.approx(chain + chain / 3)


@pytest.mark.skipif(not os.path.isdir(data.FASHION_MNIST_DIR),
                    reason="dataset-fashion-mnist not installed (run/install.sh)")
def test_a_dry_runs_bill_is_recorded_by_the_run_and_set_beside_its_time(tmp_path):
    out = str(tmp_path / "r.h5")
    proc = lth(2, TINY, "--output", out, "--set", "parallel.group_size=1", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "bill: 7 trainings; at P = 2 (2 groups of 1)" in proc.stdout, proc.stdout
    assert not os.path.exists(out)
    with open(results.bill_path(out)) as fh:
        bill = json.load(fh)
    assert bill["ranks"] == 2 and bill["wall"] > 0 and bill["measured"]["cell_step"] > 0
    # another config's run ignores it; this one records it
    other = str(tmp_path / "o.h5")
    os.rename(results.bill_path(out), results.bill_path(other))
    proc = lth(2, TINY, "--output", other, "--set", "parallel.group_size=1", "--set", "seed=3")
    assert proc.returncode == 0, proc.stderr
    with h5py.File(other, "r") as f:
        assert "estimate" not in f.attrs
    os.rename(results.bill_path(other), results.bill_path(out))
    proc = lth(2, TINY, "--output", out, "--set", "parallel.group_size=1")
    assert proc.returncode == 0, proc.stderr
    with h5py.File(out, "r") as f:
        assert json.loads(f.attrs["estimate"]) == bill
    rep = subprocess.run([sys.executable, "-m", "analysis", "report", out, "--out",
                          str(tmp_path / "rep")], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert rep.returncode == 0, rep.stderr
    text = (tmp_path / "rep" / "summary.md").read_text()
    assert f"the bill before the run (`--dry-run`, P = 2): {bill['wall']:.0f} s estimated" in text
