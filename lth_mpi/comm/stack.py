"""The software stack the collectives run on: Horovod's status, versions, the MPI library."""
from __future__ import annotations

import os
import platform
import sys

import numpy as np

from .world import library


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
    from ..keras_import import keras, tf
    version, built, why = horovod_status()
    ops = " + ".join(k.upper() for k, v in built.items() if v)
    hvd = f"Horovod {version} ({ops})" if version else f"Horovod absent: {why}"
    mpi = " ".join(library()[0].splitlines()[0].split())
    return (f"Python {platform.python_version()} | TensorFlow {tf.__version__} | "
            f"Keras {keras.__version__} | {hvd} | {mpi}")


def describe() -> dict:
    """What the results file records of the stack (results.provenance): versions, Horovod's
    operations, the MPI library and standard."""
    import h5py
    import mpi4py
    from ..keras_import import keras, tf
    version, built, why = horovod_status()
    mpi_library, mpi_standard = library()
    return {"software": {"python": platform.python_version(), "tensorflow": tf.__version__,
                         "keras": keras.__version__, "horovod": version or f"absent: {why}",
                         "mpi4py": mpi4py.__version__, "h5py": h5py.__version__,
                         "hdf5": h5py.version.hdf5_version, "numpy": np.__version__},
            "horovod_built": built, "mpi_library": mpi_library, "mpi_standard": mpi_standard}
