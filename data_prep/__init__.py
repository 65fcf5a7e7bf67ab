"""data_prep: datasets converted offline into one HDF5 training format (in parallel over
MPI ranks for image trees), and read back sharded, shuffled, augmented and prefetched.

Converters: idx (MNIST, Fashion-MNIST), cifar (CIFAR-10/100, binary and python releases),
imagenet (image trees). Format: h5format. Reading: reader, augment, prefetch. The command
line is cli (`python -m data_prep --help`); docs/data.md describes the whole.
"""
