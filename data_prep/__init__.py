"""data_prep: datasets converted offline into lth-mpi's HDF5 training format (in parallel
over MPI ranks for image trees).

Converters: idx (MNIST, Fashion-MNIST), cifar (CIFAR-10/100, binary and python releases),
imagenet (image trees). The format itself (lth_mpi.data.h5format) and its training-time
readers live under lth_mpi.data. The command line is cli (`python -m data_prep --help`);
docs/data.md describes the whole.
"""
