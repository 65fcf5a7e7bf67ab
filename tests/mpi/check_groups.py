"""Groups split COMM_WORLD as planned and, together, own every cell exactly once.

Usage: mpiexec -n <p> python -m mpi4py tests/mpi/check_groups.py
"""
from mpi4py import MPI

from lth_mpi import plan
from lth_mpi.comm.world import split

world = MPI.COMM_WORLD
size = world.Get_size()
for g in [d for d in range(1, size + 1) if size % d == 0]:
    layout = split(g)
    assert layout.group_comm.Get_size() == g and layout.n_groups == size // g
    assert layout.group_comm.Get_rank() == layout.group_rank
    for by in ("masks", "cells"):
        grid = plan.cells(7, 3, ["random_reinit"])
        mine = [c.id for c in plan.assign(grid, layout.n_groups, by)[layout.group]]
        # all ranks of a group agree on the group's cells
        assert len(set(map(tuple, layout.group_comm.allgather(mine)))) == 1
        leaders = world.allgather(mine if layout.is_leader else [])
        owned = sorted(i for part in leaders for i in part)
        assert owned == list(range(len(grid))), (g, by, owned)
    layout.group_comm.Free()
if world.Get_rank() == 0:
    print(f"groups OK on {size} ranks")
