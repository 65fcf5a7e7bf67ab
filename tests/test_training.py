"""The masked trainer on one process (no MPI): exact zeros, fresh optimizer per cell,
mixed precision."""
import keras
import numpy as np
import pytest

from lth_mpi import config, data, pruning, training


def setup(**train):
    cfg = config.load(raw={"model": {"name": "lenet_300_100"}, "prune": {"sparsities": [0.8]},
                           "dataset": {"name": "synthetic", "train_examples": 640,
                                       "test_examples": 200},
                           "train": {"batch_size": 32, "learning_rate": 0.01, **train},
                           "parallel": {"group_size": 1}})
    ds = data.load(cfg["dataset"])
    model, idx = training.build_for(cfg, ds, seed=0)
    trainer = training.Trainer(model, ds, cfg["train"], idx)
    start = trainer.weights()
    masks = list(pruning.magnitude_masks(training.prunable_weights(model, idx, start), 0.8).values())
    return cfg, trainer, idx, start, masks


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_pruned_weights_exactly_zero_and_kept_ones_learn(optimizer):
    cfg, trainer, idx, start, masks = setup(optimizer=optimizer, weight_decay=0.01)
    trainer.load(start, masks)
    for i, m in zip(idx, masks):            # loading applies the mask at once
        assert np.all(trainer.weights()[i][~m] == 0)
    hist = trainer.fit(3, seed=1)
    w = trainer.weights()
    for i, m in zip(idx, masks):
        assert np.all(w[i][~m] == 0)
        assert np.mean(w[i][m] != start[i][m]) > 0.9
    assert hist["test_accuracy"][-1] > 0.5 and list(hist["iteration"]) == [20, 40, 60]
    assert hist["train_loss"][-1] < hist["train_loss"][0]


def test_load_resets_optimizer_state():
    cfg, trainer, idx, start, masks = setup()
    trainer.load(start, masks)
    trainer.fit(1, seed=1)
    first = trainer.weights()
    trainer.load(start, masks)              # a new cell from the same start
    assert int(trainer.optimizer.iterations.numpy()) == 0
    trainer.fit(1, seed=1)
    for a, b in zip(first, trainer.weights()):   # same start, same order: same result
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_mixed_precision_computes_in_16_bits_keeps_float32_weights(precision):
    try:
        cfg, trainer, idx, start, masks = setup(mixed_precision=precision)
        assert trainer.model.layers[-1].compute_dtype == precision
        assert all(w.dtype == np.float32 for w in start)
        # loss scaling for float16 only: bfloat16 has float32's exponent range
        assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer) == \
            (precision == "float16")
        trainer.load(start, masks)
        hist = trainer.fit(2, seed=1)
        assert np.isfinite(hist["train_loss"]).all() and hist["test_accuracy"][-1] > 0.5
        for i, m in zip(idx, masks):
            assert np.all(trainer.weights()[i][~m] == 0)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_divergence_stops_training_at_the_epoch_it_happens():
    cfg, trainer, idx, start, masks = setup(optimizer="sgd", learning_rate=50.0)
    trainer.load(start)
    hist = trainer.fit(4, seed=1)
    assert hist["diverged"] >= 1 and len(hist["epoch"]) == hist["diverged"] < 4   # stopped early
    assert not np.isfinite(hist["train_loss"][-1]) or not trainer.finite()
    assert np.isnan(hist["test_accuracy"][-1]) and np.isnan(hist["val_accuracy"][-1])
    cfg, trainer, idx, start, masks = setup(optimizer="sgd", learning_rate=0.01)
    trainer.load(start)
    hist = trainer.fit(2, seed=1)
    assert hist["diverged"] == 0 and trainer.finite() and len(hist["epoch"]) == 2
