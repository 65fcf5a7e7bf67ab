"""Groups of ranks read a converted file together: per epoch, every example of the training
split reaches exactly one rank of each group (but the remainder dropped for equal step
counts), with prefetch threads and streaming reads, in memory and from disk.

Usage: mpiexec -n <p> python -m mpi4py tests/mpi/read_sharded.py FILE.h5 GROUP_SIZE
"""
import sys

import numpy as np
from mpi4py import MPI

from lth_mpi import data
from lth_mpi.comm.world import split

path, group_size = sys.argv[1], int(sys.argv[2])
world = MPI.COMM_WORLD
layout = split(group_size)
comm = layout.group_comm
for in_memory in (False, True):
    cfg = {"name": "h5", "path": path, "train_examples": None, "test_examples": None,
           "in_memory": in_memory, "shuffle_buffer": 200, "read_rows": 32, "augment": False}
    data.check(cfg)
    d = data.load(cfg, (layout.group_rank, group_size))
    global_batch = 24 * group_size
    steps = d.train_total // global_batch
    for epoch in (1, 2):
        seed = 7919 + 31 * layout.group + epoch   # one seed per group and epoch (seeds.py)
        got = np.concatenate([x[:, 0, 0, 0].astype(int) + 256 * x[:, 0, 0, 1].astype(int)
                              for x, _ in d.train_batches(seed, steps, global_batch)])
        everyone = np.concatenate(comm.allgather(got))
        assert len(everyone) == steps * global_batch == len(np.unique(everyone)), epoch
        assert everyone.max() < d.train_total
    test = np.concatenate([x[:, 0, 0, 0].astype(int) + 256 * x[:, 0, 0, 1].astype(int)
                           for x, _ in d.test_batches(50)])
    assert np.array_equal(np.concatenate(comm.allgather(test)), np.arange(d.test_total))
    assert d.stats.batches > 0
if world.Get_rank() == 0:
    print(f"read coverage OK on {world.Get_size()} ranks, groups of {group_size}")
