#!/usr/bin/env bash
# Install everything, then run the demo search: LeNet-300-100 on Fashion-MNIST, 5 sparsities
# x 3 rewind points, 4 ranks in two Horovod groups of two. A few minutes on 2 cores.
#
# Usage: bash run/demo.sh [extra lth-mpi options, e.g. --set train.epochs=3]
set -euo pipefail
cd "$(dirname "$0")/.."
bash run/install.sh
. run/env.sh                     # the environment install.sh made or found
mkdir -p results
out=results/demo-$(date +%Y%m%d-%H%M%S).h5
NP=${NP:-4}
echo "demo: bash run/mpiexec.sh -n $NP python -m mpi4py -m lth_mpi run run/configs/demo.yaml --output $out"
bash run/mpiexec.sh -n "$NP" python3 -m mpi4py -m lth_mpi run run/configs/demo.yaml \
    --output "$out" "$@"
