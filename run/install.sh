#!/usr/bin/env bash
# Install everything lth-mpi needs into the current Python environment, skipping what is
# already there. Safe to rerun.
#
#   bash run/install.sh            # as root on Debian: apt's MPICH + Fashion-MNIST, then pip
#   module load mpich; bash run/install.sh   # on a cluster: uses the MPI on PATH, never apt
#
# Environment knobs:
#   LTH_TF_PACKAGE   TensorFlow requirement (default tensorflow-cpu==2.18.1; on GPU nodes
#                    e.g. "tensorflow[and-cuda]==2.18.1"). Horovod 0.28.1 builds against
#                    TF 2.15-2.18; 2.20+ breaks its build.
#   LTH_NO_APT=1     never call apt-get, even as root.
set -euo pipefail
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TF_PACKAGE=${LTH_TF_PACKAGE:-tensorflow-cpu==2.18.1}
say() { echo "install: $*"; }

can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ -z "${LTH_NO_APT:-}" ]; }
apt_updated=
apt_install() {
    [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# 1. MPI: the one on PATH (cluster modules), else Debian's MPICH.
if command -v mpicc >/dev/null && command -v mpiexec >/dev/null; then
    say "MPI on PATH: $(command -v mpiexec)"
elif can_apt; then
    say "installing MPICH from Debian"; apt_install mpich libmpich-dev
else
    echo "install: error: no mpicc/mpiexec on PATH; load an MPI module (e.g. 'module load openmpi') and rerun" >&2
    exit 1
fi

# 2. Fashion-MNIST, the demo's real data (Debian package; elsewhere set dataset.path).
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    if can_apt; then say "installing dataset-fashion-mnist"; apt_install dataset-fashion-mnist
    else say "no /usr/share/datasets/fashion-mnist: point dataset.path at the IDX files"; fi
fi

pip() { "$PY" -m pip "$@"; }
has() { "$PY" -c "$1" >/dev/null 2>&1; }

# 3. TensorFlow, then mpi4py built against this MPI (its wheel expects another libmpi).
# Horovod 0.28.1 compiles against TF 2.15-2.18 only: replace any other version.
if ! has "import tensorflow as tf; v = tuple(map(int, tf.__version__.split('.')[:2])); assert (2, 15) <= v <= (2, 18)"; then
    say "installing $TF_PACKAGE"; pip install -q "$TF_PACKAGE"
fi
if ! has "import mpi4py.MPI"; then   # absent, or a wheel linked to another libmpi
    say "building mpi4py against $(command -v mpicc) (a few minutes)"
    pip uninstall -y -q mpi4py 2>/dev/null || true
    pip install -q --no-cache-dir --no-binary mpi4py mpi4py
fi

# 4. Horovod with MPI and TensorFlow ops, built from source against both.
if ! has "import horovod.tensorflow as h; assert h.mpi_built()"; then
    say "building Horovod 0.28.1 with MPI + TensorFlow (about 2 minutes)"
    command -v cmake >/dev/null || pip install -q cmake
    has "import setuptools, wheel" || pip install -q setuptools wheel
    pip uninstall -y -q horovod 2>/dev/null || true   # built against another TF or MPI
    HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITHOUT_GLOO=1 \
    HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
        pip install -q --no-cache-dir --no-build-isolation horovod==0.28.1
fi

# 5. The package itself (editable), with the test extras.
pip install -q --no-build-isolation -e ".[test]"
"$PY" -c "import horovod.tensorflow as h, mpi4py.MPI as M, tensorflow as tf; \
print('install: ok: TF', tf.__version__, '| Horovod MPI', h.mpi_built(), '|', M.Get_library_version().splitlines()[0])"
