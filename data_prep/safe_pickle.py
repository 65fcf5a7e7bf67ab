"""Loading the CIFAR python release without executing arbitrary code.

pickle.load runs whatever callable a file names, so a tampered batch file could run
`os.system`. This unpickler resolves only the globals that a pickled dict of numpy arrays,
lists, numbers and strings needs (numpy's array reconstruction, ndarray, dtype); any other
global raises pickle.UnpicklingError naming it.
"""
from __future__ import annotations

import io
import pickle

import numpy as np

try:                                   # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:                    # numpy 1.x
    from numpy.core.multiarray import _reconstruct

ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,    # files written by numpy 1.x
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,   # files written by numpy 2.x
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing global {module}.{name}: only numpy arrays, dicts, lists, numbers "
                "and strings may appear in a dataset file") from None


def loads(data: bytes, what: str):
    """Unpickle `data` (Python 2 or 3 pickles; py2 strings come back as bytes).

    Any failure, refusal included, is a ValueError naming `what`.
    """
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise ValueError(f"{what}: {exc}") from None
    except Exception as exc:   # truncated or garbled: EOFError, struct errors, ...
        raise ValueError(f"{what}: not a readable pickle ({type(exc).__name__}: {exc})") from None
