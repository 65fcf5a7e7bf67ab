"""Ranks, groups and acting alike: every rank learns every rank's error before anyone acts.

Without mpi4py (data_prep converting a small dataset on a laptop) it is a world of one rank.
"""
from __future__ import annotations

import dataclasses
import socket
import sys
import time

import numpy as np

try:
    from mpi4py import MPI
except ImportError:       # a world of one rank: only data_prep runs like this
    MPI = None


@dataclasses.dataclass
class Layout:
    world: "MPI.Comm"
    group_comm: "MPI.Comm"
    rank: int
    size: int
    group: int           # index of this rank's group
    group_rank: int
    group_size: int
    n_groups: int
    local_rank: int      # among the ranks on this node (all groups), for GPUs and threads
    local_size: int
    host: str
    threads: int = 1
    allreduce: str = "none"   # how the group averages gradients: none (group of one), mpi, horovod
    gpu: str = ""             # the CUDA device id it claims (training.gpu_claim), "" for none

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    @property
    def is_leader(self) -> bool:
        return self.group_rank == 0


def size() -> int:
    return MPI.COMM_WORLD.Get_size() if MPI else 1


def rank() -> int:
    return MPI.COMM_WORLD.Get_rank() if MPI else 0


def split(group_size: int) -> Layout:
    """Groups of consecutive ranks (rank // G), and the node-local communicator."""
    world = MPI.COMM_WORLD
    me, n = world.Get_rank(), world.Get_size()
    local = world.Split_type(MPI.COMM_TYPE_SHARED, key=me)
    group = me // group_size
    return Layout(world, world.Split(color=group, key=me), me, n, group,
                  me % group_size, group_size, n // group_size,
                  local.Get_rank(), local.Get_size(), socket.gethostname())


def wait_quietly(comm=None, poll: float = 0.02, tick=None) -> None:
    """A barrier that sleeps instead of spinning while the slowest rank still computes;
    `tick()` runs at every poll (a waiting rank still passes a stop request on)."""
    if MPI is None:
        return
    req = (comm or MPI.COMM_WORLD).Ibarrier()
    while not req.Test():
        if tick is not None:
            tick()
        time.sleep(poll)


def agree(error: str | None, comm=None) -> str | None:
    """Share every rank's error (or None); all ranks return the first one, so all act alike.
    Waits quietly first: ranks reach a check at different times."""
    if MPI is None:
        return error
    wait_quietly(comm)
    errors = (comm or MPI.COMM_WORLD).allgather(error)
    return next((e for e in errors if e), None)


def fail(message: str, code: int = 2, kind: str = "error", prog: str = "lth-mpi",
         leave: bool = True) -> int:
    """Every rank prints the same one-line error and exits non-zero (no rank left waiting).
    Called by all ranks once they agree; each writes before any exits, because under
    `python -m mpi4py` the first non-zero exit aborts the job and would cut the others off.
    `leave=False` returns the exit status instead (a command's main returns it)."""
    sys.stderr.write(f"{prog}: {kind}: {message}\n")   # one write: lines never interleave
    sys.stderr.flush()
    wait_quietly()
    if leave:
        sys.exit(code)
    return code


def agree_or_fail(error: str | None, cleanup=None) -> None:
    """The check every phase ends with: share the errors; if any rank had one, run
    `cleanup(error)` (the writer marks the file) and fail alike on every rank."""
    error = agree(error)
    if error:
        if cleanup is not None:
            cleanup(error)
        fail(error)


def share(compute):
    """Run `compute()` on rank 0 only and give every rank (result, error message); a
    ValueError or OSError on rank 0 becomes the error every rank sees."""
    result, error = None, None
    if rank() == 0:
        try:
            result = compute()
        except (ValueError, OSError) as exc:
            error = str(exc)
    if MPI is None:
        return result, error
    wait_quietly()
    return MPI.COMM_WORLD.bcast((result, error), root=0)


def total(value: float) -> float:
    """A number summed over the ranks."""
    return value if MPI is None else MPI.COMM_WORLD.allreduce(value)


ABORT_GRACE = 1.0   # seconds for the launcher to forward what this rank printed last


def abort(code: int) -> None:
    """End every rank now: for a fault found mid-grid on one rank while the others train.
    The pause first: MPICH's launcher kills the job as soon as it hears the abort and
    could drop the error line this rank has just written (seen on a fast 2-core machine)."""
    sys.stdout.flush()
    sys.stderr.flush()
    time.sleep(ABORT_GRACE)
    MPI.COMM_WORLD.Abort(code)


def bcast_object(obj, root=0):
    """Small metadata (names, flags) from root to all."""
    return MPI.COMM_WORLD.bcast(obj, root=root)


def bcast_array(array: np.ndarray | None, shape, dtype, root=0, comm=None) -> np.ndarray:
    """Bit-exact broadcast of a numpy buffer; non-root ranks pass None and get a new array."""
    comm = comm or MPI.COMM_WORLD
    buf = np.ascontiguousarray(array) if comm.Get_rank() == root else np.empty(shape, dtype)
    comm.Bcast(buf, root=root)
    return buf


def allgather(obj, comm=None) -> list:
    """Every rank's small object, on every rank."""
    return (comm or MPI.COMM_WORLD).allgather(obj)


def gather_rows(rows: np.ndarray, root=0) -> np.ndarray | None:
    """Stack every rank's float64 rows (k_i, width) on root, with Gatherv."""
    world = MPI.COMM_WORLD
    rows = np.ascontiguousarray(rows, np.float64)
    counts = np.array(world.gather(rows.size, root=root) or [], np.int64)
    if world.Get_rank() != root:
        world.Gatherv(rows, None, root=root)
        return None
    out = np.empty(int(counts.sum()), np.float64)
    world.Gatherv(rows, (out, counts), root=root)
    return out.reshape(-1, rows.shape[1])


def library() -> tuple[str, str]:
    """(MPI_Get_library_version, the MPI standard's version) of the running MPI."""
    # Open MPI pads the string with NULs, which HDF5 string attributes cannot hold
    return (MPI.Get_library_version().replace("\0", "").strip(), "%d.%d" % MPI.Get_version())
