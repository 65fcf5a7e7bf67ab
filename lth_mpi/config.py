"""The run configuration: YAML in, a validated plain dict out.

Every key is declared once in SCHEMA with its type and default; validation names the dotted
key of the first problem in one line, so that every rank can print the same error and exit.
`--set dotted.key=value` overrides are parsed as YAML scalars and validated like the file.
"""
from __future__ import annotations

import copy
import math
import os

import yaml


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
ITERATIVE_RATE = 0.2    # Frankle & Carbin's per-level rate for fully connected layers
ONLY = {"iterative": ("levels", "rate", "layer_rates"),
        "gradual": ("initial", "begin", "end", "frequency")}
GRADUAL_DEFAULTS = {"initial": 0.0, "begin": 0, "frequency": 100}


def remaining(cfg: dict) -> bool:
    """A ticket rewound to k trains the remaining T - k (Frankle et al. 2020, open_lth), not
    T more: otherwise a late rewind point trains longer than the dense net it is compared to."""
    return cfg["rewind"]["retrain"] == "remaining"


def replicates(cfg: dict) -> list[int] | None:
    """The seeds of the replicates (`seeds: [...]`), or None for one search with `seed`."""
    return cfg.get("seeds")


def seeded(cfg: dict, replicate: int) -> dict:
    """The config as replicate `replicate` (-1: the single search) sees it: its own seed,
    which keys its dense net, masks, controls and data orders (lth_mpi.seeds)."""
    if replicate < 0:
        return cfg
    return {**cfg, "seed": cfg["seeds"][replicate]}


def iterative(cfg: dict) -> bool:
    """Iterative magnitude pruning: chains of levels, each pruned from the one before."""
    return cfg["prune"].get("mode") == "iterative"    # files before it was added: one-shot


def gradual(cfg: dict) -> bool:
    """Gradual magnitude pruning: each cell prunes while it trains (Zhu & Gupta 2017)."""
    return cfg["prune"].get("mode") == "gradual"


def _fraction(value) -> bool:
    """A number strictly between 0 and 1 (sparsities and pruning rates)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 < value < 1


def _check_prune(prune: dict, controls: list) -> None:
    """One-shot takes a list of sparsities; iterative takes levels and rates instead;
    gradual takes the final sparsities and a schedule."""
    for mode, keys in ONLY.items():
        for key in keys:
            if prune["mode"] != mode and prune[key] not in (None, {}):
                raise ConfigError(f"prune.{key}: only used with prune.mode: {mode}")
    if prune["mode"] in ("oneshot", "gradual"):
        sp = prune["sparsities"]
        if sp is None:
            raise ConfigError("prune.sparsities: required key is missing")
        if not sp:
            raise ConfigError("prune.sparsities: needs at least one sparsity")
        for s in sp:
            if not _fraction(s):
                raise ConfigError(f"prune.sparsities: {s!r} is outside (0, 1)")
        if len(set(sp)) != len(sp):
            raise ConfigError(f"prune.sparsities: duplicate values in {sp}")
        if prune["mode"] == "gradual":
            _check_gradual(prune, controls)
        return
    if prune["sparsities"] is not None:
        raise ConfigError("prune.sparsities: not used with prune.mode: iterative "
                          "(prune.levels and prune.rate decide the sparsities)")
    if prune["levels"] is None:
        raise ConfigError("prune.levels: required with prune.mode: iterative")
    if prune["levels"] < 1:
        raise ConfigError(f"prune.levels: must be >= 1, got {prune['levels']}")
    if prune["rate"] is None:
        prune["rate"] = ITERATIVE_RATE
    rates = {"prune.rate": prune["rate"]}
    rates.update({f"prune.layer_rates.{k}": v for k, v in prune["layer_rates"].items()})
    for key, r in rates.items():
        if not _fraction(r):
            raise ConfigError(f"{key}: {r!r} is outside (0, 1)")


def _check_gradual(prune: dict, controls: list) -> None:
    for key, value in GRADUAL_DEFAULTS.items():
        if prune[key] is None:
            prune[key] = value
    if prune["end"] is None:
        raise ConfigError("prune.end: required with prune.mode: gradual (the iteration at "
                          "which the final sparsity is reached)")
    if prune["begin"] < 0:
        raise ConfigError(f"prune.begin: must be >= 0, got {prune['begin']}")
    if prune["end"] <= prune["begin"]:
        raise ConfigError(f"prune.end: must be after prune.begin ({prune['begin']}), "
                          f"got {prune['end']}")
    if prune["frequency"] < 1:
        raise ConfigError(f"prune.frequency: must be >= 1, got {prune['frequency']}")
    if not 0 <= prune["initial"] < min(prune["sparsities"]):
        raise ConfigError(f"prune.initial: must be in [0, the smallest final sparsity "
                          f"{min(prune['sparsities'])}), got {prune['initial']}")
    if "random_mask" in controls:
        raise ConfigError("controls: random_mask is not defined for prune.mode: gradual "
                          "(the mask comes from training); random_reinit is")


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
        if cfg["rewind"]["unit"] == "epoch" and p == t["epochs"] and remaining(cfg):
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
