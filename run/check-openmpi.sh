#!/usr/bin/env bash
# The same project against Open MPI, the MPI of most clusters (the default set-up and CI use
# MPICH): Debian's Open MPI, a separate environment (.venv-openmpi) with mpi4py and Horovod
# built against it, then the MPI, launch-script and end-to-end tests in that environment.
#
# Usage (as root on Debian/Ubuntu): bash run/check-openmpi.sh [pytest options]
# The system's default MPI (Debian's mpi/mpirun alternatives) is left as it was.
set -euo pipefail
cd "$(dirname "$0")/.."
export LTH_VENV=${LTH_VENV:-.venv-openmpi} LTH_MPI=openmpi
# Installing Open MPI can switch /usr/bin/mpicc and mpiexec to it: note them, put them back.
alternatives=$(for g in mpi mpirun; do
    update-alternatives --query "$g" 2>/dev/null | awk -v g="$g" '/^Value:/ {print g, $2}'; done)
bash run/install.sh
while read -r group value; do
    [ -n "$group" ] && update-alternatives --set "$group" "$value" >/dev/null
done <<< "$alternatives"
. run/env.sh
mpiexec --version 2>&1 | grep -qiE 'open ?mpi|openrte' || { echo "check-openmpi: error: $LTH_VENV's mpiexec is not Open MPI" >&2; exit 1; }
python3 -c 'import mpi4py.MPI as M, sys; v = M.Get_library_version(); print("check-openmpi:", v.splitlines()[0]); sys.exit("Open MPI" not in v)'
python3 -m pytest tests/test_mpi.py tests/test_mpi_data.py tests/test_end_to_end.py \
    tests/test_launch_scripts.py tests/test_signals.py tests/test_durability.py "$@"
