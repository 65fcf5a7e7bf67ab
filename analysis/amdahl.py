"""Amdahl's law for the search: S(P) = 1 / (f + (1 - f) / P), f the serial fraction at P = 1.

Two estimates of f: the fit of the wall times T(P) of runs of one config at several P, and
the serial phases measured inside a run (analysis.timeline.serial_seconds). Then a projection
of the grid to a cluster from a run's measured per-cell and serial times.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

# The seeds' cluster: 20 Horovod groups of 4 GPUs, M = 20 masks x N = 5 rewind points.
SEEDS = {"groups": 20, "group_size": 4, "masks": 20, "rewinds": 5}


def speedup(f, p):
    """Amdahl's speed-up over one rank."""
    p = np.asarray(p, np.float64)
    return 1.0 / (f + (1.0 - f) / p)


def fit(p, t) -> tuple[float, float]:
    """(f, T1) with T(P) = T1 * (f + (1 - f) / P) closest to the measured wall times.

    T(P) = a + b / P is linear in a = T1 f and b = T1 (1 - f); each equation is divided by
    its T so every P counts by its relative error, not its seconds. Needs two distinct P.
    No clipping: f < 0 means super-linear speed-up, f > 1 that more ranks made it slower.
    """
    p, t = np.asarray(p, np.float64), np.asarray(t, np.float64)
    if len(set(p.tolist())) < 2:
        raise ValueError("an Amdahl fit needs runs at two or more different P")
    design = np.stack([1.0 / t, 1.0 / (p * t)], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, np.ones_like(t), rcond=None)
    return float(a / (a + b)), float(a + b)


def fraction_from_phases(serial: float, wall: float, p: int) -> float:
    """f implied by one run at P: its serial seconds over the time it would take at P = 1 if
    its parallel part (wall - serial) were P times longer there. At P = 1 this is serial/wall."""
    return serial / (serial + p * (wall - serial))


@dataclasses.dataclass
class Projection:
    cell_seconds: float      # one cell on one cluster group
    serial_seconds: float
    cells: int
    groups: int
    rounds: int              # cells each group trains one after another
    wall: float              # serial + rounds x cell
    one_group: float         # serial + cells x cell: the grid on one group
    speedup: float
    assumptions: list


def project(cell_seconds: float, serial_seconds: float, measured_group_size: int,
            efficiency: float = 1.0, groups: int = SEEDS["groups"],
            group_size: int = SEEDS["group_size"],
            cells: int = SEEDS["masks"] * SEEDS["rewinds"]) -> Projection:
    """The grid of `cells` on `groups` groups of `group_size`, from measured times.

    A cell measured on a group of g ranks takes g / (group_size x efficiency) times as long
    on a cluster group (data-parallel efficiency `efficiency`, one cluster device as fast as
    one measured rank); the serial part (setup, dense phase, broadcast, gather) is as
    measured: it does not depend on the number of cells.
    """
    t_cell = cell_seconds * measured_group_size / (group_size * efficiency)
    rounds = math.ceil(cells / groups)
    wall = serial_seconds + rounds * t_cell
    one = serial_seconds + cells * t_cell
    assumptions = [
        f"a cell takes the measured {cell_seconds:.2f} s (mean, on groups of "
        f"{measured_group_size}) x {measured_group_size} / ({group_size} x efficiency "
        f"{efficiency:g}) on a group of {group_size}; one cluster device is as fast as one "
        "measured rank",
        f"the serial part is the measured {serial_seconds:.2f} s (setup, dense phase, "
        "broadcast, gather), independent of the number of cells",
        f"{cells} cells share {groups} groups evenly: {rounds} cells one after another "
        "per group, no load imbalance",
    ]
    return Projection(t_cell, serial_seconds, cells, groups, rounds, wall, one,
                      one / wall, assumptions)
