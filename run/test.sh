#!/usr/bin/env bash
# Install everything, then run every test: unit tests, MPI tests under real mpiexec -n 2 and
# -n 4, and the end-to-end runs on real Fashion-MNIST.
#
# Usage: bash run/test.sh [pytest options]
set -euo pipefail
cd "$(dirname "$0")/.."
bash run/install.sh
. run/env.sh                     # the environment install.sh made or found
TF_CPP_MIN_LOG_LEVEL=2 python3 -m pytest tests "$@"
