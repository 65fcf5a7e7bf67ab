"""Iterative magnitude pruning: the pruning step's invariants (pure), and chains of levels
through the real pipeline (mpiexec, real Fashion-MNIST, HDF5), stopped mid-chain and resumed."""
import json
import os

import h5py
import numpy as np
import pytest

from lth_mpi import config, data, imp, plan, pruning, results
from mpi_helpers import TINY, assert_same_cells, lth


def weights(seed=0):
    rng = np.random.default_rng(seed)
    return {"a": rng.normal(size=(40, 30)), "b": rng.normal(size=(30, 10)) * 3,
            "out": rng.normal(size=(10, 5))}


@pytest.mark.parametrize("scope", pruning.SCOPES)
def test_a_step_prunes_the_rate_of_what_remains_and_never_revives(scope):
    w = weights()
    masks = {n: np.ones(a.shape, bool) for n, a in w.items()}
    rates = {"out": 0.1}
    counts = []
    for level in range(6):
        scores = weights(level + 1)        # new weights every level, as after retraining
        new = pruning.prune_step(scores, masks, 0.2, scope, rates)
        for n in w:
            assert not (new[n] & ~masks[n]).any()      # nested: pruned stays pruned
        kept_out = masks["out"].sum()
        assert new["out"].sum() == kept_out - pruning.n_to_prune(int(kept_out), 0.1)
        if scope == "layerwise":
            for n in ("a", "b"):
                kept = masks[n].sum()
                assert new[n].sum() == kept - pruning.n_to_prune(int(kept), 0.2)
        else:
            kept = masks["a"].sum() + masks["b"].sum()
            assert new["a"].sum() + new["b"].sum() == kept - pruning.n_to_prune(int(kept), 0.2)
        # what goes is the smallest of what was kept, by the new scores
        for n in w:
            gone = masks[n] & ~new[n]
            if scope == "layerwise" and gone.any():
                assert np.abs(scores[n][gone]).max() <= np.abs(scores[n][new[n]]).min()
        masks = new
        counts.append(1 - sum(m.sum() for m in masks.values()) / sum(a.size for a in w.values()))
    sizes = {n: a.size for n, a in w.items()}
    assert pruning.level_sparsities(sizes, 6, 0.2, scope, rates) == pytest.approx(counts, abs=0)


@pytest.mark.parametrize("scope", pruning.SCOPES)
def test_the_first_step_from_dense_is_the_one_shot_mask(scope):
    w = weights()
    ones = {n: np.ones(a.shape, bool) for n, a in w.items()}
    step = pruning.prune_step(w, ones, 0.36, scope)
    shot = pruning.magnitude_masks(w, 0.36, scope)
    for n in w:
        np.testing.assert_array_equal(step[n], shot[n])


def test_levels_random_control_ignores_the_weights_and_keeps_the_counts():
    cfg = config.load(raw={"model": {"name": "x"}, "prune": {"mode": "iterative", "levels": 3},
                           "parallel": {"group_size": 1}})
    w = weights()
    levels = imp.Levels(cfg, list(w), [a.shape for a in w.values()], {"out": 0.1})
    first = levels.first("none", list(w.values()))
    rand_a = levels.first("random_mask", list(weights(5).values()))
    rand_b = levels.first("random_mask", None)
    for a, b, m in zip(rand_a, rand_b, first):
        np.testing.assert_array_equal(a, b)              # the same for every rewind point
    # the ticket's counts in each pool: the output layer alone, the rest as one (global)
    assert rand_a[2].sum() == first[2].sum()
    assert rand_a[0].sum() + rand_a[1].sum() == first[0].sum() + first[1].sum()
    assert any((a != m).any() for a, m in zip(rand_a, first))
    second = levels.next("none", 2, list(weights(7).values()), first)
    total = sum(a.size for a in w.values())
    assert 1 - sum(m.sum() for m in second) / total == levels.sparsities()[1]


def test_config_keys_of_each_mode_are_refused_in_the_other():
    base = {"model": {"name": "lenet_300_100"}, "parallel": {"group_size": 1}}
    cfg = config.load(raw={**base, "prune": {"mode": "iterative", "levels": 4}})
    assert cfg["prune"]["rate"] == 0.2 and config.iterative(cfg)
    bad = [({"mode": "iterative"}, "prune.levels: required with prune.mode: iterative"),
           ({"mode": "iterative", "levels": 3, "sparsities": [0.5]},
            "prune.sparsities: not used with prune.mode: iterative"),
           ({"mode": "iterative", "levels": 0}, "prune.levels: must be >= 1"),
           ({"mode": "iterative", "levels": 3, "rate": 1.0}, "prune.rate: 1.0 is outside (0, 1)"),
           ({"mode": "iterative", "levels": 3, "layer_rates": {"out": 0}},
            "prune.layer_rates.out: 0 is outside (0, 1)"),
           ({"sparsities": [0.5], "levels": 3}, "prune.levels: only used with prune.mode: iterative"),
           ({"sparsities": [0.5], "layer_rates": {"out": 0.1}},
            "prune.layer_rates: only used with prune.mode: iterative"),
           ({"mode": "gradually"}, "prune.mode: 'gradually' is not one of")]
    for prune, message in bad:
        with pytest.raises(config.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            config.load(raw={**base, "prune": prune})


def test_chains_stay_whole_and_in_level_order():
    grid = plan.cells(4, 2, ["random_reinit", "random_mask"])
    chains = plan.chains(grid)
    assert [c[0].chain for c in chains] == [(0, "none", -1), (1, "none", -1),
                                            (-1, "random_reinit", -1), (0, "random_mask", -1),
                                            (1, "random_mask", -1)]
    for groups in (1, 2, 3):
        dealt = plan.assign(grid, groups, "chains")
        assert sorted(c.id for g in dealt for c in g) == [c.id for c in grid]
        for g in dealt:
            for chain in {c.chain for c in g}:
                assert [c.mask for c in g if c.chain == chain] == [0, 1, 2, 3]


def test_a_cell_result_survives_its_encoding():
    hist = {k: np.arange(3, dtype=np.float64) * (i + 1) for i, k in enumerate(results.CURVES)}
    hist["diverged"] = 2
    sent = results.CellResult(7, 1, 10.5, 12.25, hist, np.array([255, 0, 3], np.uint8),
                              np.array([1], np.uint8))
    got = results.CellResult.decode(sent.encode())
    assert (got.cell, got.group, got.t_start, got.t_end) == (7, 1, 10.5, 12.25)
    assert got.history["diverged"] == 2
    for k in results.CURVES:
        np.testing.assert_array_equal(got.history[k], hist[k])
    np.testing.assert_array_equal(got.mask, sent.mask)
    np.testing.assert_array_equal(got.mask_next, sent.mask_next)
    plain = results.CellResult.decode(results.CellResult(0, 0, 0, 0, hist).encode())
    assert plain.mask.size == 0 and plain.mask_next.size == 0


# --- through the real pipeline -------------------------------------------------------------

needs_data = pytest.mark.skipif(not os.path.isdir(data.FASHION_MNIST_DIR),
                                reason="dataset-fashion-mnist not installed (run/install.sh)")
IMP = ["--set", "prune.mode=iterative", "--set", "prune.sparsities=null",
       "--set", "prune.levels=3", "--set", "prune.layer_rates={out: 0.1}",
       "--set", "controls=[random_reinit, random_mask]", "--set", "parallel.group_size=1",
       "--set", "results.keep_weights=all"]


def masks_of(path):
    with h5py.File(path, "r") as f:
        return {n: (g["mask"][()], g["mask_next"][()] if "mask_next" in g else None,
                    g.attrs["level"], g.attrs["sparsity_realized"], g["weights"][()])
                for n, g in f["cells"].items()}


@pytest.fixture(scope="module")
def imp_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("imp") / "r.h5")
    proc = lth(2, TINY, "--output", out, *IMP)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc


@needs_data
def test_iterative_chains_write_each_level_with_its_mask(imp_run):
    out, proc = imp_run
    cells = {c["name"]: c for c in results.read_cells(out)}
    assert len(cells) == 3 * 5      # 3 levels x (2 ticket chains, reinit, 2 random_mask)
    masks = masks_of(out)
    with h5py.File(out, "r") as f:
        levels = f["masks"].attrs["sparsity_target"]
        shapes = [tuple(s) for s in json.loads(f["weights"].attrs["shapes"])]
        prunable = json.loads(f["weights"].attrs["prunable"])
        first = f["masks"][0]
        assert f["masks"].shape[0] == 1                 # level 1 only; the rest per cell
    total = sum(int(np.prod(shapes[i])) for i in prunable)
    for chain in ("r0_none", "r1_none", "init_random_reinit", "r0_random_mask",
                  "r1_random_mask"):
        prev = None
        for m in range(3):
            packed, following, level, realized, _ = masks[f"m{m:02d}_{chain}"]
            bits = np.unpackbits(packed, count=total).astype(bool)
            assert level == m + 1
            assert 1 - bits.sum() / total == realized == levels[m]   # exact, every chain
            if prev is not None:
                assert not (bits & ~prev[0]).any()                       # nested
                np.testing.assert_array_equal(packed, prev[1])           # = what it pruned
            prev = (bits, following)
        assert following is None                                         # last level
    # level 1 of the magnitude chains is the dense phase's mask; random_mask's is not
    np.testing.assert_array_equal(masks["m00_r0_none"][0], first)
    np.testing.assert_array_equal(masks["m00_init_random_reinit"][0], first)
    assert (masks["m00_r0_random_mask"][0] != first).any()
    # the next level's mask is the magnitude pruning of this level's trained weights
    with h5py.File(out, "r") as f:
        cfg = config.yaml.safe_load(f.attrs["config"])
    names = [f"k{i}" for i in prunable]
    kernel_shapes = [shapes[i] for i in prunable]
    levels = imp.Levels(cfg, names, kernel_shapes,
                        {"k4": 0.1})          # LeNet's output kernel is weight 4
    offsets = np.cumsum([0] + [int(np.prod(s)) for s in shapes])
    for chain in ("r0_none", "r1_none", "init_random_reinit"):
        for m in range(2):
            packed, following, _, _, flat = masks[f"m{m:02d}_{chain}"]
            trained = [flat[offsets[i]:offsets[i + 1]].reshape(shapes[i]) for i in prunable]
            mask = pruning.unpack_masks(packed, kernel_shapes)
            np.testing.assert_array_equal(
                pruning.pack_masks(levels.next("none", m + 2, trained, mask)), following)
    # chains from different rewind points prune from different weights after level 1
    assert (masks["m01_r0_none"][0] != masks["m01_r1_none"][0]).any()
    # random masks do not depend on training: the same at every rewind point
    for m in range(3):
        np.testing.assert_array_equal(masks[f"m{m:02d}_r0_random_mask"][0],
                                      masks[f"m{m:02d}_r1_random_mask"][0])
    assert "level  sparsity  remain" in proc.stdout


@needs_data
def test_a_chain_stopped_mid_level_resumes_from_its_last_finished_level(tmp_path, imp_run):
    reference, _ = imp_run
    out = str(tmp_path / "r.h5")
    # rank 0 dies inside the 5th cell's write: its chain has finished levels behind it
    proc = lth(2, TINY, "--output", out, *IMP, env={"LTH_FAULT": "exit:cell-attrs:5"})
    assert proc.returncode != 0
    kept = {c["name"] for c in results.read_cells(out)}
    assert len(kept) == 4
    # some chain stopped part-way: resume must continue it from its level's mask_next
    per_chain = [sum(n.endswith(c) for n in kept) for c in ("r0_none", "r1_none",
                 "init_random_reinit", "r0_random_mask", "r1_random_mask")]
    assert any(0 < k < 3 for k in per_chain), kept
    proc = lth(2, TINY, "--output", out, *IMP, "--resume")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "dense phase and 4 of 15 cells already done" in proc.stdout
    assert_same_cells(out, {c["name"]: c for c in results.read_cells(reference)})
    ref, got = masks_of(reference), masks_of(out)
    for name in ref:
        np.testing.assert_array_equal(got[name][0], ref[name][0])
        np.testing.assert_array_equal(got[name][4], ref[name][4])     # weights, bit for bit
