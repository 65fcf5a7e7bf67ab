"""What every pruning mode answers, with the answers most modes share."""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Kernels:
    """The model's prunable kernels, as a mode needs them: weight paths, shapes and the
    layer each belongs to (in prunable order)."""
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    layers: tuple[str, ...]

    @property
    def sizes(self) -> dict[str, int]:
        return {n: int(np.prod(s)) for n, s in zip(self.names, self.shapes)}

    @property
    def packed_len(self) -> int:
        """Bytes of one bit-packed mask over every prunable kernel."""
        return (sum(self.sizes.values()) + 7) // 8


class Mode:
    """A pruning mode. Cells are (mask index, rewind, control, replicate) like in every
    mode; the mode says what a mask index means and where its mask comes from."""
    name = ""
    chained = False                       # a rewind point's cells run in order on one group
    has_levels = False                    # mask index m is level m + 1 (tables show it)
    rewound_controls = ("random_mask", "stability")   # one cell per rewind point

    def __init__(self, prune: dict):
        self.prune = prune
        self.scope = prune["scope"]
        self.kernels: Kernels | None = None

    def bind(self, kernels: Kernels) -> "Mode":
        """The mode for this model's kernels (what targets and masks are computed over)."""
        self.kernels = kernels
        return self

    @staticmethod
    def check(prune: dict, controls: list) -> None:
        """Refuse what this mode cannot run (ValueError naming the key, one line); fill in
        the mode's own defaults."""

    def check_model(self, last_iteration: int) -> None:
        """Refuse settings the bound model or the training length cannot run (ValueError,
        one line)."""

    def n_masks(self) -> int:
        """How many mask indices (sparsities or levels), known from the config alone."""
        return len(self.prune["sparsities"])

    def targets(self) -> list[float]:
        """The sparsity of each mask index (on the bound kernels)."""
        return list(self.prune["sparsities"])

    def stored_targets(self, masks_attrs) -> list[float]:
        """The targets of a results file's /masks attributes (None: not written yet)."""
        return list(self.prune["sparsities"])

    def mask_rows(self) -> int:
        """Rows of the dense phase's /masks."""
        return self.n_masks()

    def dense_masks(self, trained: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(bit-packed masks (mask_rows, packed_len), realized sparsities) from the trained
        dense kernels ({path: array}, prunable order)."""
        raise NotImplementedError

    def follows_ticket(self, cell) -> bool:
        """Does the cell train a mask a ticket's training makes (it runs in a later pass)?"""
        return False

    def cell_mask(self, cell, dense_rows: np.ndarray, chain_mask) -> np.ndarray | None:
        """The bit-packed mask a cell starts with: its row of the dense phase's masks
        (`chain_mask`: the mask its chain or followed ticket gives, where the mode has
        chains); None to start dense."""
        return dense_rows[cell.mask]

    def pruner(self, final: float, trainer, start: int):
        """The trainer's on_step callback while a cell trains (None: masks stay fixed)."""
        return None

    def after_cell(self, trainer, masks, trained, history, chained: bool, last: bool
                   ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(the mask to store with the cell, the next level's mask), bit-packed, or None;
        `masks` the cell trained with, `trained` its kernels at the end (prunable order)."""
        return None, None

    def level(self, cell) -> int:
        """The cell's `level` attribute (0 outside iterative pruning)."""
        return 0

    def summary(self, n_masks: int) -> str:
        """The report's words for the masks."""
        return f"{n_masks} sparsities ({self.scope})"

    def describe(self, n_masks: int, n_chains: int, controls: list) -> str:
        """The --dry-run plan's words for the masks."""
        return f"{n_masks} masks"

    def resumable(self, cells) -> str | None:
        """Why a file's cells (h5py group) cannot be continued by this version, or None."""
        return None

