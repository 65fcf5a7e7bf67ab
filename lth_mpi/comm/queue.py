"""Dynamic scheduling: a shared counter that groups take tasks from as they free up."""
from __future__ import annotations

import numpy as np
from mpi4py import MPI

from .world import Layout


class WorkQueue:
    """Groups take the next task as they free up. The queue is a counter in rank 0's memory,
    exposed as an MPI window: a leader takes a task with one atomic fetch-and-add (passive
    target, so rank 0 answers nothing and keeps training) and tells its group by broadcast.
    Every rank holds the same ordered task list; the counter says how far it has been taken.
    Creating and freeing the window are collective over the world."""

    def __init__(self, layout: Layout):
        self.layout = layout
        self.win = MPI.Win.Allocate(8 if layout.rank == 0 else 0, 8, comm=layout.world)
        if layout.rank == 0:
            self.win.Lock(0, MPI.LOCK_EXCLUSIVE)
            self.win.Put(np.zeros(1, np.int64), 0)
            self.win.Unlock(0)
        layout.world.Barrier()

    def take(self) -> int:
        """The index of this group's next task (>= the number of tasks: none left)."""
        got = np.zeros(1, np.int64)
        if self.layout.is_leader:
            self.win.Lock(0, MPI.LOCK_SHARED)
            self.win.Fetch_and_op(np.ones(1, np.int64), got, 0, 0, MPI.SUM)
            self.win.Unlock(0)
        self.layout.group_comm.Bcast(got, root=0)
        return int(got[0])

    def free(self) -> None:
        self.win.Free()
