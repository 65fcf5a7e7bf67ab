"""Pruning modes as strategies: where a search's masks come from. One file per mode.

A mode is chosen once from `prune.mode` (`of`); the search, the plan, the results file and
the analysis ask it instead of testing which mode runs. Adding a mode is a new file here
with a Mode subclass, its name in MODES, and its keys declared in lth_mpi.config.
"""
from __future__ import annotations

from .base import Kernels, Mode
from .gradual import Gradual
from .iterative import Iterative
from .oneshot import OneShot

MODES = {m.name: m for m in (OneShot, Iterative, Gradual)}

__all__ = ["Kernels", "Mode", "MODES", "of"]


def of(cfg: dict) -> Mode:
    """The mode of a validated config (files written before modes existed: one-shot)."""
    return MODES[cfg["prune"].get("mode", "oneshot")](cfg["prune"])
