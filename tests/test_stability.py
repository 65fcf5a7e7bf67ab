"""Stability analysis (issue 25): the path's math (pure), the pair as a cell kind and
rewind.points: auto through real mpiexec, TensorFlow and HDF5 on real Fashion-MNIST."""
import os

import numpy as np
import pytest

import h5py

from lth_mpi import config, data, results, stability, status
from lth_mpi.comm.wire import CellResult
from mpi_helpers import lth


# --- the math ----------------------------------------------------------------------------

def test_path_points_are_evenly_spaced_ends_included():
    a = stability.alphas(11)
    assert a[0] == 0.0 and a[-1] == 1.0 and len(a) == 11
    np.testing.assert_allclose(np.diff(a), 0.1)


def test_interpolation_is_exact_at_the_ends_and_between_equal_weights():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=1000).astype(np.float32), rng.normal(size=1000).astype(np.float32)
    assert stability.interpolate(a, b, 0.0) is a
    assert stability.interpolate(a, b, 1.0) is b
    np.testing.assert_allclose(stability.interpolate(a, b, 0.5), (a + b) / 2, atol=1e-6)
    for alpha in stability.alphas(11):       # the same network twice: every point is it
        np.testing.assert_array_equal(stability.interpolate(a, a.copy(), alpha), a)


def test_instability_is_the_path_error_above_the_mean_of_the_ends():
    assert stability.instability([0.8, 0.7, 0.9]) == pytest.approx(0.3 - 0.15)
    assert stability.instability([0.9, 0.9, 0.9]) == 0.0
    # a path above both ends: the max error is an end's, minus the ends' mean
    assert stability.instability([0.8, 0.85, 0.9]) == pytest.approx(0.2 - 0.15)
    assert np.isnan(stability.instability([0.8, np.nan, 0.9]))     # an empty split
    assert np.isnan(stability.instability([]))


def test_the_ladder_is_fractions_of_training_without_duplicates():
    assert stability.ladder(stability.LADDER, 10000) == [0, 25, 50, 100, 200, 400, 800]
    assert stability.ladder(stability.LADDER, 100) == [0, 1, 2, 4, 8]    # short: merged
    assert stability.ladder([0.0, 0.5, 0.9999], 10) == [0, 5, 9]       # never the end


def test_choose_takes_the_earliest_stable_point_or_else_the_last():
    assert stability.choose([0.1, 0.03, 0.01, 0.001], 0.02) == (2, True)
    assert stability.choose([0.1, np.nan, 0.019], 0.02) == (2, True)
    assert stability.choose([0.1, np.nan, 0.05], 0.02) == (2, False)
    assert stability.choose([0.0], 0.02) == (0, True)


def test_evidence_takes_the_worst_seed_on_validation_when_there_is_one():
    pairs = [{"rewind": r, "replicate": k, "instability": t, "instability_val": v}
             for r, k, t, v in [(0, 0, 0.01, 0.05), (0, 1, 0.01, 0.01),
                                (1, 0, 0.5, 0.01), (1, 1, 0.5, 0.015)]]
    e = stability.evidence(pairs, [0, 10], 0.02, 2)
    assert e["chosen_on"] == "val" and e["instability"] == [0.05, 0.015]
    assert (e["chosen_index"], e["chosen_point"], e["stable"]) == (1, 10, True)
    no_val = [dict(p, instability_val=float("nan")) for p in pairs]
    e = stability.evidence(no_val, [0, 10], 0.02, 2)
    assert e["chosen_on"] == "test" and (e["chosen_point"], e["stable"]) == (0, True)
    # a seed's pair missing (or diverged: NaN) makes the point not stable
    e = stability.evidence(pairs[:1] + pairs[2:], [0, 10], 0.02, 2)
    assert np.isnan(e["instability"][0]) and e["chosen_point"] == 10


def test_a_pair_travels_on_the_wire_with_its_path():
    hist = {k: np.arange(3.0) for k in ("epoch", "iteration", "train_loss", "test_loss",
                                        "test_accuracy", "val_loss", "val_accuracy",
                                        "epoch_seconds")}
    hist["diverged"] = 0
    pair = np.arange(4 + 11 * 5, dtype=np.float64) / 7
    back = CellResult.decode(CellResult(3, 1, 0.0, 1.0, hist, mask=np.arange(5, dtype=np.uint8),
                                        weights=np.ones(4, np.float32), pair=pair).encode())
    np.testing.assert_array_equal(back.pair, pair)
    np.testing.assert_array_equal(back.mask, np.arange(5))
    np.testing.assert_array_equal(back.weights, np.ones(4))
    assert CellResult.decode(CellResult(3, 1, 0.0, 1.0, hist).encode()).pair.size == 0


# --- config --------------------------------------------------------------------------------

def load(**overrides):
    raw = {"model": {"name": "lenet_300_100"}, "prune": {"sparsities": [0.5]}}
    return config.load(raw=raw, overrides=[f"{k}={v}" for k, v in overrides.items()])


@pytest.mark.parametrize("overrides, message", [
    ({"rewind.points": "auto"}, "rewind.points: auto chooses an iteration; set rewind.unit: "
                                "iteration"),
    ({"rewind.points": "later"}, "rewind.points: expected a list of points or auto, got 'later'"),
    ({"stability.path_points": 5}, "stability.path_points: must be >= 11, got 5"),
    ({"stability.threshold": 0}, r"stability.threshold: must be in \(0, 1\), got 0.0"),
    ({"stability.ladder": "[0, 0.5, 0.2]"}, "stability.ladder: expected increasing fractions"),
    ({"stability.ladder": "[0, 1.5]"}, r"stability.ladder: 1.5 is not a fraction of training"),
    ({"stability.ladder": "[]"}, "stability.ladder: needs at least one candidate"),
    ({"stability.data_order": "mixed"}, "stability.data_order: 'mixed' is not one of"),
    ({"controls": "[stability]", "prune.mode": "gradual", "prune.end": 10},
     "controls: stability is not defined for prune.mode: gradual"),
])
def test_bad_stability_settings_get_one_line(overrides, message):
    with pytest.raises(config.ConfigError, match=message):
        load(**overrides)


def test_auto_rewinds_to_the_ladder_once_bound_and_to_the_choice_after():
    s = config.resolve(load(**{"rewind.points": "auto", "rewind.unit": "iteration"}))
    assert s.auto and s.points == ()
    assert s.rewound_to(40).points == (40,)


# --- through the real stack: mpiexec, TensorFlow, HDF5, Fashion-MNIST ------------------------

needs_data = pytest.mark.skipif(not os.path.isdir(data.FASHION_MNIST_DIR),
                                reason="dataset-fashion-mnist not installed (run/install.sh)")

PAIR = """
name: pair
model: {name: lenet_300_100}
dataset: {name: fashion_mnist, train_examples: 2000, test_examples: 1000,
          validation_examples: 1000}
train: {epochs: 2, batch_size: 100, learning_rate: 0.002}
rewind: {unit: epoch, points: [0, 1]}
prune: {sparsities: [0.8], scope: layerwise}
controls: [stability]
parallel: {group_size: 1}
"""


def search(tmp_path, text, name, *extra, n=2):
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(text)
    out = str(tmp_path / f"{name}.h5")
    proc = lth(n, str(cfg), "--output", out, *extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return results.read(out), proc


def pairs(contents):
    return {c["name"]: c for c in contents.cells + contents.ladder if c["control"] == "stability"}


@needs_data
def test_a_pair_stores_both_ends_its_path_and_its_instability(tmp_path):
    """Two copies from the same rewound weights in different data orders: the path's ends
    are the copies' own accuracies exactly (LeNet has no BatchNorm to re-estimate), its
    points are evenly spaced, the instability is the path's, and the copies differ."""
    got, proc = search(tmp_path, PAIR, "pair")
    found = pairs(got)
    assert sorted(found) == ["m00_r0_stability", "m00_r1_stability"]
    assert "instability" in proc.stdout
    for c in found.values():
        path = c["path"]
        assert path.shape == (11, len(stability.PATH_COLUMNS))
        np.testing.assert_allclose(path[:, 0], np.linspace(0, 1, 11))
        assert path[0, 1] == c["final_test_accuracy"] and path[0, 3] == c["final_val_accuracy"]
        assert path[-1, 1] == c["copy_b_final_test_accuracy"]
        assert path[-1, 3] == c["copy_b_final_val_accuracy"]
        assert c["instability"] == stability.instability(path[:, 1])
        assert c["instability_val"] == stability.instability(path[:, 3])
        assert c["data_order"] == "different"
        assert not np.array_equal(path[0, 1:], path[-1, 1:])     # two different trainings
    # the ticket and the pair's first copy start alike but see different data orders
    assert got.cells[0]["name"] == "m00_r0_none"


@needs_data
def test_the_same_data_order_on_both_copies_gives_instability_exactly_zero(tmp_path):
    got, _ = search(tmp_path, PAIR, "same", "--set", "stability.data_order=same")
    for c in pairs(got).values():
        assert c["instability"] == 0.0 and c["instability_val"] == 0.0
        assert c["copy_b_final_test_accuracy"] == c["final_test_accuracy"]
        assert (c["path"][:, 1] == c["path"][0, 1]).all()
        assert c["data_order"] == "same"


@needs_data
def test_a_pair_is_the_same_whichever_layout_trains_it(tmp_path):
    """P-invariance: one rank against two groups of one, bit for bit (a pair's data orders
    are keyed by the cell); G: a group of two sums in another order, so within a point."""
    one, _ = search(tmp_path, PAIR, "one", n=1)
    two, _ = search(tmp_path, PAIR, "two")
    g2, _ = search(tmp_path, PAIR, "g2", "--set", "parallel.group_size=2")
    for name, c in pairs(one).items():
        np.testing.assert_array_equal(pairs(two)[name]["path"], c["path"])
        np.testing.assert_allclose(pairs(g2)[name]["path"][:, 1], c["path"][:, 1], atol=0.01)


@needs_data
def test_an_iterative_pair_trains_its_levels_ticket_mask(tmp_path):
    """Under IMP the pair follows its level's ticket (the second pass), with its mask."""
    text = PAIR.replace("prune: {sparsities: [0.8], scope: layerwise}",
                        "prune: {mode: iterative, levels: 2, rate: 0.5}")
    got, _ = search(tmp_path, text, "imp")
    with h5py.File(got.path) as f:
        for name in ("m00_r1_stability", "m01_r0_stability"):
            ticket = name.replace("stability", "none")
            np.testing.assert_array_equal(f["cells"][name]["mask"][()],
                                          f["cells"][ticket]["mask"][()])
    assert all(np.isfinite(c["instability"]) for c in pairs(got).values())


AUTO = PAIR.replace("rewind: {unit: epoch, points: [0, 1]}",
                    "rewind: {unit: iteration, points: auto}").replace(
    "controls: [stability]", "stability: {ladder: [0, 0.1, 0.25]}")


@needs_data
def test_auto_runs_the_dense_nets_pairs_and_rewinds_the_grid_to_the_earliest_stable(
        tmp_path):
    got, proc = search(tmp_path, AUTO, "auto")
    ladder = [0, 4, 10]      # 0, 10% and 25% of 2 epochs of 20 steps
    assert sorted(c["rewind_point"] for c in got.ladder) == ladder
    assert [c["name"] for c in got.ladder] == ["dense_r0_stability", "dense_r1_stability",
                                               "dense_r2_stability"]
    choice = got.choice
    values = [next(c["instability_val"] for c in got.ladder if c["rewind"] == r)
              for r in range(3)]
    assert choice["ladder"] == ladder and choice["chosen_on"] == "val"
    assert choice["instability"] == values
    index, stable = stability.choose(values, 0.02)
    assert (choice["chosen_index"], choice["stable"]) == (index, stable)
    assert got.points == [ladder[index]] == [choice["chosen_point"]]
    assert [c["rewind_point"] for c in got.cells] == [ladder[index]]
    assert f"auto chose iteration {ladder[index]}" in proc.stdout
    assert (f"rewind.points: auto: 3 dense stability pairs done; chose iteration "
            f"{ladder[index]}") in status.report(got.path)
    with h5py.File(got.path) as f:          # every candidate's checkpoint is kept
        assert list(f["checkpoints"].attrs["points"]) == ladder


@needs_data
def test_auto_with_no_stable_candidate_takes_the_latest_and_says_so(tmp_path):
    """A threshold nothing passes: the last candidate, recorded as not stable; the grid's
    ticket there starts from that checkpoint (trains the remaining iterations)."""
    got, proc = search(tmp_path, AUTO, "none", "--set", "stability.threshold=0.000001",
                       "--set", "controls=[stability]")
    assert got.choice["stable"] is False or got.choice["stable"] == 0
    assert got.choice["chosen_point"] == 10 and got.points == [10]
    assert "no candidate was stable" in proc.stdout
    for c in got.cells:
        assert c["rewind_point"] == 10 and c["iteration"][0] == 20    # epoch 1 ends at 20


@needs_data
def test_a_batchnorm_pair_in_a_group_of_two_reestimates_and_is_exact_with_one_order(tmp_path):
    """A ResNet (BatchNorm re-estimated at every point, over the group's global batches):
    one data order on both copies gives exactly 0, as for a network without BatchNorm. The
    re-estimation takes at most an epoch's batches."""
    text = PAIR.replace("model: {name: lenet_300_100}",
                        "model: {name: resnet, depth: 8, width: 4}").replace(
        "train_examples: 2000", "train_examples: 800").replace(
        "rewind: {unit: epoch, points: [0, 1]}", "rewind: {unit: epoch, points: [1]}").replace(
        "group_size: 1", "group_size: 2")
    same, _ = search(tmp_path, text, "bn_same", "--set", "stability.data_order=same",
                     "--set", "stability.batchnorm_batches=3")
    (c,) = pairs(same).values()
    assert c["instability"] == 0.0 and c["batchnorm_batches"] == 3
    got, _ = search(tmp_path, text, "bn")     # 10 batches asked, an epoch has 8: 8
    (c,) = pairs(got).values()
    assert np.isfinite(c["instability"]) and c["path"][0, 2] != c["path"][-1, 2]   # losses
    assert c["batchnorm_batches"] == 8


@needs_data
def test_the_report_plots_instability_and_tables_stable_against_matching(tmp_path):
    """auto and a pair per ticket in one search: the report's figure, auto's choice, and a
    row per pair whose numbers are the file's (stable: below the threshold on validation;
    matching: the ticket's final validation accuracy within 1 point of the dense net's)."""
    from analysis.report import report
    text = AUTO.replace("stability: {ladder: [0, 0.1, 0.25]}",
                        "stability: {ladder: [0, 0.1, 0.25]}\ncontrols: [stability]").replace(
        "sparsities: [0.8]", "sparsities: [0.5, 0.95]")
    got, _ = search(tmp_path, text, "both")
    out = report(got.path, str(tmp_path / "rep"))
    summary = open(out["summary"]).read()
    assert os.path.exists(tmp_path / "rep" / "instability.png")
    assert "## Stability" in summary
    assert f"rewind.points: auto chose iteration {got.choice['chosen_point']}" in summary
    dense_val = results.read(got.path).dense_runs[0]["val_accuracy"][-1]
    rows = out["stability"]
    assert [(r["mask"], r["point"]) for r in rows] == [(0, got.points[0]), (1, got.points[0])]
    for r in rows:
        (pair,) = [c for c in got.cells if (c["mask"], c["control"]) == (r["mask"], "stability")]
        (ticket,) = [c for c in got.cells if (c["mask"], c["control"]) == (r["mask"], "none")]
        assert r["instability"] == pair["instability"]
        assert r["classified_on"] == pair["instability_val"]
        assert r["stable"] == (pair["instability_val"] < 0.02)
        assert r["accuracy"] == ticket["final_test_accuracy"]
        assert r["matching"] == (ticket["final_val_accuracy"] >= dense_val - 0.01)
    agree = sum(r["stable"] == r["matching"] for r in rows)
    assert f"stable and matching agree for {agree} of 2" in summary


@needs_data
def test_auto_stopped_inside_a_pairs_write_resumes_to_the_same_choice_and_numbers(tmp_path):
    """Killed inside the second dense pair's write (its attributes half there), --resume
    keeps the first, redoes the second, and ends with the numbers of a run never stopped."""
    reference, _ = search(tmp_path, AUTO, "ref")
    cfg = tmp_path / "auto.yaml"
    cfg.write_text(AUTO)
    out = str(tmp_path / "stopped.h5")
    proc = lth(2, str(cfg), "--output", out, env={"LTH_FAULT": "exit:cell-attrs:2"})
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "running" and len(f["stability"]) == 2
        assert sum("complete" in g.attrs for g in f["stability"].values()) == 1
        assert "chosen_point" not in f["stability"].attrs
    assert "auto: 1 dense stability pairs done; no point chosen yet" in status.report(out)
    proc = lth(2, str(cfg), "--output", out, "--resume")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = results.read(out)
    assert got.choice == reference.choice
    for name, c in pairs(reference).items():
        np.testing.assert_array_equal(pairs(got)[name]["path"], c["path"])
    assert [c["final_test_accuracy"] for c in got.cells] == \
        [c["final_test_accuracy"] for c in reference.cells]


@needs_data
def test_auto_with_seeds_takes_the_worst_seed_and_iterative_chains_start_there(tmp_path):
    """Two seeds: each seed's dense net has its pairs; a point is stable only if it is in
    both; under IMP the chains then run from the chosen point."""
    text = AUTO.replace("seed: 0\n", "").replace(
        "prune: {sparsities: [0.8], scope: layerwise}",
        "prune: {mode: iterative, levels: 2, rate: 0.5}") + "seeds: [0, 1]\n"
    got, _ = search(tmp_path, text, "seeds", "--set", "stability.threshold=0.004")
    assert sorted(c["name"] for c in got.ladder) == sorted(
        f"dense_r{r}_stability_s{k}" for r in range(3) for k in range(2))
    worst = [max(c["instability_val"] for c in got.ladder if c["rewind"] == r)
             for r in range(3)]
    assert got.choice["instability"] == worst
    index, stable = stability.choose(worst, 0.004)
    assert got.choice["chosen_index"] == index and bool(got.choice["stable"]) == stable
    assert {c["rewind_point"] for c in got.cells} == {[0, 4, 10][index]}
    assert sorted(c["name"] for c in got.cells) == sorted(
        f"m0{m}_r0_none_s{k}" for m in range(2) for k in range(2))
