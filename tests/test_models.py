"""Model registry: names, errors, shapes, and which weights are prunable."""
import numpy as np
import pytest

from lth_mpi import models


def test_unknown_model_lists_valid():
    with pytest.raises(ValueError) as err:
        models.build("vgg99", (28, 28, 1), 10)
    msg = str(err.value)
    for name in ("lenet_300_100", "conv2", "conv4", "conv6", "resnet20", "resnet44", "mobilenet_v2"):
        assert name in msg


def test_unknown_option_lists_valid():
    with pytest.raises(ValueError, match=r"model.alpha: not an option of resnet20 \(valid: width\)"):
        models.check("resnet20", {"alpha": 1.0})


@pytest.mark.parametrize("name,shape,options", [
    ("lenet_300_100", (28, 28, 1), {}),
    ("conv2", (28, 28, 1), {}),
    ("conv4", (32, 32, 3), {}),
    ("conv6", (32, 32, 3), {}),
    ("resnet20", (32, 32, 3), {"width": 4}),
    ("resnet", (32, 32, 3), {"depth": 8, "width": 4}),
    ("mobilenet_v2", (28, 28, 1), {"alpha": 0.35}),
    ("mobilenet_v2", (64, 64, 3), {"alpha": 0.35, "stem_stride": 1}),
])
def test_builds_and_predicts(name, shape, options):
    model = models.build(name, shape, 7, options, seed=0)
    out = model(np.zeros((2,) + shape, np.float32))
    assert tuple(out.shape) == (2, 7)
    idx = models.prunable(model)
    assert idx
    for i, w in enumerate(model.weights):
        if i in idx:
            assert w.trainable and len(w.shape) >= 2
        else:   # biases, BatchNorm gamma/beta/moving stats are never pruned
            assert len(w.shape) < 2 or not w.trainable


def test_paper_parameter_counts():
    assert models.build("lenet_300_100", (28, 28, 1), 10).count_params() == 266610
    # He et al.: ResNet-20 has 0.27M parameters, ResNet-44 0.66M
    assert 0.26e6 < models.build("resnet20", (32, 32, 3), 10).count_params() < 0.28e6
    assert 0.65e6 < models.build("resnet44", (32, 32, 3), 10).count_params() < 0.67e6
    # Keras' MobileNetV2 (alpha 1, 1000 classes) has 3,538,984 parameters
    assert models.build("mobilenet_v2", (64, 64, 3), 1000).count_params() == 3538984


def test_resnet_depth_must_be_6n_plus_2():
    with pytest.raises(ValueError, match="model.depth: ResNet depth must be 6n\\+2"):
        models.build("resnet", (32, 32, 3), 10, {"depth": 21})


def test_exclusion_by_layer_name_and_same_seed_same_weights():
    a = models.build("lenet_300_100", (28, 28, 1), 10, seed=3)
    b = models.build("lenet_300_100", (28, 28, 1), 10, seed=3)
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)
    assert len(models.prunable(a)) == 3
    assert [a.weights[i].path.split("/")[-2] for i in models.prunable(a, ["out"])] == ["fc1", "fc2"]


def test_a_custom_builder_joins_the_registry():
    m = models.build("custom", (28, 28, 1), 10,
                     {"builder": "tests.custom_models:small_cnn", "filters": 4}, seed=0)
    assert [m.weights[i].path for i in models.prunable(m)] == ["c1/kernel", "d1/kernel", "out/kernel"]
    assert m.get_layer("c1").filters == 4
    for options, message in [
        ({}, "model.builder: a custom model needs builder"),
        ({"builder": "nosuch.module:f"}, "model.builder: cannot import 'nosuch.module'"),
        ({"builder": "tests.custom_models:nope"}, "model.builder: 'tests.custom_models' has no 'nope'"),
        ({"builder": "tests.custom_models"}, "model.builder: expected"),
        ({"builder": "tests.custom_models:small_cnn", "width": 3},
         r"model.width: not an option of tests.custom_models:small_cnn \(valid: filters\)"),
        ({"builder": "tests.custom_models:not_a_model"},
         "model: custom cannot be built with .* \\(the builder returned str, not a keras.Model\\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            models.build("custom", (28, 28, 1), 10, options)


def test_keras_imported_without_matplotlib_which_stays_importable():
    """A rank's start-up skips matplotlib (Keras would import pyplot); the analysis can still."""
    import subprocess
    import sys
    from mpi_helpers import ROOT
    code = ("import sys, lth_mpi.models\n"
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'\n"
            "import matplotlib.pyplot\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
