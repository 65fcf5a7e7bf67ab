#!/usr/bin/env bash
# Launch a search with mpiexec on the nodes of a host file (or locally without one).
# Usage: NP=8 HOSTFILE=hosts bash run/mpiexec.sh run/configs/demo.yaml [options]
set -euo pipefail
NP=${NP:-4}
CONFIG=${1:?usage: NP=<p> [HOSTFILE=file] bash run/mpiexec.sh CONFIG.yaml [options]}; shift
hosts=()
[ -n "${HOSTFILE:-}" ] && hosts=(-f "$HOSTFILE")
exec mpiexec -n "$NP" "${hosts[@]}" python3 -m mpi4py -m lth_mpi run "$CONFIG" "$@"
