"""The run configuration: YAML in, a validated plain dict out, resolved into Settings.

Every key is declared once in KEYS with its types, default, choices, check and one-line doc;
validation names the dotted key of the first problem in one line, so that every rank can
print the same error and exit. `--set dotted.key=value` overrides are parsed as YAML scalars
and validated like the file. The validated dict is what the results file stores; resolve()
turns it into the Settings the run reads, and Settings.bind adds what needs the model.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
from typing import Callable

import yaml

from . import modes, stability


class ConfigError(ValueError):
    """A bad configuration; the message is one line naming the key."""


REQUIRED = object()
U32 = 2 ** 32


@dataclasses.dataclass(frozen=True)
class Key:
    """One config key: the types it takes, its default, the values it may take, a check of
    its value alone (returns the problem, or None), its one-line doc, and the pruning mode
    it belongs to (refused under the others)."""
    types: tuple
    default: object
    doc: str
    choices: tuple = ()
    check: Callable[[object], str | None] | None = None
    mode: str | None = None


def at_least(n, strict: bool = False):
    def check(v):
        if v is not None and (v <= n if strict else v < n):
            return f"must be {'>' if strict else '>='} {n}, got {v}"
    return check


def finite(then=None):
    def check(v):
        if not math.isfinite(v):
            return f"must be a finite number, got {v}"
        return then(v) if then else None
    return check


def _seed(v):
    if not 0 <= v < U32:
        return f"must be in [0, 2^32), got {v}"


def _seeds(seeds):
    if seeds is None:
        return None
    if not seeds:
        return "needs at least one seed"
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < U32:
            return f"{s!r} is not an integer in [0, 2^32)"
    if len(set(seeds)) != len(seeds):
        return f"duplicate values in {seeds}"


def _points(points):
    if points == "auto":
        return None
    if isinstance(points, str):
        return f"expected a list of points or auto, got {points!r}"
    if not points:
        return "needs at least one rewind point"
    if len(set(points)) != len(points):
        return f"duplicate values in {points}"
    for p in points:
        if isinstance(p, bool) or not isinstance(p, int) or p < 0:
            return f"{p!r} is not a non-negative integer"


def _controls(controls):
    if len(set(map(str, controls))) != len(controls):
        return f"duplicate entries in {controls}"
    for c in controls:
        if c not in CONTROLS:
            return f"unknown control {c!r} (valid: {', '.join(CONTROLS)})"


def _names(names):
    if not all(isinstance(e, str) for e in names):
        return "expected a list of layer names"


def _threshold(v):
    if not 0 < v < 1:
        return f"must be in (0, 1), got {v}"


def _momentum(v):
    if not 0 <= v < 1:
        return f"must be in [0, 1), got {v}"


CONTROLS = ("random_reinit", "random_mask", "stability")


def _ladder(fractions):
    if not fractions:
        return "needs at least one candidate"
    for f in fractions:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1:
            return f"{f!r} is not a fraction of training in [0, 1)"
    if list(fractions) != sorted(set(fractions)):
        return f"expected increasing fractions without duplicates, got {fractions}"
NONE = type(None)      # a key that may be null

# Every key, declared once. model and dataset take extra keys: keyword options of the model
# builder or dataset reader, checked there. The README's config block is reference().
KEYS = {
    "name": Key((str,), "lth-search", "the search's name"),
    "seed": Key((int,), 0, "keys the dense net, masks, controls and data orders", check=_seed),
    "seeds": Key((list, NONE), None, "replicates, e.g. [0, 1, 2]: the whole search per seed",
                 check=_seeds),
    "output": Key((str,), "results.h5", "the results file (docs/results.md), never overwritten"),
    "model.name": Key((str,), REQUIRED, "lenet_300_100, resnet20, ...; more keys: options"),
    "dataset.name": Key((str,), "fashion_mnist", "mnist, cifar10, ...; more keys: options"),
    "dataset.path": Key((str, NONE), None, "where it is (default: Debian's Fashion-MNIST)"),
    "dataset.train_examples": Key((int, NONE), None, "only the first n (all by default)",
                                  check=at_least(1)),
    "dataset.test_examples": Key((int, NONE), None, "only the first n (all by default)",
                                 check=at_least(1)),
    "dataset.validation_examples": Key((int, NONE), None, "held out for selection (null: 5000 "
                                                       "for image sets, else 0)",
                                       check=at_least(0)),
    "train.epochs": Key((int,), 2, "dense training T; every cell ends where it ends",
                        check=at_least(1)),
    "train.batch_size": Key((int,), 128, "global batch, split over a group's ranks",
                            check=at_least(1)),
    "train.optimizer": Key((str,), "adam", "adam | sgd", choices=("adam", "sgd")),
    "train.learning_rate": Key((float,), 1.2e-3, "", check=finite(at_least(0, strict=True))),
    "train.momentum": Key((float,), 0.9, "sgd only", check=finite(_momentum)),
    "train.weight_decay": Key((float,), 0.0, "decoupled, Keras-style", check=finite(at_least(0))),
    "train.xla": Key((bool, str), "auto", "auto: on a GPU, or a CPU model without convolutions",
                     choices=("auto", True, False)),
    "train.mixed_precision": Key((bool, str), False, "float16 (GPUs) | bfloat16: float32 weights",
                                 choices=(False, "float16", "bfloat16")),
    "train.sync_batchnorm": Key((bool, str), "auto",
                                "BatchNorm over the global batch (auto: if any)",
                                choices=("auto", True, False)),
    "rewind.unit": Key((str,), "epoch", "epoch | iteration", choices=("epoch", "iteration")),
    "rewind.points": Key((list, str), [0], "where tickets rewind to (0: the init) | auto: "
                         "by stability", check=_points),
    "rewind.retrain": Key((str,), "remaining", "remaining: rewound to k, train T - k | full: T",
                          choices=("remaining", "full")),
    "prune.mode": Key((str,), "oneshot", "oneshot | iterative | gradual (lth_mpi/modes)",
                      choices=tuple(modes.MODES)),
    "prune.sparsities": Key((list, NONE), None, "oneshot, gradual (final): required, in (0, 1)"),
    "prune.scope": Key((str,), "global", "global: one threshold | layerwise",
                       choices=("global", "layerwise")),
    "prune.exclude": Key((list,), [], "layers never pruned", check=_names),
    "prune.levels": Key((int, NONE), None, "required: the number of levels", mode="iterative"),
    "prune.rate": Key((float, NONE), None, "of the remaining weights, per level (0.2)",
                      mode="iterative"),
    "prune.layer_rates": Key((dict,), {}, "layers' own rates, e.g. {out: 0.1}", mode="iterative"),
    "prune.initial": Key((float, NONE), None, "sparsity at begin (0)", mode="gradual"),
    "prune.begin": Key((int, NONE), None, "iteration pruning starts (0)", mode="gradual"),
    "prune.end": Key((int, NONE), None, "required: iteration of the final sparsity",
                     mode="gradual"),
    "prune.frequency": Key((int, NONE), None, "iterations between steps (100)", mode="gradual"),
    "controls": Key((list,), [], "random_reinit, random_mask, stability (a pair per ticket)",
                    check=_controls),
    "stability.path_points": Key((int,), 11, "points on a pair's linear path, ends included",
                                 check=at_least(11)),
    "stability.batchnorm_batches": Key((int,), 10, "training batches (at most an epoch's) "
                                       "re-estimating BatchNorm at each point", check=at_least(1)),
    "stability.data_order": Key((str,), "different", "the copies' data orders | same: a "
                                "check (instability exactly 0)", choices=("different", "same")),
    "stability.threshold": Key((float,), stability.THRESHOLD, "auto: stable below this "
                               "instability (0.02: 2 points of error)",
                               check=finite(_threshold)),
    "stability.ladder": Key((list,), list(stability.LADDER), "auto: candidates, fractions of "
                            "training", check=_ladder),
    "results.keep_weights": Key((str,), "none", "none | best ticket per sparsity | all cells",
                                choices=("none", "best", "all")),
    "parallel.group_size": Key((int,), 4, "ranks per data-parallel group; divides P",
                               check=at_least(1)),
    "parallel.assign": Key((str,), "dynamic", "dynamic: a shared queue | masks | cells",
                           choices=("dynamic", "masks", "cells")),
    "parallel.dense": Key((str,), "rank0", "rank0 | data_parallel: over all ranks",
                          choices=("rank0", "data_parallel")),
    "parallel.allreduce": Key((str,), "auto", "auto: Horovod on GPUs, mpi4py on CPUs",
                              choices=("auto", "horovod", "mpi")),
    "parallel.threads": Key((int, NONE), None, "intra-op threads (default: the node's share)",
                            check=at_least(1)),
}
OPEN_SECTIONS = ("model", "dataset")   # may hold builder keyword arguments


def _spelled(value) -> str:
    """A value as YAML writes it (true, null, [0], 0.0012)."""
    return yaml.safe_dump(value, default_flow_style=True, width=1000).replace("\n...", "").strip()


def reference() -> str:
    """Every key with its default and doc, as YAML: the README's config block."""
    lines, section = [], None
    for dotted, key in KEYS.items():
        head, _, leaf = dotted.rpartition(".")
        if head != section and head:
            lines.append(f"{head}:")
        section = head
        default = "(required)" if key.default is REQUIRED else _spelled(key.default)
        text = f"{'  ' if head else ''}{leaf}: {default}"
        doc = f"{key.mode}: {key.doc}" if key.mode else key.doc
        lines.append(f"{text:<28} # {doc}".rstrip(" #") if doc else text)
    return "\n".join(lines)


def _merge(given: dict) -> dict:
    """Defaults filled in, unknown keys and wrong types refused, in declaration order."""
    if not isinstance(given, dict):
        raise ConfigError(f"config: expected a mapping, got {given!r}")
    sections = {d.partition(".")[0] for d in KEYS if "." in d}
    for name, value in given.items():
        if name in sections:
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"{name}: expected a mapping, got {value!r}")
            known = [d.partition(".")[2] for d in KEYS if d.startswith(name + ".")]
            for key in (value or {}):
                if key not in known and name not in OPEN_SECTIONS:
                    raise ConfigError(f"{name}.{key}: unknown key (valid: {', '.join(known)})")
        elif name not in KEYS:
            top = dict.fromkeys(d.partition(".")[0] for d in KEYS)
            raise ConfigError(f"{name}: unknown key (valid: {', '.join(top)})")
    out = {}
    for dotted, key in KEYS.items():
        head, _, leaf = dotted.rpartition(".")
        where, src = (out.setdefault(head, {}), given.get(head) or {}) if head else (out, given)
        if leaf not in src:
            if key.default is REQUIRED:
                raise ConfigError(f"{dotted}: required key is missing")
            where[leaf] = copy.deepcopy(key.default)
            continue
        value = src[leaf]
        if float in key.types and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in key.types or not isinstance(value, key.types):
            names = "/".join("null" if t is NONE else t.__name__ for t in key.types)
            raise ConfigError(f"{dotted}: expected {names}, got {value!r}")
        where[leaf] = value
    for section in OPEN_SECTIONS:
        out[section].update({k: v for k, v in (given.get(section) or {}).items()
                             if k not in out[section]})
    return out


def _get(cfg: dict, dotted: str):
    head, _, leaf = dotted.rpartition(".")
    return (cfg[head] if head else cfg)[leaf]


def _check(cfg: dict, world_size: int | None) -> None:
    """Each key's own check, in declaration order; then what relates keys to each other."""
    t, prune, par = cfg["train"], cfg["prune"], cfg["parallel"]
    if t["mixed_precision"] is True:     # the original switch: float16, as for GPUs
        t["mixed_precision"] = "float16"
    for dotted, key in KEYS.items():
        value = _get(cfg, dotted)
        if key.choices and value not in key.choices:
            names = ", ".join(_spelled(c) for c in key.choices)
            raise ConfigError(f"{dotted}: {value!r} is not one of {names}")
        problem = key.check(value) if key.check else None
        if problem:
            raise ConfigError(f"{dotted}: {problem}")
        if key.mode and prune["mode"] != key.mode and value not in (None, {}):
            raise ConfigError(f"{dotted}: only used with prune.mode: {key.mode}")
    if cfg["seeds"] is not None and cfg["seed"] != 0:
        raise ConfigError("seeds: give seed (one search) or seeds (replicates), not both")
    try:     # the mode's own rules (lth_mpi/modes), which fill in its defaults
        modes.MODES[prune["mode"]].check(prune, cfg["controls"])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if cfg["rewind"]["points"] == "auto" and cfg["rewind"]["unit"] != "iteration":
        raise ConfigError("rewind.points: auto chooses an iteration; set rewind.unit: iteration")
    for p in [] if cfg["rewind"]["points"] == "auto" else cfg["rewind"]["points"]:
        if cfg["rewind"]["unit"] == "epoch" and p > t["epochs"]:
            raise ConfigError(f"rewind.points: epoch {p} is beyond the {t['epochs']} dense epochs")
        if (cfg["rewind"]["unit"] == "epoch" and p == t["epochs"]
                and cfg["rewind"]["retrain"] == "remaining"):
            raise ConfigError(f"rewind.points: epoch {p} is the end of training, which leaves "
                              "nothing to retrain under rewind.retrain: remaining")
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
    cfg = _merge(raw)
    _check(cfg, world_size)
    return cfg


def dump(cfg: dict) -> str:
    """The config as YAML text, for provenance and --dry-run."""
    return yaml.safe_dump(cfg, sort_keys=False)


# --- the resolved settings: what the run reads -------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Train:
    """The trainer's settings (`train.*`)."""
    epochs: int
    batch_size: int
    optimizer: str
    learning_rate: float
    momentum: float
    weight_decay: float
    xla: bool | str
    mixed_precision: bool | str
    sync_batchnorm: bool | str


@dataclasses.dataclass(frozen=True)
class Stability:
    """Stability pairs' settings (`stability.*`): lth_mpi.stability."""
    path_points: int
    batchnorm_batches: int
    same_order: bool           # both copies see one data order (a check: instability 0)
    threshold: float
    ladder: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class Settings:
    """A validated config resolved into the values a search uses; everything downstream of
    the config reads this, never the dict. `bind` adds what needs the model and the data."""
    cfg: dict                  # the validated config, as the results file stores it
    mode: modes.Mode           # the pruning strategy (lth_mpi.modes)
    seeds: tuple[int, ...]     # one per replicate: (seed,) for a search with one seed
    replicated: bool           # `seeds: [...]` was given: cells carry their replicate index
    output: str
    points: tuple[int, ...]    # rewind points, in `unit`s (auto: the ladder's, once bound)
    unit: str                  # epoch | iteration
    remaining: bool            # a ticket rewound to k trains the remaining T - k
    controls: tuple[str, ...]
    train: Train
    group_size: int
    assign: str
    dense_parallel: bool
    allreduce: str
    threads: int | None
    keep_weights: str
    exclude: tuple[str, ...]
    dataset: dict              # the dataset reader's options (lth_mpi.data)
    model: tuple[str, dict]    # the model's name and builder options (lth_mpi.models)
    setup_seed: int            # `seed`: builds the set-up model, whose weights every phase replaces
    stability: Stability
    auto: bool                 # rewind.points: auto, the point chosen by the dense net's stability
    steps_per_epoch: int | None = None     # bound: with the data
    targets: tuple[float, ...] | None = None   # bound: each mask index's sparsity

    @property
    def epochs(self) -> int:
        return self.train.epochs

    @property
    def batch_size(self) -> int:
        return self.train.batch_size

    @property
    def replicates(self) -> list[int]:
        """Replicate indices as cells and the file name them: [-1] for one seed."""
        return list(range(len(self.seeds))) if self.replicated else [-1]

    def seed(self, replicate: int) -> int:
        return self.seeds[self.index(replicate)]

    @staticmethod
    def index(replicate: int) -> int:
        """Where a replicate's things are in per-replicate lists (one seed, -1: the first)."""
        return max(replicate, 0)

    def label(self, replicate: int) -> str:
        """" (seed s)" after what belongs to one replicate of `seeds`; "" for one seed."""
        return f" (seed {self.seed(replicate)})" if self.replicated else ""

    @property
    def last_iteration(self) -> int:
        return self.epochs * self.steps_per_epoch

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
        if self.auto:
            bound = dataclasses.replace(bound, points=tuple(
                stability.ladder(self.stability.ladder, bound.last_iteration)))
        # BatchNorm is re-estimated on at most an epoch's batches: what runs, is billed and
        # is recorded
        bound = dataclasses.replace(bound, stability=dataclasses.replace(
            self.stability, batchnorm_batches=min(self.stability.batchnorm_batches,
                                                  steps_per_epoch)))
        return dataclasses.replace(bound, targets=tuple(mode.targets()))

    def rewound_to(self, point: int) -> "Settings":
        """rewind.points: auto, once chosen: the grid's settings, as if `[point]` was given."""
        return dataclasses.replace(self, points=(point,))


def stored(cfg: dict) -> Settings:
    """The settings of a config a results file stores, whatever version wrote it: keys it
    lacks (declared since) take their defaults; nothing is checked again."""
    return resolve(filled(cfg))


def filled(cfg: dict) -> dict:
    """A stored config with the keys it lacks (declared since it was written) at their
    defaults, what this version would have stored."""
    full = {}
    for dotted, key in KEYS.items():
        head, _, leaf = dotted.rpartition(".")
        where, src = (full.setdefault(head, {}), cfg.get(head) or {}) if head else (full, cfg)
        where[leaf] = src.get(leaf, None if key.default is REQUIRED else key.default)
    for section in OPEN_SECTIONS:
        full[section].update(cfg.get(section) or {})
    return full


def resolve(cfg: dict) -> Settings:
    """The settings of a validated config (load's result, or a results file's)."""
    seeds = cfg.get("seeds")
    par, t, st = cfg["parallel"], cfg["train"], cfg["stability"]
    auto = cfg["rewind"]["points"] == "auto"
    return Settings(
        cfg=cfg, mode=modes.of(cfg), seeds=tuple(seeds or [cfg["seed"]]),
        replicated=seeds is not None, output=cfg["output"],
        points=() if auto else tuple(cfg["rewind"]["points"]), unit=cfg["rewind"]["unit"],
        remaining=cfg["rewind"]["retrain"] == "remaining", controls=tuple(cfg["controls"]),
        train=Train(**t), group_size=par["group_size"],
        assign=par["assign"], dense_parallel=par["dense"] == "data_parallel",
        allreduce=par["allreduce"], threads=par["threads"],
        keep_weights=cfg["results"]["keep_weights"], exclude=tuple(cfg["prune"]["exclude"]),
        dataset=cfg["dataset"], setup_seed=cfg["seed"], auto=auto,
        stability=Stability(st["path_points"], st["batchnorm_batches"],
                            st["data_order"] == "same", st["threshold"], tuple(st["ladder"])),
        model=(cfg["model"]["name"], {k: v for k, v in cfg["model"].items() if k != "name"}))
