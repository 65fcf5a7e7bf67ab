#!/usr/bin/env bash
# Install everything, then run every test: unit tests, MPI tests under real mpiexec -n 2 and
# -n 4, the end-to-end runs on real Fashion-MNIST, and, as root, the runs on a two-node cluster
# made on this machine (run/cluster.sh: namespaces and a real Slurm).
#
# Usage: bash run/test.sh [pytest options]
set -euo pipefail
cd "$(dirname "$0")/.."
LTH_CLUSTER=${LTH_CLUSTER:-auto} bash run/install.sh
. run/env.sh                     # the environment install.sh made or found
TF_CPP_MIN_LOG_LEVEL=2 python3 -m pytest tests "$@"
