"""On-the-fly augmentation of uint8 NHWC batches, as the seeds train CIFAR: a random crop
of the image padded with zeros (4 px for 32x32), then a horizontal flip half of the time.

Vectorized: a strided view holds every possible crop of every image without copying, and one
fancy-index picks each image's crop; the flip reverses the chosen images' columns.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def default_pad(height: int) -> int:
    """4 px for 32x32 (the seeds' CIFAR setting), scaled with the image: 8 px for 64x64."""
    return max(1, height // 8)


def random_crop_flip(x: np.ndarray, rng: np.random.Generator, pad: int,
                     flip: bool = True, part: tuple[int, int] = (0, 1)) -> np.ndarray:
    """A new batch: each image shifted by up to `pad` pixels (zeros fill), maybe mirrored.

    part=(index, count): x is the index-th of count equal slices of a larger batch; the draws
    are made for the whole batch and this slice's are used, so a group of ranks augments
    the examples of a global batch exactly as one rank would."""
    n, h, w, c = x.shape
    index, count = part
    total, mine = n * count, slice(index * n, (index + 1) * n)
    if pad > 0:
        padded = np.zeros((n, h + 2 * pad, w + 2 * pad, c), np.uint8)
        padded[:, pad:pad + h, pad:pad + w] = x
        windows = sliding_window_view(padded, (h, w, c), axis=(1, 2, 3))
        dy = rng.integers(0, 2 * pad + 1, total)[mine]
        dx = rng.integers(0, 2 * pad + 1, total)[mine]
        out = windows[np.arange(n), dy, dx, 0]
    else:
        out = x.copy()
    if flip:
        mirror = rng.random(total)[mine] < 0.5
        out[mirror] = out[mirror, :, ::-1]
    return out
