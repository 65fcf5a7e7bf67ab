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
    Creating and freeing the window are collective over the world.

    Where the MPI cannot make the window (Open MPI 4.1 across nodes over TCP, once
    TensorFlow is loaded, answers MPI_ERR_WIN), the groups deal the same ordered tasks round
    robin instead (group g: g, g + G, ...): the same cells, balanced less well; `fallback`
    says why."""

    def __init__(self, layout: Layout):
        self.layout = layout
        self.win, self.fallback, self.next = None, "", layout.group
        try:
            win = MPI.Win.Allocate(8 if layout.rank == 0 else 0, 8, comm=layout.world)
        except MPI.Exception as e:
            win, self.fallback = None, str(e).splitlines()[0]
        failed = layout.world.allgather(self.fallback)
        if any(failed):             # a window some ranks lack is unusable (and leaks)
            self.fallback = next(f for f in failed if f)
            return
        self.win = win
        if layout.rank == 0:
            self.win.Lock(0, MPI.LOCK_EXCLUSIVE)
            self.win.Put(np.zeros(1, np.int64), 0)
            self.win.Unlock(0)
        layout.world.Barrier()

    def take(self) -> int:
        """The index of this group's next task (>= the number of tasks: none left)."""
        if self.win is None:
            self.next += self.layout.n_groups
            return self.next - self.layout.n_groups
        got = np.zeros(1, np.int64)
        if self.layout.is_leader:
            self.win.Lock(0, MPI.LOCK_SHARED)
            self.win.Fetch_and_op(np.ones(1, np.int64), got, 0, 0, MPI.SUM)
            self.win.Unlock(0)
        self.layout.group_comm.Bcast(got, root=0)
        return int(got[0])

    def free(self) -> None:
        if self.win is not None:
            self.win.Free()
