"""Read ahead in a background thread, so that a training step finds its batch ready.

The thread fills a bounded queue (memory stays at `depth` batches); reading and augmenting
are numpy and HDF5 calls, and the training step runs in TensorFlow with the GIL released,
so the two overlap. Errors in the thread are raised in the consumer; a consumer that stops
early stops the thread.
"""
from __future__ import annotations

import queue
import threading
import time

_END = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class Stats:
    """Time the consumer spent waiting for batches: zero means input never held a step up."""

    def __init__(self):
        self.wait_seconds = 0.0
        self.batches = 0


def prefetch(iterator, depth: int, stats: Stats | None = None):
    """Yield the items of `iterator`, produced up to `depth` ahead by a daemon thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in iterator:
                if not put(item):
                    return
        except BaseException as exc:   # handed to the consumer, raised there
            put(_Failure(exc))
            return
        put(_END)

    thread = threading.Thread(target=work, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            t = time.perf_counter()
            item = q.get()
            if stats is not None:
                stats.wait_seconds += time.perf_counter() - t
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            if stats is not None:
                stats.batches += 1
            yield item
    finally:
        stop.set()
