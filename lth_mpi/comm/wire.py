"""A finished cell's wire format: curves, masks and weights in one byte buffer.

Pure numpy (no MPI), so readers of results files can import it without starting MPI.
"""
from __future__ import annotations

import dataclasses

import numpy as np

# a cell's per-epoch curves, in the order they travel (and the results file's /dense names)
CURVES = ("epoch", "iteration", "train_loss", "test_loss", "test_accuracy", "val_loss",
          "val_accuracy", "epoch_seconds")


@dataclasses.dataclass
class CellResult:
    """What a group leader sends the writer when a cell finishes: one encode/decode pair,
    so the two ends cannot disagree on positions. `mask` and `mask_next` (bit-packed, empty
    when not kept) are iterative pruning's: the mask the level trained with and the next
    level's, pruned from this level's trained weights (what a resumed chain starts from)."""
    cell: int
    group: int
    t_start: float
    t_end: float
    history: dict                  # CURVES -> arrays, plus "diverged" (epoch, 0 if trained)
    mask: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.uint8))
    mask_next: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.uint8))
    weights: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))
    # a stability pair's: both copies' final (test, val) accuracies, then its path's rows
    # (stability.PATH_COLUMNS), flat float64; empty for other cells and a diverged pair
    pair: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float64))

    HEAD = 10  # cell, group, t_start, t_end, epochs, diverged, len(mask), len(mask_next),
    #            len(weights): trained weights, flat float32 (results.keep_weights), len(pair)

    def encode(self) -> np.ndarray:
        n = len(self.history["epoch"])
        head = [self.cell, self.group, self.t_start, self.t_end, n, self.history["diverged"],
                self.mask.size, self.mask_next.size, self.weights.size, self.pair.size]
        numbers = np.concatenate([np.asarray(head, np.float64)]
                                 + [np.asarray(self.history[k], np.float64) for k in CURVES]
                                 + [np.asarray(self.pair, np.float64)])
        return np.concatenate([numbers.view(np.uint8), self.mask.astype(np.uint8),
                               self.mask_next.astype(np.uint8),
                               np.ascontiguousarray(self.weights, np.float32).view(np.uint8)])

    @classmethod
    def decode(cls, buf: np.ndarray) -> "CellResult":
        buf = np.ascontiguousarray(buf, np.uint8)
        head = buf[:cls.HEAD * 8].view(np.float64)
        n, n_mask, n_next, n_weights = int(head[4]), int(head[6]), int(head[7]), int(head[8])
        n_pair = int(head[9])
        at = (cls.HEAD + len(CURVES) * n) * 8
        end = at + n_pair * 8
        curves = buf[cls.HEAD * 8:at].view(np.float64).reshape(len(CURVES), n)
        pair = buf[at:end].view(np.float64).copy()
        history = dict(zip(CURVES, curves))
        history["diverged"] = int(head[5])
        at = end + n_mask + n_next
        return cls(int(head[0]), int(head[1]), float(head[2]), float(head[3]), history,
                   buf[end:end + n_mask].copy(), buf[end + n_mask:at].copy(),
                   buf[at:at + 4 * n_weights].copy().view(np.float32), pair)
