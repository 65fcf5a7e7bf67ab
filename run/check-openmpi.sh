#!/usr/bin/env bash
# The same project against Open MPI, the MPI of most clusters (the default set-up and CI use
# MPICH): Debian's Open MPI, a separate environment (.venv-openmpi) with mpi4py and Horovod
# built against it, then the MPI, launch-script and end-to-end tests in that environment.
#
# Usage (as root on Debian/Ubuntu): bash run/check-openmpi.sh [pytest options]
set -euo pipefail
cd "$(dirname "$0")/.."
export LTH_VENV=${LTH_VENV:-.venv-openmpi} LTH_MPI=openmpi
bash run/install.sh           # leaves the system's default MPI as it was
. run/env.sh
mpiexec --version 2>&1 | grep -qiE 'open ?mpi|openrte' || { echo "check-openmpi: error: $LTH_VENV's mpiexec is not Open MPI" >&2; exit 1; }
python3 -c 'import mpi4py.MPI as M, sys; v = M.Get_library_version(); print("check-openmpi:", v.splitlines()[0]); sys.exit("Open MPI" not in v)'
python3 -m pytest tests/test_mpi.py tests/test_mpi_data.py tests/test_end_to_end.py \
    tests/test_launch_scripts.py tests/test_signals.py tests/test_durability.py "$@"
