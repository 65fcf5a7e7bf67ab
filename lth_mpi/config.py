"""The run configuration: YAML in, a validated plain dict out.

Every key is declared once in SCHEMA with its type and default; validation names the dotted
key of the first problem in one line, so that every rank can print the same error and exit.
`--set dotted.key=value` overrides are parsed as YAML scalars and validated like the file.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os

import yaml

from . import modes


class ConfigError(ValueError):
    """A bad configuration; the message is one line naming the key."""


REQUIRED = object()

# key -> (type or tuple of types, default). Sub-dicts are sections. model and dataset take
# extra keys: they are keyword arguments of the model builder or dataset reader, checked there.
SCHEMA = {
    "name": (str, "lth-search"),
    "seed": (int, 0),
    "seeds": ((list, type(None)), None),     # replicates: one whole search per seed
    "output": (str, "results.h5"),
    "model": {"name": (str, REQUIRED)},
    "dataset": {"name": (str, "fashion_mnist"),
                "path": ((str, type(None)), None),
                "train_examples": ((int, type(None)), None),
                "test_examples": ((int, type(None)), None),
                "validation_examples": ((int, type(None)), None)},
    "train": {"epochs": (int, 2),
              "batch_size": (int, 128),
              "optimizer": (str, "adam"),
              "learning_rate": (float, 1.2e-3),
              "momentum": (float, 0.9),
              "weight_decay": (float, 0.0),
              "xla": ((bool, str), "auto"),     # auto | true | false (training.use_xla)
              "mixed_precision": ((bool, str), False),    # false | float16 | bfloat16
              "sync_batchnorm": ((bool, str), "auto")},   # auto | true | false
    "rewind": {"unit": (str, "epoch"),
               "points": (list, [0]),
               "retrain": (str, "remaining")},
    "prune": {"mode": (str, "oneshot"),
              "sparsities": ((list, type(None)), None),    # oneshot: required
              "scope": (str, "global"),
              "exclude": (list, []),
              "levels": ((int, type(None)), None),         # iterative: required
              "rate": ((float, type(None)), None),         # iterative: 0.2 unless given
              "layer_rates": (dict, {}),                   # iterative: {layer: own rate}
              "initial": ((float, type(None)), None),      # gradual: 0 unless given
              "begin": ((int, type(None)), None),          # gradual: 0 unless given
              "end": ((int, type(None)), None),            # gradual: required
              "frequency": ((int, type(None)), None)},     # gradual: 100 unless given
    "controls": (list, []),
    "results": {"keep_weights": (str, "none")},
    "parallel": {"group_size": (int, 4),
                 "assign": (str, "dynamic"),
                 "dense": (str, "rank0"),
                 "allreduce": (str, "auto"),
                 "threads": ((int, type(None)), None)},
}
OPEN_SECTIONS = ("model", "dataset")   # may hold builder keyword arguments
CHOICES = {
    "train.optimizer": ("adam", "sgd"),
    "rewind.unit": ("epoch", "iteration"),
    "rewind.retrain": ("remaining", "full"),
    "prune.mode": ("oneshot", "iterative", "gradual"),
    "prune.scope": ("global", "layerwise"),
    "parallel.assign": ("dynamic", "masks", "cells"),
    "results.keep_weights": ("none", "best", "all"),
    "parallel.dense": ("rank0", "data_parallel"),
    "parallel.allreduce": ("auto", "horovod", "mpi"),
}
CONTROLS = ("random_reinit", "random_mask")
ONLY = {"iterative": ("levels", "rate", "layer_rates"),
        "gradual": ("initial", "begin", "end", "frequency")}


def _check_prune(prune: dict, controls: list) -> None:
    """Keys of another mode refused; then the mode's own checks (lth_mpi.modes)."""
    for mode, keys in ONLY.items():
        for key in keys:
            if prune["mode"] != mode and prune[key] not in (None, {}):
                raise ConfigError(f"prune.{key}: only used with prune.mode: {mode}")
    try:
        modes.MODES[prune["mode"]].check(prune, controls)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _merge(schema: dict, given: dict, prefix: str, open_section: bool) -> dict:
    """Defaults filled in, unknown keys and wrong types refused."""
    if not isinstance(given, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {given!r}")
    out = {}
    for key in given:
        if key not in schema and not open_section:
            raise ConfigError(f"{prefix}{key}: unknown key (valid: {', '.join(schema)})")
    for key, spec in schema.items():
        if isinstance(spec, dict):
            out[key] = _merge(spec, given.get(key, {}) or {}, f"{prefix}{key}.",
                              key in OPEN_SECTIONS)
            continue
        typ, default = spec
        if key not in given:
            if default is REQUIRED:
                raise ConfigError(f"{prefix}{key}: required key is missing")
            out[key] = copy.deepcopy(default)
            continue
        value = given[key]
        types = typ if isinstance(typ, tuple) else (typ,)
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            names = "/".join("null" if t is type(None) else t.__name__ for t in types)
            raise ConfigError(f"{prefix}{key}: expected {names}, got {value!r}")
        out[key] = value
    if open_section:
        out.update({k: v for k, v in given.items() if k not in schema})
    return out


def _check(cfg: dict, world_size: int | None) -> None:
    """Value checks that need more than a type."""
    for dotted, choices in CHOICES.items():
        section, key = dotted.split(".")
        if cfg[section][key] not in choices:
            raise ConfigError(f"{dotted}: {cfg[section][key]!r} is not one of {', '.join(choices)}")
    if not 0 <= cfg["seed"] < 2 ** 32:
        raise ConfigError(f"seed: must be in [0, 2^32), got {cfg['seed']}")
    if cfg["seeds"] is not None:
        seeds = cfg["seeds"]
        if cfg["seed"] != 0:
            raise ConfigError("seeds: give seed (one search) or seeds (replicates), not both")
        if not seeds:
            raise ConfigError("seeds: needs at least one seed")
        for s in seeds:
            if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2 ** 32:
                raise ConfigError(f"seeds: {s!r} is not an integer in [0, 2^32)")
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"seeds: duplicate values in {seeds}")
    t = cfg["train"]
    for key in ("learning_rate", "momentum", "weight_decay"):
        if not math.isfinite(t[key]):
            raise ConfigError(f"train.{key}: must be a finite number, got {t[key]}")
    if t["mixed_precision"] is True:     # the original switch: float16, as for GPUs
        t["mixed_precision"] = "float16"
    if t["mixed_precision"] not in (False, "float16", "bfloat16"):
        raise ConfigError(f"train.mixed_precision: {t['mixed_precision']!r} is not one of "
                          "false, float16, bfloat16")
    for key in ("xla", "sync_batchnorm"):
        if t[key] not in (True, False, "auto"):
            raise ConfigError(f"train.{key}: {t[key]!r} is not one of auto, true, false")
    for key in ("epochs", "batch_size"):
        if t[key] < 1:
            raise ConfigError(f"train.{key}: must be >= 1, got {t[key]}")
    if t["learning_rate"] <= 0:
        raise ConfigError(f"train.learning_rate: must be > 0, got {t['learning_rate']}")
    if not 0 <= t["momentum"] < 1:
        raise ConfigError(f"train.momentum: must be in [0, 1), got {t['momentum']}")
    if t["weight_decay"] < 0:
        raise ConfigError(f"train.weight_decay: must be >= 0, got {t['weight_decay']}")
    _check_prune(cfg["prune"], cfg["controls"])
    if not all(isinstance(e, str) for e in cfg["prune"]["exclude"]):
        raise ConfigError("prune.exclude: expected a list of layer names")
    points = cfg["rewind"]["points"]
    if not points:
        raise ConfigError("rewind.points: needs at least one rewind point")
    if len(set(points)) != len(points):
        raise ConfigError(f"rewind.points: duplicate values in {points}")
    for p in points:
        if isinstance(p, bool) or not isinstance(p, int) or p < 0:
            raise ConfigError(f"rewind.points: {p!r} is not a non-negative integer")
        if cfg["rewind"]["unit"] == "epoch" and p > t["epochs"]:
            raise ConfigError(f"rewind.points: epoch {p} is beyond the {t['epochs']} dense epochs")
        if (cfg["rewind"]["unit"] == "epoch" and p == t["epochs"]
                and cfg["rewind"]["retrain"] == "remaining"):
            raise ConfigError(f"rewind.points: epoch {p} is the end of training, which leaves "
                              "nothing to retrain under rewind.retrain: remaining")
    if len(set(map(str, cfg["controls"]))) != len(cfg["controls"]):
        raise ConfigError(f"controls: duplicate entries in {cfg['controls']}")
    for c in cfg["controls"]:
        if c not in CONTROLS:
            raise ConfigError(f"controls: unknown control {c!r} (valid: {', '.join(CONTROLS)})")
    for key in ("train_examples", "test_examples"):
        n = cfg["dataset"][key]
        if n is not None and n < 1:
            raise ConfigError(f"dataset.{key}: must be >= 1, got {n}")
    n = cfg["dataset"]["validation_examples"]
    if n is not None and n < 0:
        raise ConfigError(f"dataset.validation_examples: must be >= 0, got {n}")
    par = cfg["parallel"]
    if par["group_size"] < 1:
        raise ConfigError(f"parallel.group_size: must be >= 1, got {par['group_size']}")
    if par["threads"] is not None and par["threads"] < 1:
        raise ConfigError(f"parallel.threads: must be >= 1, got {par['threads']}")
    if world_size is not None and world_size % par["group_size"]:
        raise ConfigError(f"parallel.group_size: {par['group_size']} does not divide the "
                          f"{world_size} ranks")
    if (world_size is not None and par["dense"] == "data_parallel"
            and t["batch_size"] % world_size):
        raise ConfigError(f"train.batch_size: {t['batch_size']} is not divisible by the "
                          f"{world_size} ranks sharing the data-parallel dense phase")
    if t["batch_size"] % par["group_size"]:
        raise ConfigError(f"train.batch_size: {t['batch_size']} is not divisible by "
                          f"parallel.group_size {par['group_size']}")


def flat(cfg: dict, prefix: str = "") -> dict:
    """{"dotted.key": value} of a (nested) config, for comparing two of them key by key."""
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def set_dotted(raw: dict, assignment: str, literal: bool = False) -> None:
    """Apply one `dotted.key=value` override to the raw (unvalidated) config; the value is
    parsed as YAML unless `literal` (paths from the command line are strings as given)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment}: expected dotted.key=value")
    dotted, text = assignment.split("=", 1)
    try:
        value = text if literal else (yaml.safe_load(text) if text else "")
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {dotted}: cannot parse {text!r} ({exc.problem})") from None
    node = raw
    parts = dotted.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part, {}), dict):
            raise ConfigError(f"--set {dotted}: {part} is not a section")
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def load(path: str | None = None, overrides: list[str] = (), world_size: int | None = None,
         raw: dict | None = None, literal: dict | None = None) -> dict:
    """Read, override and validate a config; raises ConfigError with a one-line message.
    `literal` maps dotted keys to values set as given, after the overrides (--output)."""
    if raw is None:
        if not os.path.isfile(path):
            raise ConfigError(f"config: file not found: {path}")
        try:
            with open(path) as fh:
                raw = yaml.safe_load(fh) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config: {path} is not valid YAML "
                              f"({str(exc).splitlines()[0]})") from None
    raw = copy.deepcopy(raw)
    for assignment in overrides:
        set_dotted(raw, assignment)
    for dotted, value in (literal or {}).items():
        set_dotted(raw, f"{dotted}={value}", literal=True)
    cfg = _merge(SCHEMA, raw, "", False)
    _check(cfg, world_size)
    return cfg


def dump(cfg: dict) -> str:
    """The config as YAML text, for provenance and --dry-run."""
    return yaml.safe_dump(cfg, sort_keys=False)


# --- the resolved settings: what the run reads -------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Settings:
    """A validated config resolved into the values a search uses; everything downstream of
    the config reads this, never the dict. `bind` adds what needs the model and the data."""
    cfg: dict                  # the validated config, as the results file stores it
    mode: modes.Mode           # the pruning strategy (lth_mpi.modes)
    seeds: tuple[int, ...]     # one per replicate: (seed,) for a search with one seed
    replicated: bool           # `seeds: [...]` was given: cells carry their replicate index
    output: str
    points: tuple[int, ...]    # rewind points, in `unit`s
    unit: str                  # epoch | iteration
    remaining: bool            # a ticket rewound to k trains the remaining T - k
    controls: tuple[str, ...]
    epochs: int
    batch_size: int
    group_size: int
    assign: str
    dense_parallel: bool
    allreduce: str
    threads: int | None
    keep_weights: str
    exclude: tuple[str, ...]
    dataset: dict              # the dataset reader's options (lth_mpi.data)
    model: tuple[str, dict]    # the model's name and builder options (lth_mpi.models)
    train: dict                # the trainer's section (lth_mpi.training)
    setup_seed: int            # `seed`: builds the set-up model, whose weights every phase replaces
    steps_per_epoch: int | None = None     # bound: with the data
    targets: tuple[float, ...] | None = None   # bound: each mask index's sparsity

    @property
    def replicates(self) -> list[int]:
        """Replicate indices as cells and the file name them: [-1] for one seed."""
        return list(range(len(self.seeds))) if self.replicated else [-1]

    def seed(self, replicate: int) -> int:
        return self.seeds[max(replicate, 0)]

    @property
    def last_iteration(self) -> int:
        return self.epochs * self.steps_per_epoch

    def iteration(self, point: int) -> int:
        """A rewind point in iterations."""
        return point * self.steps_per_epoch if self.unit == "epoch" else point

    def bind(self, kernels: modes.Kernels, layer_names: list[str], steps_per_epoch: int,
             train_total: int) -> "Settings":
        """The settings for this model and data: the checks that need them (ValueError in
        one line), and the targets."""
        if train_total < self.batch_size:
            raise ValueError(f"train.batch_size: {self.batch_size} is larger than the "
                             f"{train_total} training examples")
        for name in self.exclude:
            if name not in layer_names:
                raise ValueError(f"prune.exclude: no layer named {name!r} "
                                 f"(layers: {', '.join(layer_names)})")
        if not kernels.names:
            raise ValueError("prune.exclude: every prunable layer is excluded")
        bound = dataclasses.replace(self, steps_per_epoch=steps_per_epoch)
        mode = bound.mode.bind(kernels)
        mode.check_model(bound.last_iteration)
        if self.unit == "iteration":
            for p in self.points:
                if p > bound.last_iteration:
                    raise ValueError(f"rewind.points: iteration {p} is beyond the "
                                     f"{bound.last_iteration} dense iterations")
                if p == bound.last_iteration and self.remaining:
                    raise ValueError(f"rewind.points: iteration {p} is the end of training, "
                                     "which leaves nothing to retrain under rewind.retrain: "
                                     "remaining")
        return dataclasses.replace(bound, targets=tuple(mode.targets()))


def resolve(cfg: dict) -> Settings:
    """The settings of a validated config (load's result, or a results file's)."""
    seeds = cfg.get("seeds")
    par, t = cfg["parallel"], cfg["train"]
    return Settings(
        cfg=cfg, mode=modes.of(cfg), seeds=tuple(seeds or [cfg["seed"]]),
        replicated=seeds is not None, output=cfg["output"],
        points=tuple(cfg["rewind"]["points"]), unit=cfg["rewind"]["unit"],
        remaining=cfg["rewind"]["retrain"] == "remaining", controls=tuple(cfg["controls"]),
        epochs=t["epochs"], batch_size=t["batch_size"], group_size=par["group_size"],
        assign=par["assign"], dense_parallel=par["dense"] == "data_parallel",
        allreduce=par["allreduce"], threads=par["threads"],
        keep_weights=cfg["results"]["keep_weights"], exclude=tuple(cfg["prune"]["exclude"]),
        dataset=cfg["dataset"], train=t, setup_seed=cfg["seed"],
        model=(cfg["model"]["name"], {k: v for k, v in cfg["model"].items() if k != "name"}))
