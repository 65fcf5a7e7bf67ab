"""The shared queue hands every task out exactly once, with MPI's window or, where the MPI
cannot make one (Open MPI 4.1 across nodes over TCP), dealt round robin.

Usage: mpiexec -n <p> python -m mpi4py tests/mpi/check_queue.py
"""
from mpi4py import MPI

from lth_mpi.comm import queue
from lth_mpi.comm.queue import WorkQueue
from lth_mpi.comm.world import split

world = MPI.COMM_WORLD


class Refusing:
    """mpi4py's MPI, except that no rank can allocate a window (as every rank fails there)."""
    class Win:
        @staticmethod
        def Allocate(*args, **kw):
            raise MPI.Exception(MPI.ERR_WIN)

    def __getattr__(self, name):
        return getattr(MPI, name)


layout = split(1)
for broken in (False, True):
    queue.MPI = Refusing() if broken else MPI
    work = WorkQueue(layout)
    assert bool(work.fallback) == broken, work.fallback
    mine = []
    while (i := work.take()) < 10:
        mine.append(i)
    work.free()
    owned = sorted(i for part in world.allgather(mine) for i in part)
    assert owned == list(range(10)), (broken, owned)
    if broken:
        assert mine == list(range(layout.group, 10, layout.n_groups)), mine
if world.Get_rank() == 0:
    print(f"queue OK on {world.Get_size()} ranks")
