"""Masks and rewind checkpoints reach every rank bit-exactly.

Usage: mpiexec -n <p> python -m mpi4py tests/mpi/check_broadcast.py
"""
import hashlib

import numpy as np
from mpi4py import MPI

from lth_mpi import pruning
from lth_mpi.comm.world import bcast_array

world = MPI.COMM_WORLD
rank = world.Get_rank()
shape = (3, 100003)
if rank == 0:
    r = np.random.default_rng(42)
    ckpts = r.standard_normal(shape).astype(np.float32)
    ckpts[0, :4] = [np.nan, np.inf, -0.0, np.finfo(np.float32).tiny / 8]   # odd bits survive
    kernels = {"a": r.standard_normal((300, 301)), "b": r.standard_normal((17, 5))}
    packed = np.stack([pruning.pack_masks(list(pruning.magnitude_masks(kernels, s).values()))
                       for s in (0.5, 0.9, 0.98)])
else:
    ckpts = packed = None
plen = -(-(300 * 301 + 17 * 5) // 8)
got_c = bcast_array(ckpts, shape, np.float32)
got_m = bcast_array(packed, (3, plen), np.uint8)
digest = hashlib.sha256(got_c.tobytes() + got_m.tobytes()).hexdigest()
digests = world.allgather(digest)
assert len(set(digests)) == 1, digests
masks = pruning.unpack_masks(got_m[2], [(300, 301), (17, 5)])
assert sum(int((~m).sum()) for m in masks) == round(0.98 * (300 * 301 + 17 * 5))
if rank == 0:
    print(f"broadcast OK on {world.Get_size()} ranks: {digest[:12]}")
