"""Finished cells, group leaders to the writer rank: one wire format, sent without blocking.

The writer takes them whenever it has a moment (between its own epochs), so cells reach the
file as they finish, not at the end.
"""
from __future__ import annotations

import time

import numpy as np
from mpi4py import MPI

from .world import Layout

RESULT_TAG = 17
END_TAG = 19         # a group leader has sent all its cells: [number of cells sent]


class ResultChannel:
    """Leaders send each finished cell to the writer as one byte buffer (wire.CellResult
    encodes and decodes it); the writer drains them whenever it has a moment (after each of
    its own epochs)."""

    def __init__(self, layout: Layout, on_result):
        self.layout, self.on_result = layout, on_result
        self.pending = []          # (request, buffer) of non-blocking sends
        self.received = {}         # source rank -> cells received
        self.sent = 0

    def send(self, message: np.ndarray) -> None:
        self.sent += 1
        if self.layout.is_writer:
            self.on_result(message)
            return
        buf = np.ascontiguousarray(message, np.uint8)
        self.pending.append((self.layout.world.Isend(buf, dest=0, tag=RESULT_TAG), buf))

    def end(self) -> None:
        """Leaders other than the writer: no more cells from this group (it may have
        stopped early), and how many were sent."""
        buf = np.array([self.sent], np.int64)
        self.pending.append((self.layout.world.Isend(buf, dest=0, tag=END_TAG), buf))

    def drain(self) -> None:
        """Writer: handle every message that has arrived, without waiting."""
        status = MPI.Status()
        while self.layout.world.Iprobe(MPI.ANY_SOURCE, RESULT_TAG, status):
            buf = np.empty(status.Get_count(MPI.BYTE), np.uint8)
            self.layout.world.Recv(buf, status.Get_source(), RESULT_TAG)
            self.received[status.Get_source()] = self.received.get(status.Get_source(), 0) + 1
            self.on_result(buf)

    def finish(self, leaders: list[int], poll: float = 0.02, tick=None) -> None:
        """Writer: take cells until every other group leader has said it ended and all the
        cells it announced have arrived. Others: complete sends (the writer takes them
        between its epochs). Both sleep between polls and run `tick()` at each (a rank with
        nothing left to train still passes a stop request on)."""
        if not self.layout.is_writer:
            while not MPI.Request.Testall([req for req, _ in self.pending]):
                if tick is not None:
                    tick()
                time.sleep(poll)
            self.pending.clear()
            return
        announced, status = {}, MPI.Status()
        while True:
            if tick is not None:
                tick()
            self.drain()
            while self.layout.world.Iprobe(MPI.ANY_SOURCE, END_TAG, status):
                buf = np.empty(1, np.int64)
                self.layout.world.Recv(buf, status.Get_source(), END_TAG)
                announced[status.Get_source()] = int(buf[0])
            if all(r in announced and self.received.get(r, 0) >= announced[r]
                   for r in leaders):
                return
            time.sleep(poll)
