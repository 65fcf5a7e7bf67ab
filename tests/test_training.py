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
    model, idx = training.build_for(config.resolve(cfg), ds, seed=0)
    trainer = training.Trainer(model, ds, config.resolve(cfg).train, idx)
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
    for a, b in zip(first, trainer.weights()):   # same start, same order: the same bits
        np.testing.assert_array_equal(a, b)


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


def test_many_steps_per_call_train_exactly_as_one_call_per_step():
    """A rank alone runs CHECK_EVERY steps per compiled call (an in-graph loop); a callback
    between steps forces one call per step. Same batches, same order: the same bits."""
    out = []
    for hook in (None, lambda step: None):
        cfg, trainer, idx, start, masks = setup(batch_size=24)     # 26 steps per epoch
        trainer.load(start, masks)
        hist = trainer.fit(2, seed=1, on_step=hook)
        out.append((trainer.weights(), hist["train_loss"], hist["test_accuracy"]))
    assert trainer.steps_per_epoch % training.CHECK_EVERY != 0     # a short last chunk too
    np.testing.assert_array_equal(out[0][1], out[1][1])
    np.testing.assert_array_equal(out[0][2], out[1][2])
    for a, b in zip(out[0][0], out[1][0]):
        np.testing.assert_array_equal(a, b)


def test_xla_auto_compiles_dense_models_and_leaves_convolutions_to_onednn_on_a_cpu():
    """train.xla: auto (the default) on this CPU: XLA for LeNet, not for a ResNet or for a
    convolution inside a nested model; true and false are obeyed as given."""
    import tensorflow as tf
    from lth_mpi import models
    assert not tf.config.list_logical_devices("GPU")
    lenet = models.build("lenet_300_100", (28, 28, 1), 10, {}, 0)
    resnet = models.build("resnet", (28, 28, 1), 10, {"depth": 8, "width": 4}, 0)
    inner = keras.Sequential([keras.layers.DepthwiseConv2D(3), keras.layers.Flatten()])
    inputs = keras.Input((8, 8, 1))
    nested = keras.Model(inputs, keras.layers.Dense(10)(inner(inputs)))
    assert config.load(raw={"model": {"name": "lenet_300_100"},
                            "prune": {"sparsities": [0.5]}})["train"]["xla"] == "auto"
    assert training.use_xla("auto", lenet) is True
    assert training.use_xla("auto", resnet) is False
    assert training.use_xla("auto", nested) is False
    assert training.use_xla(True, resnet) is True and training.use_xla(False, lenet) is False


def test_an_evaluation_pass_is_one_call_and_sums_as_batch_by_batch(monkeypatch):
    """200 test examples in batches of 64: three full batches held as one tensor, evaluated
    in one compiled call, and the ragged 8 apart; the sums equal streaming batch by batch."""
    cfg, trainer, idx, start, masks = setup()
    trainer.load(start, masks)
    trainer.fit(1, seed=1)
    calls = []
    held_all = trainer._eval_all
    monkeypatch.setattr(trainer, "_eval_all", lambda xs, ys: calls.append(xs.shape) or
                        held_all(xs, ys))
    held = [trainer.evaluate(64) for _ in range(2)]
    assert calls == [(3, 64, 28, 28, 1)] * 2            # read once, one call per pass
    monkeypatch.setattr(training, "EVAL_HELD", 0)       # too large to hold: streamed
    trainer._held.clear()
    streamed = trainer.evaluate(64)
    assert len(calls) == 2 and held == [streamed] * 2   # bit for bit
    assert trainer.evaluate(1000) == trainer.evaluate(1000)   # one ragged batch only


def test_batchnorm_reestimation_is_the_plain_average_over_training_batches():
    """Interpolated weights carry no valid BatchNorm statistics: reestimate_batchnorm
    recomputes them as the plain average of K training batches' statistics (momentum
    (i-1)/i), touching nothing else and restoring each layer's momentum. Checked on the
    first BatchNorm layer, whose batch statistics depend only on the convolution before it."""
    cfg = config.load(raw={"model": {"name": "resnet", "width": 4, "depth": 8},
                           "prune": {"sparsities": [0.5]},
                           "dataset": {"name": "synthetic", "train_examples": 640,
                                       "test_examples": 100},
                           "train": {"batch_size": 32}, "parallel": {"group_size": 1}})
    s = config.resolve(cfg)
    ds = data.load(cfg["dataset"])
    model, idx = training.build_for(s, ds, seed=0)
    trainer = training.Trainer(model, ds, s.train, idx)
    layers = training.batchnorm_layers(model)
    first = layers[0]
    for layer in layers:     # statistics as wrong as an interpolation's could be
        layer.moving_mean.assign(layer.moving_mean + 5.0)
    others = {w.path: w.numpy().copy() for w in model.weights if "moving" not in w.path}
    trainer.reestimate_batchnorm(seed=7, batches=4)
    feature = keras.Model(model.inputs, first.input)
    means, variances = [], []
    for x, _ in ds.train_batches(7, 4, 32):
        h = np.asarray(feature(trainer._normalize(x)), np.float64)
        means.append(h.mean(axis=(0, 1, 2)))
        variances.append(h.var(axis=(0, 1, 2)))
    np.testing.assert_allclose(np.asarray(first.moving_mean), np.mean(means, 0), atol=1e-5)
    np.testing.assert_allclose(np.asarray(first.moving_variance), np.mean(variances, 0),
                               rtol=1e-4, atol=1e-6)
    assert all(layer.momentum == 0.99 for layer in layers)
    for w in model.weights:
        if "moving" not in w.path:
            np.testing.assert_array_equal(np.asarray(w), others[w.path])


def test_each_node_local_rank_claims_its_own_gpu_of_those_slurm_made_visible():
    from lth_mpi.training import gpu_claim
    # --gpus-per-node=2: every task of a node sees both; two ranks (two groups) never share
    assert [gpu_claim(r, "0,1") for r in range(2)] == ["0", "1"]
    assert [gpu_claim(r, "2,3") for r in range(4)] == ["2", "3", "2", "3"]   # more ranks than GPUs
    # --gpus-per-task=1 binds one device to each task: that one
    assert gpu_claim(1, "1") == "1" and gpu_claim(0, " 0 ") == "0"
    assert gpu_claim(0, None) == "" and gpu_claim(3, "") == ""
