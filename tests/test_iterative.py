"""Iterative magnitude pruning: the pruning step's invariants (pure), and chains of levels
through the real pipeline (mpiexec, real Fashion-MNIST, HDF5), stopped mid-chain and resumed."""
import dataclasses
import json
import os

import h5py
import numpy as np
import pytest

from lth_mpi import config, data, modes, plan, pruning, results
from lth_mpi.comm import wire
from lth_mpi.modes.iterative import Levels
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


def test_levels_prune_to_each_levels_exact_sparsity():
    cfg = config.load(raw={"model": {"name": "x"}, "prune": {"mode": "iterative", "levels": 3},
                           "parallel": {"group_size": 1}})
    w = weights()
    levels = Levels(cfg["prune"], list(w), [a.shape for a in w.values()], {"out": 0.1})
    total = sum(a.size for a in w.values())
    mask = levels.first(list(w.values()))
    for level, seed in enumerate((None, 7, 8)):
        if seed is not None:
            mask = levels.next(list(weights(seed).values()), mask)
        assert 1 - sum(m.sum() for m in mask) / total == levels.sparsities()[level]


def test_config_keys_of_each_mode_are_refused_in_the_other():
    base = {"model": {"name": "lenet_300_100"}, "parallel": {"group_size": 1}}
    cfg = config.load(raw={**base, "prune": {"mode": "iterative", "levels": 4}})
    assert cfg["prune"]["rate"] == 0.2 and modes.of(cfg).name == "iterative"
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
    s = config.resolve(config.load(raw={"model": {"name": "lenet_300_100"},
                                        "prune": {"mode": "iterative", "levels": 4}}))
    grid = plan.cells(4, 2, ["random_reinit", "random_mask"], rewound=s.mode.rewound_controls)
    (first, chained), (later, independent) = plan.passes(grid, s)
    assert chained and not independent
    # the controls follow each rewind point's ticket chain: they run after the chains
    for ctl in ("random_reinit", "random_mask"):
        assert sorted((c.mask, c.rewind) for c in later if c.control == ctl) == \
            [(m, r) for m in range(4) for r in (0, 1)]
    assert len(later) == 16 and {c.control for c in first} == {"none"}
    chains = plan.chains(first)
    assert [c[0].chain for c in chains] == [(0, "none", -1), (1, "none", -1)]
    for groups in (1, 2, 3):
        dealt = plan.assign(first, groups, "chains")
        assert sorted(c.id for g in dealt for c in g) == [c.id for c in first]
        for g in dealt:
            for chain in {c.chain for c in g}:
                assert [c.mask for c in g if c.chain == chain] == [0, 1, 2, 3]
        # the followers are independent cells: dealt round robin, not as chains
        dealt = plan.assign(later, groups, plan.assignment(
            dataclasses.replace(s, assign="masks"), chained=False))
        assert sorted(c.id for g in dealt for c in g) == sorted(c.id for c in later)
        assert all(dealt)   # every group gets some: they are not one chain per rewind


def test_a_cell_result_survives_its_encoding():
    hist = {k: np.arange(3, dtype=np.float64) * (i + 1) for i, k in enumerate(results.CURVES)}
    hist["diverged"] = 2
    sent = wire.CellResult(7, 1, 10.5, 12.25, hist, np.array([255, 0, 3], np.uint8),
                              np.array([1], np.uint8))
    got = wire.CellResult.decode(sent.encode())
    assert (got.cell, got.group, got.t_start, got.t_end) == (7, 1, 10.5, 12.25)
    assert got.history["diverged"] == 2
    for k in results.CURVES:
        np.testing.assert_array_equal(got.history[k], hist[k])
    np.testing.assert_array_equal(got.mask, sent.mask)
    np.testing.assert_array_equal(got.mask_next, sent.mask_next)
    plain = wire.CellResult.decode(wire.CellResult(0, 0, 0, 0, hist).encode())
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
    assert len(cells) == 3 * 6      # 3 levels x 2 rewinds x (ticket, reinit, random_mask)
    masks = masks_of(out)
    with h5py.File(out, "r") as f:
        levels = f["masks"].attrs["sparsity_target"]
        shapes = [tuple(s) for s in json.loads(f["weights"].attrs["shapes"])]
        prunable = json.loads(f["weights"].attrs["prunable"])
        first = f["masks"][0]
        assert f["masks"].shape[0] == 1                 # level 1 only; the rest per cell
    total = sum(int(np.prod(shapes[i])) for i in prunable)
    for chain in ("r0_none", "r1_none", "r0_random_reinit", "r1_random_reinit",
                  "r0_random_mask", "r1_random_mask"):
        prev = None
        for m in range(3):
            packed, following, level, realized, _ = masks[f"m{m:02d}_{chain}"]
            bits = np.unpackbits(packed, count=total).astype(bool)
            assert level == m + 1
            assert 1 - bits.sum() / total == realized == levels[m]   # exact, every chain
            if prev is not None:
                if "random_mask" not in chain:     # a fresh shuffle at every level
                    assert not (bits & ~prev[0]).any()                   # nested
                if chain.endswith("none"):
                    np.testing.assert_array_equal(packed, prev[1])       # = what it pruned
            prev = (bits, following)
        assert following is None                                         # last level
    # every level's per-layer counts from the definition (layer-wise: each layer keeps its
    # count minus rint(rate x count), the output layer at 0.1), not from the file's targets
    kernel_shapes = [shapes[i] for i in prunable]
    counts = [int(np.prod(s)) for s in kernel_shapes]
    for m in range(3):
        counts = [k - int(np.rint((0.1 if i == 4 else 0.2) * k)) for i, k in zip(prunable, counts)]
        for chain in ("r0_none", "r1_none", "r0_random_reinit", "r1_random_mask"):
            got = pruning.unpack_masks(masks[f"m{m:02d}_{chain}"][0], kernel_shapes)
            assert [int(g.sum()) for g in got] == counts, (m, chain)
    # level 1 of the magnitude chains is the dense phase's mask; random_mask's is not
    np.testing.assert_array_equal(masks["m00_r0_none"][0], first)
    assert (masks["m00_r0_random_mask"][0] != first).any()
    # Frankle & Carbin's control: at every level, the ticket's own mask (its rewind point's
    # chain), from a fresh initialization
    for m in range(3):
        for r in (0, 1):
            np.testing.assert_array_equal(masks[f"m{m:02d}_r{r}_random_reinit"][0],
                                          masks[f"m{m:02d}_r{r}_none"][0])
            assert masks[f"m{m:02d}_r{r}_random_reinit"][1] is None     # it prunes nothing
            assert cells[f"m{m:02d}_r{r}_random_reinit"]["rewind_point"] == [0, 1][r]
    # the next level's mask is the magnitude pruning of this level's trained weights, checked
    # from its definition: in each layer, of the weights this level kept, the rate (the
    # output layer: 0.1) with the smallest |trained weight| go, the rest stay
    offsets = np.cumsum([0] + [int(np.prod(s)) for s in shapes])
    kernel_shapes = [shapes[i] for i in prunable]
    for chain in ("r0_none", "r1_none"):
        for m in range(2):
            packed, following, _, _, flat = masks[f"m{m:02d}_{chain}"]
            now = pruning.unpack_masks(packed, kernel_shapes)
            nxt = pruning.unpack_masks(following, kernel_shapes)
            for i, a, b in zip(prunable, now, nxt):
                w = np.abs(flat[offsets[i]:offsets[i + 1]].reshape(shapes[i]))
                rate = 0.1 if i == 4 else 0.2            # LeNet's output kernel is weight 4
                assert not (b & ~a).any()
                assert b.sum() == a.sum() - int(np.rint(rate * a.sum()))
                assert w[a & ~b].max() <= w[b].min()
    # chains from different rewind points prune from different weights after level 1
    assert (masks["m01_r0_none"][0] != masks["m01_r1_none"][0]).any()
    # random_mask: the ticket's level mask shuffled within each layer (layer-wise pruning
    # keeps the same counts at every rewind point, so the draws agree there too)
    for m in range(3):
        ticket = pruning.unpack_masks(masks[f"m{m:02d}_r0_none"][0], kernel_shapes)
        shuffled = pruning.unpack_masks(masks[f"m{m:02d}_r0_random_mask"][0], kernel_shapes)
        assert [int(k.sum()) for k in shuffled] == [int(k.sum()) for k in ticket]
        assert any((a != b).any() for a, b in zip(shuffled, ticket))
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
                 "r0_random_mask", "r1_random_mask")]
    assert any(0 < k < 3 for k in per_chain), kept
    proc = lth(2, TINY, "--output", out, *IMP, "--resume")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "dense phase and 4 of 18 cells already done" in proc.stdout
    assert_same_cells(out, {c["name"]: c for c in results.read_cells(reference)})
    ref, got = masks_of(reference), masks_of(out)
    for name in ref:
        np.testing.assert_array_equal(got[name][0], ref[name][0])
        np.testing.assert_array_equal(got[name][4], ref[name][4])     # weights, bit for bit


@needs_data
def test_global_random_mask_keeps_the_tickets_counts_per_layer_at_every_level(tmp_path):
    """Global pruning moves weights between layers level by level; the random control must
    keep the ticket's count in each layer at each level, as it does under one-shot."""
    out = str(tmp_path / "g.h5")
    proc = lth(2, TINY, "--output", out, "--set", "prune.mode=iterative",
               "--set", "prune.sparsities=null", "--set", "prune.levels=3",
               "--set", "prune.rate=0.5", "--set", "prune.scope=global",
               "--set", "rewind.points=[0]", "--set", "controls=[random_mask]",
               "--set", "parallel.group_size=1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with h5py.File(out, "r") as f:
        shapes = [tuple(s) for s in json.loads(f["weights"].attrs["shapes"])]
        kernel_shapes = [shapes[i] for i in json.loads(f["weights"].attrs["prunable"])]
        counts = {n: [int(k.sum()) for k in pruning.unpack_masks(g["mask"][()], kernel_shapes)]
                  for n, g in f["cells"].items()}
    for m in range(3):
        assert counts[f"m{m:02d}_r0_random_mask"] == counts[f"m{m:02d}_r0_none"], m
    # and global pruning did move the per-layer fractions away from uniform
    fracs = [k / int(np.prod(s)) for k, s in zip(counts["m02_r0_none"], kernel_shapes)]
    assert max(fracs) - min(fracs) > 0.05


@needs_data
def test_iterative_in_groups_of_two_is_the_same_whichever_layout(tmp_path):
    """IMP with its controls in data-parallel groups of 2: one group (-n 2) or two groups
    (-n 4, chains and controls dealt between them) train every cell to the same bits; a
    cell's numbers never depend on which group, or which ranks, trained it."""
    imp = ["--set", "prune.mode=iterative", "--set", "prune.sparsities=null",
           "--set", "prune.levels=2", "--set", "controls=[random_reinit, random_mask]",
           "--set", "parallel.group_size=2", "--set", "parallel.threads=1",
           "--set", "dataset.train_examples=2000", "--set", "results.keep_weights=all"]
    runs = {}
    for n in (2, 4):
        out = str(tmp_path / f"n{n}.h5")
        proc = lth(n, TINY, "--output", out, *imp)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        runs[n] = out
    with h5py.File(runs[4], "r") as f:    # both groups did train
        assert {int(g.attrs["group"]) for g in f["cells"].values()} == {0, 1}
    assert_same_cells(runs[4], {c["name"]: c for c in results.read_cells(runs[2])})
    a, b = masks_of(runs[2]), masks_of(runs[4])
    assert sorted(a) == sorted(b) and len(a) == 2 * 2 * 3
    for name in a:
        np.testing.assert_array_equal(a[name][0], b[name][0])      # masks
        np.testing.assert_array_equal(a[name][4], b[name][4])      # trained weights


@needs_data
def test_a_file_whose_controls_pruned_their_own_masks_is_not_resumed(tmp_path, imp_run):
    """Files from before the controls followed the ticket chains (a random_reinit chain
    m.._init_random_reinit, pruning its own masks) read as they are, but resuming one would
    mix two kinds of control in one grid: refused in one line on every rank."""
    import shutil
    reference, _ = imp_run
    old = str(tmp_path / "old.h5")
    shutil.copy(reference, old)
    with h5py.File(old, "a") as f:
        f["cells"].move("m02_r0_random_reinit", "m02_init_random_reinit")
    proc = lth(2, TINY, "--output", old, *IMP, "--resume")
    assert proc.returncode != 0
    for rank in proc.ranks:
        lines = rank["stderr"].strip().splitlines()
        assert len(lines) == 1 and "pruned masks of their own" in lines[0], rank["stderr"]
    assert len(results.read_cells(old)) == 18          # still reads
