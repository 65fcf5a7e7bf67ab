#!/usr/bin/env bash
# Strong scaling: the same config at P = 1, 2, 4, ... ranks (one results file per P), then
# `python -m analysis scaling`: Amdahl fit, speed-up and efficiency figure, and the projection
# to the seeds' cluster.
#
# Usage: bash run/scaling.sh CONFIG.yaml [P ...] [-- extra lth-mpi options]
#   bash run/scaling.sh run/configs/demo.yaml 1 2 4
#   bash run/scaling.sh run/configs/demo.yaml 1 2 4 -- --set dataset.train_examples=10000
# Environment:
#   GROUP_SIZE  ranks per Horovod group (default 1, so that P = 1 runs); every P must be a multiple
#   OUT         output directory (default results/scaling-<config>-<date>); must not hold the files
#   HOSTFILE    host file for run/mpiexec.sh (optional; default: this machine)
# Runs are never resumed: a resumed file's wall time is split over jobs, and the analysis refuses it.
set -euo pipefail
cd "$(dirname "$0")/.."
. run/env.sh
CONFIG=${1:?usage: bash run/scaling.sh CONFIG.yaml [P ...] [-- lth-mpi options]}; shift
procs=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do procs+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#procs[@]} -gt 0 ] || procs=(1 2 4)
GROUP_SIZE=${GROUP_SIZE:-1}
for p in "${procs[@]}"; do
    if ! [[ $p =~ ^[1-9][0-9]*$ ]] || (( p % GROUP_SIZE )); then
        echo "scaling: error: P=$p is not a positive multiple of GROUP_SIZE=$GROUP_SIZE" >&2
        exit 2
    fi
done
OUT=${OUT:-results/scaling-$(basename "$CONFIG" .yaml)-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
files=()
for p in "${procs[@]}"; do
    out="$OUT/results_P$p.h5"
    echo "scaling: P=$p: run/mpiexec.sh -n $p ... lth_mpi run $CONFIG --output $out (log $OUT/log_P$p.txt)"
    start=$SECONDS
    if ! bash run/mpiexec.sh -n "$p" python3 -m mpi4py -m lth_mpi run \
            "$CONFIG" --output "$out" --set parallel.group_size="$GROUP_SIZE" "$@" \
            > "$OUT/log_P$p.txt" 2>&1; then
        echo "scaling: error: the run at P=$p failed; last lines of $OUT/log_P$p.txt:" >&2
        tail -n 5 "$OUT/log_P$p.txt" >&2
        exit 1
    fi
    echo "scaling: P=$p done in $((SECONDS - start)) s"
    files+=("$out")
done
python3 -m analysis scaling "${files[@]}" --out "$OUT"
