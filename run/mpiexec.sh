#!/usr/bin/env bash
# mpiexec with what this MPI needs, inside the project's environment. Every launch in run/ and
# in the tests goes through here, so no caller needs to know which MPI is installed.
#
#   bash run/mpiexec.sh -n 4 python -m mpi4py -m lth_mpi run run/configs/demo.yaml
#   HOSTFILE=hosts bash run/mpiexec.sh -n 8 lth-mpi run run/configs/conv4_fashion.yaml
#
# Open MPI: --oversubscribe (more ranks than cores, as in the demo on 2 vCPUs), as root
# --allow-run-as-root, and the environment (venv PATH, thread and log settings) forwarded to
# remote nodes with -x. MPICH's Hydra forwards the environment and needs neither flag.
# HOSTFILE: a host file for either MPI. Options for mpiexec itself go before the command.
# The exit status is judged (lth_mpi/outcome.py): a search whose results file is not complete
# exits non-zero even when the launcher says 0 (MPICH 4.2 can, when a rank is lost).
set -euo pipefail
. "$(dirname "$0")/env.sh"
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
command -v mpiexec >/dev/null || { echo "mpiexec.sh: error: no mpiexec: run bash run/install.sh" >&2; exit 1; }
flags=()
[ -n "${HOSTFILE:-}" ] && flags+=(-hostfile "$HOSTFILE")
if mpiexec --version 2>&1 | grep -qiE 'open ?mpi|openrte'; then
    flags+=(--oversubscribe)
    [ "$(id -u)" = 0 ] && flags+=(--allow-run-as-root)
    for v in PATH LD_LIBRARY_PATH VIRTUAL_ENV PYTHONPATH PYTHONUNBUFFERED TF_CPP_MIN_LOG_LEVEL \
             OMP_NUM_THREADS LTH_FAULT LTH_HEARTBEAT; do
        [ -n "${!v:-}" ] && flags+=(-x "$v")
    done
    flags+=(-x LTH_OUTCOME)          # set by lth_mpi.outcome, for rank 0's notes
fi
exec python3 -m lth_mpi.outcome mpiexec "${flags[@]}" "$@"
