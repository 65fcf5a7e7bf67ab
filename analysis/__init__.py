"""Analysis of lth-mpi results files: figures, tables and strong-scaling studies.

Reads the HDF5 files that `lth_mpi run` writes (docs/results.md) with h5py alone: it never
imports MPI, Horovod or TensorFlow, so it runs on a laptop next to a copied results file.

    python -m analysis report RESULTS.h5 --out DIR
    python -m analysis scaling results_P1.h5 results_P2.h5 results_P4.h5 --out DIR
"""


class AnalysisError(Exception):
    """A problem with the input that the user can fix; printed as one line, exit code 2."""
