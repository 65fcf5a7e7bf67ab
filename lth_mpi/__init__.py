"""lth-mpi: lottery-ticket search over MPI ranks with Horovod data-parallel groups."""
__version__ = "0.1.0"
