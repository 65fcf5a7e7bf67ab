"""Random streams keyed by what they belong to, never by who computes them.

A cell's data order comes from (seed, CELL, cell id, epoch) and the shard it reads (its group
rank, mixed in by the reader), so the same cell sees the same data whichever group, world size
or resumed layout trains it. numpy's SeedSequence makes distinct keys independent streams,
which arithmetic such as seed * 7919 + rank does not.
"""
from __future__ import annotations

import numpy as np

DENSE, CELL, REINIT, RANDOM_MASK = 0, 1, 2, 3   # what a stream belongs to: a key's first element
SECOND_COPY, LADDER, BATCHNORM = 4, 5, 6         # stability pairs' second data order, the dense
#                                                  net's pairs (auto), BatchNorm re-estimation


def derive(*key: int) -> int:
    """A 32-bit seed (what Keras, numpy and TensorFlow all accept) for a key of ints >= 0."""
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(1, np.uint32)[0])
