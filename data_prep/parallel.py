"""The only module of data_prep that touches MPI.

Converters are pure functions; this module gives them a rank, a size, a way to share one
rank's decision with all (so every rank acts alike) and a barrier that sleeps instead of
spinning (MPICH's blocking calls busy-wait and would steal cores from ranks still decoding).
Without mpi4py, or outside mpiexec, it is a world of one rank.
"""
from __future__ import annotations

import time


class World:
    """COMM_WORLD, or a single rank when mpi4py is not installed."""

    def __init__(self):
        try:
            from mpi4py import MPI
        except ImportError:
            self.comm = None
            self.rank, self.size = 0, 1
        else:
            self.comm = MPI.COMM_WORLD
            self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()

    def wait(self, poll: float = 0.02) -> None:
        """A barrier that sleeps while the slowest rank still works."""
        if self.comm is None:
            return
        req = self.comm.Ibarrier()
        while not req.Test():
            time.sleep(poll)

    def agree(self, error: str | None) -> str | None:
        """Every rank's error (or None) to all; all return the first, so all act alike.

        Waits quietly first: ranks reach this point at different times.
        """
        if self.comm is None:
            return error
        self.wait()
        return next((e for e in self.comm.allgather(error) if e), None)

    def share(self, compute):
        """Run `compute()` on rank 0 only and give every rank (result, error message).

        A ValueError or OSError on rank 0 becomes the error every rank sees.
        """
        result, error = None, None
        if self.rank == 0:
            try:
                result = compute()
            except (ValueError, OSError) as exc:
                error = str(exc)
        if self.comm is None:
            return result, error
        self.wait()
        return self.comm.bcast((result, error), root=0)

    def sum(self, value: float) -> float:
        return value if self.comm is None else self.comm.allreduce(value)
