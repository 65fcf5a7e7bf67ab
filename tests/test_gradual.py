"""Gradual magnitude pruning: the cubic schedule (pure), the masks a real trainer carries step
by step, and the ResNet-20 config through mpiexec on converted CIFAR-10-format data."""
import os

import h5py
import json
import numpy as np
import pytest

from lth_mpi import config, data, modes, pruning, results, training
from lth_mpi.modes.gradual import Schedule
from mpi_helpers import ROOT, lth

PRUNE = {"initial": 0.1, "begin": 20, "end": 120, "frequency": 25}


def test_the_schedule_is_zhu_and_gupta_cubic():
    s = Schedule(PRUNE, 0.9)
    assert s.sparsity(0) == s.sparsity(20) == 0.1 and s.sparsity(120) == s.sparsity(500) == 0.9
    t = np.arange(20, 121)
    values = np.array([s.sparsity(int(i)) for i in t])
    np.testing.assert_allclose(values, 0.9 + (0.1 - 0.9) * (1 - (t - 20) / 100) ** 3)
    assert (np.diff(values) >= 0).all() and np.diff(values)[0] > np.diff(values)[-1]
    assert [i for i in range(200) if s.due(i)] == [20, 45, 70, 95, 120]
    odd = Schedule({**PRUNE, "frequency": 30}, 0.9)
    assert [i for i in range(200) if odd.due(i)] == [20, 50, 80, 110, 120]   # end always
    assert s.at_start(0) is None and s.at_start(20) == 0.1 and s.at_start(70) == s.sparsity(70)
    assert Schedule({**PRUNE, "initial": 0.0}, 0.9).at_start(20) is None


@pytest.mark.parametrize("scope", pruning.SCOPES)
def test_prune_to_reaches_the_exact_count_and_never_revives(scope):
    rng = np.random.default_rng(0)
    w = {"a": rng.normal(size=(30, 20)), "b": rng.normal(size=(20, 7))}
    masks = {n: np.ones(a.shape, bool) for n, a in w.items()}
    sizes = {n: a.size for n, a in w.items()}
    for s in (0.1, 0.35, 0.6, 0.6, 0.9):
        scores = {n: rng.normal(size=a.shape) for n, a in w.items()}
        new = pruning.prune_to(scores, masks, s, scope)
        for n in w:
            assert not (new[n] & ~masks[n]).any()
        gone = 1 - sum(m.sum() for m in new.values()) / sum(sizes.values())
        assert gone == pytest.approx(pruning.exact_sparsity(sizes, s, scope), abs=1e-12)
        masks = new
    shot = pruning.magnitude_masks(w, 0.9, scope)
    assert pruning.realized_sparsity(shot) == pytest.approx(
        pruning.exact_sparsity(sizes, 0.9, scope), abs=1e-12)


def test_a_trainer_carries_the_schedule_step_by_step():
    """Real TensorFlow training: after every scheduled step the trainer's masks have exactly
    the schedule's sparsity, pruned weights are exactly zero, and masks only shrink."""
    cfg = config.load(raw={"model": {"name": "lenet_300_100"},
                           "dataset": {"name": "synthetic"},
                           "train": {"epochs": 2, "batch_size": 50},
                           "prune": {"mode": "gradual", "sparsities": [0.8], "begin": 10,
                                     "end": 60, "frequency": 7, "initial": 0.2},
                           "parallel": {"group_size": 1}})
    ds = data.load(cfg["dataset"])
    model, idx = training.build_for(config.resolve(cfg), ds, 0)
    trainer = training.Trainer(model, ds, config.resolve(cfg).train, idx)
    sizes = {str(i): int(np.prod(model.weights[i].shape)) for i in idx}
    schedule = Schedule(cfg["prune"], 0.8)
    pruner = modes.of(cfg).pruner(0.8, trainer, 0)
    seen, previous = [], [np.ones(model.weights[i].shape, bool) for i in idx]

    def on_step(step):
        pruner(step)
        masks = trainer.current_masks()
        gone = 1 - sum(int(m.sum()) for m in masks) / sum(sizes.values())
        expected = max([schedule.sparsity(t) for t in range(step + 1) if schedule.due(t)],
                       default=0.0)
        assert gone == pytest.approx(pruning.exact_sparsity(sizes, expected), abs=1e-12)
        for m, p, v in zip(masks, previous, trainer.masked):
            assert not (m & ~p).any() and (np.asarray(v)[~m] == 0).all()
        previous[:] = masks
        seen.append(gone)
    assert trainer.steps_per_epoch * 2 >= 60
    trainer.load([np.asarray(w) for w in model.get_weights()])
    trainer.fit(2, seed=1, on_step=on_step)
    assert seen[-1] == pytest.approx(pruning.exact_sparsity(sizes, 0.8), abs=1e-12)
    assert seen[8] == 0.0 and seen[9] > 0        # nothing before `begin` (after step 10)


needs_data = pytest.mark.skipif(not os.path.isdir(data.FASHION_MNIST_DIR),
                                reason="dataset-fashion-mnist not installed (run/install.sh)")


def test_resnet20_gradual_config_on_converted_cifar10_format(tmp_path):
    """The seed's setting, run/configs/cifar10_resnet20_gradual.yaml, on small converted
    CIFAR-10 data: a group of 2 prunes resnet20 to 60% and 70% while it trains."""
    from data_prep import cifar
    from lth_mpi.data import h5format
    from test_data_prep import cifar_arrays, write_cifar
    write_cifar(tmp_path / "src", "cifar10", "binary", cifar_arrays(600, 10, 3),
                cifar_arrays(200, 10, 4))
    out = cifar.convert(str(tmp_path / "src"), "cifar10")
    h5format.write_file(str(tmp_path / "c10.h5"), "cifar10", out["splits"], out["class_names"],
                        out["source"], out["sources"])
    res = str(tmp_path / "r.h5")
    proc = lth(2, os.path.join(ROOT, "run", "configs", "cifar10_resnet20_gradual.yaml"),
               "--output", res, "--set", f"dataset.path={tmp_path / 'c10.h5'}",
               "--set", "dataset.validation_examples=100", "--set", "model.width=4",
               "--set", "train.epochs=2", "--set", "train.batch_size=100",
               "--set", "prune.begin=2", "--set", "prune.end=8", "--set", "prune.frequency=2",
               "--set", "controls=[]", "--set", "results.keep_weights=all", timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cells = {c["name"]: c for c in results.read_cells(res)}
    assert sorted(cells) == ["m00_r0_none", "m01_r0_none"]
    with h5py.File(res, "r") as f:
        shapes = [tuple(s) for s in json.loads(f["weights"].attrs["shapes"])]
        prunable = json.loads(f["weights"].attrs["prunable"])
        names = json.loads(f["weights"].attrs["names"])
        assert f["masks"].shape[0] == 0                       # no masks before training
        stored = {n: (g["mask"][()], g["weights"][()]) for n, g in f["cells"].items()}
    assert not any(names[i].startswith(("stem_conv", "out")) for i in prunable)   # excluded
    sizes = {str(i): int(np.prod(shapes[i])) for i in prunable}
    offsets = np.cumsum([0] + [int(np.prod(s)) for s in shapes])
    for name, target in (("m00_r0_none", 0.6), ("m01_r0_none", 0.7)):
        packed, flat = stored[name]
        masks = pruning.unpack_masks(packed, [shapes[i] for i in prunable])
        gone = 1 - sum(int(m.sum()) for m in masks) / sum(sizes.values())
        # exact at the end: round(s * n) of the pruned kernels
        assert gone == pytest.approx(pruning.exact_sparsity(sizes, target, "global"), abs=1e-12)
        assert abs(gone - target) <= 0.5 / sum(sizes.values()) + 1e-12
        assert cells[name]["sparsity_realized"] == pytest.approx(gone, abs=1e-12)
        for i, m in zip(prunable, masks):
            assert (flat[offsets[i]:offsets[i + 1]].reshape(shapes[i])[~m] == 0).all()
        assert np.isfinite(cells[name]["test_accuracy"]).all()


def test_gradual_config_errors_name_the_key():
    base = {"model": {"name": "lenet_300_100"}, "parallel": {"group_size": 1}}
    for prune, controls, message in (
            ({"mode": "gradual", "sparsities": [0.5]}, [], "prune.end: required with prune.mode: gradual"),
            ({"mode": "gradual", "sparsities": [0.5], "end": 10, "begin": 10}, [],
             "prune.end: must be after prune.begin (10), got 10"),
            ({"mode": "gradual", "sparsities": [0.5], "end": 10, "frequency": 0}, [],
             "prune.frequency: must be >= 1"),
            ({"mode": "gradual", "sparsities": [0.5, 0.3], "end": 10, "initial": 0.4}, [],
             "prune.initial: must be in [0, the smallest final sparsity 0.3)"),
            ({"mode": "gradual", "sparsities": [0.5], "end": 10}, ["random_mask"],
             "controls: random_mask is not defined for prune.mode: gradual"),
            ({"sparsities": [0.5], "end": 10}, [], "prune.end: only used with prune.mode: gradual"),
            ({"mode": "iterative", "levels": 2, "frequency": 10}, [],
             "prune.frequency: only used with prune.mode: gradual")):
        with pytest.raises(config.ConfigError) as exc:
            config.load(raw={**base, "prune": prune, "controls": controls})
        assert message in str(exc.value)
