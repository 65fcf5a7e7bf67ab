"""The collectives a data-parallel trainer needs, as a Group: with mpi4py or with Horovod.

TensorFlow and Horovod are imported inside the builders: building a Group is the first
thing that needs them, and readers of this package (data_prep) do not.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
from mpi4py import MPI

from .stack import horovod_status
from .world import Layout, bcast_array


@dataclasses.dataclass
class Group:
    """The collectives a data-parallel group gives the trainer (built below).

    average: gradient tensors -> their group average, inside the step;
    total: numpy array -> summed over the group; broadcast: numpy array -> the leader's;
    batch_sum: () -> a new differentiable TF function summing a small tensor over the group,
    one per call site (synchronized BatchNorm).
    """
    size: int
    average: Callable
    total: Callable
    broadcast: Callable
    batch_sum: Callable


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
    """The trainer's Group for this rank's group (None for a group of one: nothing to
    average), averaging with `allreduce`, horovod or mpi (default: the layout's, which
    configure_tensorflow resolved from the config)."""
    if layout.group_size == 1:
        return None
    if (allreduce or layout.allreduce) == "horovod":
        return init_horovod(layout)
    return mpi_reducers(layout.group_comm)


def init_horovod(layout: Layout):
    """hvd.init on the group's communicator; returns the trainer's Group, or None for
    a group of one (nothing to average: the trainer compiles a one-rank step, and Horovod's
    background thread is never started)."""
    if layout.group_size == 1:   # nothing to average: no Horovod, no background thread
        return None
    import horovod.tensorflow as hvd
    import tensorflow as tf
    hvd.init(comm=layout.group_comm)
    assert hvd.size() == layout.group_size, (hvd.size(), layout.group_size)

    def average(grads):
        return hvd.grouped_allreduce(grads, op=hvd.Average)

    def total(x):
        return hvd.allreduce(tf.constant(np.asarray(x, np.float64)), op=hvd.Sum).numpy()

    def broadcast(x):
        return hvd.broadcast(tf.constant(x), root_rank=0).numpy()

    return Group(layout.group_size, average, total, broadcast,
                          batch_sum_factory(layout.group_comm))


def leader_copy(flat: np.ndarray, comm: MPI.Comm | None = None) -> np.ndarray:
    """The leader's (rank 0 of comm) copy of a numpy buffer, on every rank."""
    return bcast_array(flat, flat.shape, flat.dtype, comm=comm)


def mpi_reducers(comm: MPI.Comm):
    """The trainer's Group over `comm` with mpi4py: the world for the data-parallel
    dense phase, a group's communicator where Horovod is not used. Gradients are averaged with
    one MPI Allreduce per step on a flat buffer, called from inside the TF graph; no thread of
    its own, so nothing runs between steps.
    """
    import tensorflow as tf
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

    return Group(size, average, total, lambda flat: leader_copy(flat, comm),
                          batch_sum_factory(comm))


def choose(layout: Layout, allreduce: str, gpus: int) -> None:
    """How this rank's group averages (config parallel.allreduce; `auto` resolved here, once
    the GPUs are known): Horovod with a GPU (NCCL keeps gradients on the device), mpi4py on
    CPUs, where Horovod's polling background thread takes the cores that train
    (docs/performance.md), and wherever Horovod could not be built. ValueError if the config
    asks for an absent Horovod."""
    if layout.group_size == 1:
        return
    if allreduce == "horovod" or (allreduce == "auto" and gpus):   # only then imported
        version, _, why = horovod_status()
        if allreduce == "horovod" and not version:
            raise ValueError(f"parallel.allreduce: horovod, but Horovod is absent: {why}; "
                             "use auto or mpi (mpi4py)")
        allreduce = "horovod" if version else "mpi"
    layout.allreduce = "mpi" if allreduce == "auto" else allreduce
