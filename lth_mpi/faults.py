"""Fault injection at the results file's write points, for the tests.

`LTH_FAULT=ACTION:POINT[:N]` makes the N-th time (default the first) the writer reaches
POINT fail: `exit` ends the process at once (as SIGKILL or a node loss would, mid-write),
`enospc` raises the OSError a full disk gives. Points: dense-curves, dense-masks (inside
the dense phase's writes), cell-curves, cell-attrs (inside a cell's), cell-replace (after a
cell kept under keep_weights: best is complete, before the copy it replaces is deleted).
Unset, it costs one dictionary lookup per write.
"""
from __future__ import annotations

import errno
import os

POINTS = ("dense-curves", "dense-masks", "cell-curves", "cell-attrs", "cell-replace")
_hits: dict[str, int] = {}


def hit(point: str) -> None:
    spec = os.environ.get("LTH_FAULT")
    if not spec:
        return
    action, _, rest = spec.partition(":")
    where, _, nth = rest.partition(":")
    if where != point:
        return
    _hits[point] = _hits.get(point, 0) + 1
    if _hits[point] != int(nth or 1):
        return
    if action == "exit":
        os._exit(9)
    if action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    raise ValueError(f"LTH_FAULT: unknown action {action!r} (exit or enospc)")
