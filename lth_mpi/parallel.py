"""The parallel layer: the one module that touches mpi4py and Horovod.

Rules it keeps (docs/design.md): every rank calls every collective; decisions made on one
rank are shared before anyone acts; arrays move with buffer methods (Bcast, Gatherv, Send);
ranks that wait do so with a non-blocking barrier and sleep, because MPICH's blocking calls
spin and would steal the cores of the rank still computing.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import socket
import sys
import time

import numpy as np
from mpi4py import MPI

RESULT_TAG = 17
STOP_TAG = 18        # a rank was told to stop (SIGTERM, SIGINT): [rank, signal number]
END_TAG = 19         # a group leader has sent all its cells: [number of cells sent]


@dataclasses.dataclass
class Layout:
    world: MPI.Comm
    group_comm: MPI.Comm
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

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    @property
    def is_leader(self) -> bool:
        return self.group_rank == 0


def world_size() -> int:
    return MPI.COMM_WORLD.Get_size()


def world_rank() -> int:
    return MPI.COMM_WORLD.Get_rank()


def split(group_size: int) -> Layout:
    """Groups of consecutive ranks (rank // G), and the node-local communicator."""
    world = MPI.COMM_WORLD
    rank, size = world.Get_rank(), world.Get_size()
    local = world.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
    group = rank // group_size
    return Layout(world, world.Split(color=group, key=rank), rank, size, group,
                  rank % group_size, group_size, size // group_size,
                  local.Get_rank(), local.Get_size(), socket.gethostname())


def thread_budget(layout: Layout, threads: int | None) -> int:
    """Intra-op threads: the cores this rank is bound to if the launcher bound it, else its
    node-local share of the node's cores."""
    if threads:
        return threads
    bound = len(os.sched_getaffinity(0))
    cores = os.cpu_count() or 1
    return max(1, bound if bound < cores else cores // layout.local_size)


def configure_tensorflow(layout: Layout, threads: int | None, allreduce: str = "auto") -> None:
    """Threads, GPU pinning and the group's allreduce (config parallel.allreduce, `auto`
    resolved here, where the GPUs are known; ValueError if it asks for an absent Horovod);
    must run before TensorFlow creates its first tensor.

    GPUs are counted per node over all groups (hvd.local_rank() would count inside a group
    only, and two groups on a node would both claim GPU 0).
    """
    import tensorflow as tf
    layout.threads = thread_budget(layout, threads)
    tf.config.threading.set_intra_op_parallelism_threads(layout.threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(2, layout.threads))
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        gpu = gpus[layout.local_rank % len(gpus)]
        tf.config.set_visible_devices(gpu, "GPU")
        tf.config.experimental.set_memory_growth(gpu, True)
    # auto: Horovod with a GPU (NCCL keeps gradients on the device); on CPUs mpi4py, since
    # Horovod's background thread, polling every cycle, takes the cores that train (2 cores:
    # resnet20's group-of-2 step 0.81-0.91x one rank with Horovod, 0.56-0.59x with mpi4py;
    # mobilenet_v2 0.80-1.06x and 0.65-0.72x)
    # (and mpi4py wherever Horovod could not be built: run/install.sh goes on without it)
    if layout.group_size > 1:
        if allreduce == "horovod" or (allreduce == "auto" and gpus):   # only then imported
            version, _, why = horovod_status()
            if allreduce == "horovod" and not version:
                raise ValueError(f"parallel.allreduce: horovod, but Horovod is absent: {why}; "
                                 "use auto or mpi (mpi4py)")
            allreduce = "horovod" if version else "mpi"
        layout.allreduce = "mpi" if allreduce == "auto" else allreduce


def agree(error: str | None, comm=None) -> str | None:
    """Share every rank's error (or None); all ranks return the first one, so all act alike."""
    errors = (comm or MPI.COMM_WORLD).allgather(error)
    return next((e for e in errors if e), None)


ABORT_GRACE = 1.0   # seconds for the launcher to forward what this rank printed last


def abort(code: int) -> None:
    """End every rank now: for a fault found mid-grid on one rank while the others train.
    The pause first: MPICH's launcher kills the job as soon as it hears the abort and
    could drop the error line this rank has just written (seen on a fast 2-core machine)."""
    sys.stdout.flush()
    sys.stderr.flush()
    time.sleep(ABORT_GRACE)
    MPI.COMM_WORLD.Abort(code)


def fail(message: str, code: int = 2, kind: str = "error"):
    """Every rank prints the same one-line error and exits non-zero (no rank left waiting).
    Called by all ranks once they agree; each writes before any exits, because under
    `python -m mpi4py` the first non-zero exit aborts the job and would cut the others off."""
    sys.stderr.write(f"lth-mpi: {kind}: {message}\n")   # one write: lines never interleave
    sys.stderr.flush()
    wait_quietly()
    sys.exit(code)


def bcast_object(obj, root=0):
    """Small metadata (names, flags) from root to all."""
    return MPI.COMM_WORLD.bcast(obj, root=root)


def wait_quietly(comm=None, poll: float = 0.02, tick=None) -> None:
    """A barrier that sleeps instead of spinning while the slowest rank still computes;
    `tick()` runs at every poll (a waiting rank still passes a stop request on)."""
    req = (comm or MPI.COMM_WORLD).Ibarrier()
    while not req.Test():
        if tick is not None:
            tick()
        time.sleep(poll)


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


def bcast_array(array: np.ndarray | None, shape, dtype, root=0, comm=None) -> np.ndarray:
    """Bit-exact broadcast of a numpy buffer; non-root ranks pass None and get a new array."""
    comm = comm or MPI.COMM_WORLD
    buf = np.ascontiguousarray(array) if comm.Get_rank() == root else np.empty(shape, dtype)
    comm.Bcast(buf, root=root)
    return buf


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


# --- the collectives a trainer needs, for one group or for the world -------------------------

def batch_sum_factory(comm: MPI.Comm):
    """() -> a differentiable TF sum of a small float32 tensor over `comm`, for synchronized
    BatchNorm. Each call site gets its own duplicate of the communicator: TensorFlow may run
    two BatchNorm layers' reductions (a residual block's two branches) at once in different
    threads, and collectives on one communicator must come in the same order on every rank;
    on its own communicator a layer's forward and backward sums are ordered by the graph."""
    import tensorflow as tf

    def make():
        own = comm.Dup()

        def allreduce(x):
            buf = np.array(x, np.float32)
            own.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            return buf

        def reduce(x):
            out = tf.numpy_function(allreduce, [x], tf.float32, stateful=True)
            out.set_shape(x.shape)
            return out

        @tf.custom_gradient
        def summed(x):
            return reduce(x), reduce     # d(sum over ranks)/dx: the sum of upstream gradients
        return summed
    return make


def group_reducers(layout: Layout, allreduce: str | None = None):
    """The trainer's training.Group for this rank's group (None for a group of one: nothing to
    average), averaging with `allreduce`, horovod or mpi (default: the layout's, which
    configure_tensorflow resolved from the config)."""
    if layout.group_size == 1:
        return None
    if (allreduce or layout.allreduce) == "horovod":
        return init_horovod(layout)
    return mpi_reducers(layout.group_comm)


def init_horovod(layout: Layout):
    """hvd.init on the group's communicator; returns the trainer's training.Group, or None for
    a group of one (nothing to average: the trainer compiles a one-rank step, and Horovod's
    background thread is never started)."""
    if layout.group_size == 1:   # nothing to average: no Horovod, no background thread
        return None
    import horovod.tensorflow as hvd
    import tensorflow as tf
    from . import training
    hvd.init(comm=layout.group_comm)
    assert hvd.size() == layout.group_size, (hvd.size(), layout.group_size)

    def average(grads):
        return hvd.grouped_allreduce(grads, op=hvd.Average)

    def total(x):
        return hvd.allreduce(tf.constant(np.asarray(x, np.float64)), op=hvd.Sum).numpy()

    def broadcast(x):
        return hvd.broadcast(tf.constant(x), root_rank=0).numpy()

    return training.Group(layout.group_size, average, total, broadcast,
                          batch_sum_factory(layout.group_comm))


def leader_copy(flat: np.ndarray, comm: MPI.Comm | None = None) -> np.ndarray:
    """The leader's (rank 0 of comm) copy of a numpy buffer, on every rank."""
    return bcast_array(flat, flat.shape, flat.dtype, comm=comm)


def mpi_reducers(comm: MPI.Comm):
    """The trainer's training.Group over `comm` with mpi4py: the world for the data-parallel
    dense phase, a group's communicator where Horovod is not used. Gradients are averaged with
    one MPI Allreduce per step on a flat buffer, called from inside the TF graph; no thread of
    its own, so nothing runs between steps.
    """
    import tensorflow as tf
    from . import training
    size = comm.Get_size()

    def allreduce_mean(*arrays):
        flat = np.concatenate([a.ravel() for a in arrays]).astype(np.float32)
        comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
        flat /= size
        out, start = [], 0
        for a in arrays:
            out.append(flat[start:start + a.size].reshape(a.shape).astype(a.dtype))
            start += a.size
        return out

    def average(grads):
        out = tf.numpy_function(allreduce_mean, grads, [g.dtype for g in grads], stateful=True)
        for o, g in zip(out, grads):
            o.set_shape(g.shape)
        return out

    def total(x):
        buf = np.array(x, np.float64)
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        return buf

    return training.Group(size, average, total, lambda flat: leader_copy(flat, comm),
                          batch_sum_factory(comm))


# --- dynamic scheduling: a shared counter -----------------------------------------------------

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


# --- cell results: group leaders -> writer rank ---------------------------------------------

class ResultChannel:
    """Leaders send each finished cell to the writer as one byte buffer (results.CellResult
    encodes and decodes it); the writer drains
    them whenever it has a moment (after each of its own epochs), so cells reach the file as
    they finish, not at the end."""

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


def horovod_status() -> tuple[str | None, dict, str | None]:
    """(version, operations it was compiled with, None) if Horovod loads, else (None, {}, why):
    the reason run/install.sh left in the environment when it could not build Horovod, or the
    import's own error. Without Horovod the groups average with mpi4py."""
    try:
        import horovod
        import horovod.tensorflow as hvd
    except ImportError as exc:   # not installed, or built against another TensorFlow
        note = os.path.join(sys.prefix, "share", "lth-mpi", "horovod-absent")
        why = open(note).read().strip() if os.path.exists(note) else ""
        return None, {}, why or f"not importable ({exc})"
    # NCCL keeps GPU gradients on the GPU
    return horovod.__version__, {"mpi": bool(hvd.mpi_built()), "nccl": bool(hvd.nccl_built()),
                                 "gloo": bool(hvd.gloo_built()),
                                 "cuda": bool(hvd.cuda_built())}, None


def stack() -> str:
    """The stack on one line (the install's last line, the test suite's header): Python,
    TensorFlow, Keras, Horovod with its operations or why it is absent, the MPI library."""
    import platform
    from .keras_import import keras, tf
    version, built, why = horovod_status()
    ops = " + ".join(k.upper() for k, v in built.items() if v)
    hvd = f"Horovod {version} ({ops})" if version else f"Horovod absent: {why}"
    mpi = " ".join(MPI.Get_library_version().splitlines()[0].split())
    return (f"Python {platform.python_version()} | TensorFlow {tf.__version__} | "
            f"Keras {keras.__version__} | {hvd} | {mpi}")


def provenance(layout: Layout) -> dict:
    """Software versions, MPI library, hosts and rank layout, gathered on every rank."""
    import h5py
    import mpi4py
    import tensorflow as tf
    import keras
    version, hvd_built, why = horovod_status()
    hvd_version = version or f"absent: {why}"
    me = {"rank": layout.rank, "host": layout.host, "group": layout.group,
          "group_rank": layout.group_rank, "local_rank": layout.local_rank,
          "threads": layout.threads, "allreduce": layout.allreduce, "pid": os.getpid()}
    ranks = layout.world.allgather(me)
    import platform
    return {"software": {"python": platform.python_version(), "tensorflow": tf.__version__,
                         "keras": keras.__version__, "horovod": hvd_version,
                         "mpi4py": mpi4py.__version__, "h5py": h5py.__version__,
                         "hdf5": h5py.version.hdf5_version, "numpy": np.__version__},
            "horovod_built": hvd_built,
            # Open MPI pads the string with NULs, which HDF5 string attributes cannot hold
            "mpi_library": MPI.Get_library_version().replace("\0", "").strip(),
            "mpi_standard": "%d.%d" % MPI.Get_version(),
            "world_size": layout.size, "group_size": layout.group_size,
            "n_groups": layout.n_groups,
            "hosts": sorted({r["host"] for r in ranks}), "ranks": ranks}
