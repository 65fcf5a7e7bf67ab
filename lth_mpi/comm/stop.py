"""A clean stop: SIGTERM or SIGINT on any rank stops the whole job, every result kept."""
from __future__ import annotations

import signal

import numpy as np
from mpi4py import MPI

STOP_TAG = 18        # a rank was told to stop (SIGTERM, SIGINT): [rank, signal number]


class Stopper:
    """SIGTERM or SIGINT on any rank (from the launcher, Slurm's --signal, or kill) stops the
    whole job cleanly. The handler only records the signal; at its next check the rank tells
    every other rank with a small message, and each rank's checks see either. Checks happen
    between training steps (the trainer agrees on them within a group) and while waiting."""

    def __init__(self):
        self.world = MPI.COMM_WORLD
        self.signum = None            # the signal this rank received
        self.origin = None            # (rank, signal) of the first stop request seen
        self.sends = []
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, self._handle)

    def _handle(self, signum, frame):
        self.signum = self.signum or signum

    def requested(self) -> bool:
        """Has any rank been told to stop? Cheap: a flag and an Iprobe."""
        me = self.world.Get_rank()
        if self.signum:
            self.origin = self.origin or (me, self.signum)
            if not self.sends:
                msg = np.array([me, self.signum], np.int64)
                self.sends = [(self.world.Isend(msg, dest=r, tag=STOP_TAG), msg)
                              for r in range(self.world.Get_size()) if r != me]
        status = MPI.Status()
        while self.world.Iprobe(MPI.ANY_SOURCE, STOP_TAG, status):
            buf = np.empty(2, np.int64)
            self.world.Recv(buf, status.Get_source(), STOP_TAG)
            self.origin = self.origin or (int(buf[0]), int(buf[1]))
        return self.origin is not None

    def describe(self) -> str:
        if self.origin is None:
            return "a stop request"
        rank, signum = self.origin
        return f"{signal.Signals(signum).name} on rank {rank}"

    def finish(self) -> None:
        """Complete this rank's stop messages and take any still in flight (after the
        final barrier, so every message sent has arrived)."""
        MPI.Request.Waitall([r for r, _ in self.sends])
        self.requested()
