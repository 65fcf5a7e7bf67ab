"""Config validation: every bad input is one line naming the key."""
import pytest

from lth_mpi import config, data, models, search

BASE = {"model": {"name": "lenet_300_100"}, "prune": {"sparsities": [0.5, 0.9]},
        "parallel": {"group_size": 2}, "train": {"epochs": 3}}


def load(world_size=4, **changes):
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE.items()}
    overrides = [f"{k}={v}" for k, v in changes.items()]
    return config.load(raw=raw, overrides=overrides, world_size=world_size)


def test_defaults_filled():
    cfg = load()
    assert cfg["train"]["batch_size"] == 128 and cfg["prune"]["scope"] == "global"
    assert cfg["rewind"]["points"] == [0] and cfg["dataset"]["name"] == "fashion_mnist"


def test_set_overrides_any_key():
    cfg = load(**{"train.learning_rate": "0.1", "rewind.points": "[0, 2]", "model.depth": "32"})
    assert cfg["train"]["learning_rate"] == 0.1 and cfg["rewind"]["points"] == [0, 2]
    assert cfg["model"]["depth"] == 32


@pytest.mark.parametrize("key,value,message", [
    ("train.epoch", "3", "train.epoch: unknown key"),
    ("bogus", "1", "bogus: unknown key"),
    ("train.epochs", "three", "train.epochs: expected int"),
    ("train.epochs", "0", "train.epochs: must be >= 1"),
    ("train.learning_rate", "-1", "train.learning_rate: must be > 0"),
    ("train.optimizer", "rmsprop", "train.optimizer: 'rmsprop' is not one of"),
    ("train.mixed_precision", "float8",
     "train.mixed_precision: 'float8' is not one of false, float16, bfloat16"),
    ("parallel.assign", "random", "parallel.assign: 'random' is not one of dynamic, masks, cells"),
    ("prune.sparsities", "[0.5, 1.0]", "prune.sparsities: 1.0 is outside (0, 1)"),
    ("prune.sparsities", "[0]", "prune.sparsities: 0 is outside (0, 1)"),
    ("prune.sparsities", "[]", "prune.sparsities: needs at least one"),
    ("prune.scope", "neuron", "prune.scope"),
    ("rewind.points", "[0, 4]", "rewind.points: epoch 4 is beyond the 3 dense epochs"),
    ("rewind.points", "[-1]", "rewind.points: -1 is not a non-negative integer"),
    ("rewind.points", "[0, 3]", "rewind.points: epoch 3 is the end of training, which leaves "
                                "nothing to retrain under rewind.retrain: remaining"),
    ("rewind.retrain", "more", "rewind.retrain: 'more' is not one of"),
    ("parallel.group_size", "3", "parallel.group_size: 3 does not divide the 4 ranks"),
    ("train.batch_size", "127", "train.batch_size: 127 is not divisible"),
    ("controls", "[shuffle]", "controls: unknown control 'shuffle'"),
    ("train", "5", "train: expected a mapping"),
    ("train.learning_rate", ".nan", "train.learning_rate: must be a finite number, got nan"),
    ("train.learning_rate", ".inf", "train.learning_rate: must be a finite number, got inf"),
    ("train.momentum", ".nan", "train.momentum: must be a finite number"),
    ("train.weight_decay", ".inf", "train.weight_decay: must be a finite number, got inf"),
    ("seed", "-1", "seed: must be in [0, 2^32), got -1"),
    ("seed", "4294967296", "seed: must be in [0, 2^32), got 4294967296"),
    ("controls", "[random_reinit, random_reinit]", "controls: duplicate entries"),
    ("dataset.validation_examples", "-5", "dataset.validation_examples: must be >= 0"),
    ("train.xla", "fast", "train.xla: 'fast' is not one of auto, true, false"),
])
def test_refused_with_key(key, value, message):
    with pytest.raises(config.ConfigError) as err:
        load(**{key: value})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_rewind_to_the_end_is_fine_tuning_allowed_only_under_full():
    assert load(**{"rewind.points": "[0, 3]", "rewind.retrain": "full"})["rewind"]["points"] == [0, 3]
    assert load()["rewind"]["retrain"] == "remaining"


def test_iteration_rewinds_may_exceed_epochs():
    assert load(**{"rewind.unit": "iteration", "rewind.points": "[0, 50]"})["rewind"]["points"] == [0, 50]


def test_missing_required_and_missing_file(tmp_path):
    with pytest.raises(config.ConfigError, match="model: required key|model.name: required"):
        config.load(raw={"prune": {"sparsities": [0.5]}})
    with pytest.raises(config.ConfigError, match="config: file not found"):
        config.load(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(config.ConfigError, match="not valid YAML"):
        config.load(str(bad))


def test_bad_set_syntax():
    with pytest.raises(config.ConfigError, match="expected dotted.key=value"):
        config.load(raw=BASE, overrides=["train.epochs"])


def test_registry_and_data_errors(tmp_path):
    cfg = load(**{"model.name": "vgg99"})
    with pytest.raises(ValueError, match=r"model.name: unknown model 'vgg99' \(valid: .*lenet_300_100"):
        search.validate(config.resolve(cfg))
    cfg = load(**{"model.depth": "20"})
    with pytest.raises(ValueError, match="model.depth: not an option of lenet_300_100"):
        search.validate(config.resolve(cfg))
    cfg = load(**{"dataset.name": "imagenet"})
    with pytest.raises(ValueError, match="dataset.name: unknown dataset 'imagenet' .*fashion_mnist"):
        search.validate(config.resolve(cfg))
    cfg = load(**{"dataset.path": str(tmp_path / "missing")})
    with pytest.raises(ValueError, match="dataset.path: data directory not found"):
        search.validate(config.resolve(cfg))
    cfg = load(**{"dataset.path": str(tmp_path)})
    with pytest.raises(ValueError, match="dataset.path: .* has no train-images-idx3-ubyte"):
        search.validate(config.resolve(cfg))
    cfg = load(output=str(tmp_path / "no" / "such" / "dir.h5"), **{"dataset.name": "synthetic"})
    with pytest.raises(ValueError, match="output: directory does not exist"):
        search.validate(config.resolve(cfg))


def test_all_shipped_configs_are_valid():
    import glob
    import os
    root = os.path.join(os.path.dirname(__file__), "..", "run", "configs")
    paths = sorted(glob.glob(os.path.join(root, "*.yaml")))
    assert paths
    for path in paths:
        cfg = config.load(path)
        models.check(cfg["model"]["name"], {k: v for k, v in cfg["model"].items() if k != "name"})
        assert cfg["dataset"]["name"] in data.REGISTRY


def test_readme_config_block_is_the_declarations():
    """The README's config reference is generated from config.KEYS: every key, its default
    and its doc; a key added, removed or changed without the README fails here."""
    import os
    text = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    start = text.index("```yaml", text.index("### Config")) + len("```yaml\n")
    assert text[start:text.index("```", start)].rstrip("\n") == config.reference()
    assert config.load(raw={"model": {"name": "lenet_300_100"},
                            "prune": {"sparsities": [0.5]}})["prune"]["scope"] == \
        config.KEYS["prune.scope"].default
