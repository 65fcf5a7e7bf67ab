#!/usr/bin/env bash
# Install everything lth-mpi needs, from nothing, skipping what is already there. Safe to rerun.
#
#   bash run/install.sh                       # as root on Debian/Ubuntu: apt brings the rest
#   module load openmpi; bash run/install.sh  # cluster: the MPI on PATH, no root needed
#
# Where: the active virtual or conda environment, else the project's own .venv, made here (see
# run/env.sh), so a distribution's "externally-managed-environment" (PEP 668) never applies.
# As root with apt it installs what the build needs and is missing: python3-dev and
# python3-venv for the running Python's version, g++, make, an MPI, Fashion-MNIST.
#
# Knobs (environment):
#   PYTHON          the Python to make the .venv with (default: python3 if it is 3.10-3.13,
#                   else the newest python3.13 ... python3.10 on PATH)
#   LTH_VENV        the venv directory (default .venv)
#   LTH_MPI         auto | mpich | openmpi. auto: the mpicc/mpiexec on PATH (cluster modules),
#                   else Debian's MPICH. mpich/openmpi: Debian's package of that MPI, used by
#                   name (mpicc.openmpi, ...) whatever the system default is.
#   LTH_TF_PACKAGE  TensorFlow requirement (default tensorflow-cpu==2.21.0; GPU nodes:
#                   "tensorflow[and-cuda]==2.21.0"). A pinned version (==) replaces any other.
#   LTH_HOROVOD     1 (default): build Horovod 0.28.1 from its sdist, with the project's source
#                   fixes (run/fix_horovod.py); if the build fails, install goes on without it
#                   and says why. 0: do not build it. The groups then average with mpi4py.
#   LTH_GPU         auto | 0 | 1: build Horovod with NCCL for GPUs (auto: when TensorFlow is a
#                   CUDA build). Needs nvcc (the CUDA toolkit) on PATH or in CUDA_HOME.
#   LTH_WHEEL_CACHE where built mpi4py/Horovod wheels are kept, keyed by Python, MPI, TensorFlow
#                   and GPU build (default ~/.cache/lth-mpi/wheels; empty: build every time)
#   LTH_CLUSTER     0 (default) | auto | 1: the tools of the one-machine cluster the tests start
#                   (run/cluster.sh: Slurm's slurmctld/slurmd/srun, munge, ip). auto (what
#                   run/test.sh asks for): install them as root with apt, else say the cluster
#                   tests will be skipped; 1: required.
#   LTH_NO_APT=1    never call apt-get, even as root.
set -euo pipefail
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
. "$(dirname "$0")/env.sh"
cd "$LTH_ROOT"
say() { echo "install: $*"; }
die() { echo "install: error: $*" >&2; exit 1; }
MPI_KIND=${LTH_MPI:-auto}
TF_PACKAGE=${LTH_TF_PACKAGE:-tensorflow-cpu==2.21.0}
TF_PIN=; [[ $TF_PACKAGE == *==* ]] && TF_PIN=${TF_PACKAGE##*==}
PYTHONS="3.13 3.12 3.11 3.10"       # what TensorFlow 2.21 has wheels for (none for 3.14 yet)
HOROVOD_VERSION=0.28.1              # its last release; run/fix_horovod.py is keyed to it
case "${LTH_HOROVOD:-1}" in 0|1) ;; *) die "LTH_HOROVOD=$LTH_HOROVOD: expected 0 or 1" ;; esac
case "${LTH_CLUSTER:-0}" in 0|auto|1) ;; *) die "LTH_CLUSTER=$LTH_CLUSTER: expected 0, auto or 1" ;; esac
case "$MPI_KIND" in auto|mpich|openmpi) ;; *) die "LTH_MPI=$MPI_KIND: expected auto, mpich or openmpi" ;; esac

can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ -z "${LTH_NO_APT:-}" ]; }
apt_updated=
apt_install() {
    [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
need() {   # need WHAT APT-PACKAGE...: install with apt as root, else stop naming what is missing
    local what=$1; shift
    can_apt || die "$what is missing; install it (Debian/Ubuntu: apt-get install $*) or rerun as root"
    say "installing $* ($what)"; apt_install "$@"
}

# 1. The Python to build with: its headers (Python.h), venv, a C++ compiler and make.
pyver_of() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }
supported() { [[ " $PYTHONS " == *" $1 "* ]]; }
if [ -z "$LTH_VENV" ]; then BASE=python3          # the active environment's own
elif [ -x "$LTH_VENV/bin/python" ]; then BASE=$LTH_VENV/bin/python
elif [ -n "${PYTHON:-}" ]; then BASE=$PYTHON
else                                # python3 if TensorFlow supports it, else the newest that is
    BASE=python3
    if ! supported "$(pyver_of python3)"; then
        for v in $PYTHONS; do command -v "python$v" >/dev/null && { BASE=python$v; break; }; done
    fi
fi
command -v "$BASE" >/dev/null || die "no $BASE: install a Python ${PYTHONS// /, } (or set PYTHON)"
pyver=$(pyver_of "$BASE")
supported "$pyver" || die "Python $pyver: TensorFlow 2.21 has wheels for Python ${PYTHONS// /, } only; install one (on a cluster: module load python/3.12) or set PYTHON"
"$BASE" -c 'import os, sysconfig; assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' \
    2>/dev/null || need "Python.h (headers for Python $pyver; a cluster: module load python)" "python$pyver-dev"
command -v g++ >/dev/null || need "a C++ compiler (g++; a cluster: module load gcc)" g++
command -v make >/dev/null || need "make (a cluster: module load make)" make

# 2. The environment: the user's own, or our .venv (made from BASE).
if [ -n "$LTH_VENV" ] && [ ! -x "$LTH_VENV/bin/python" ]; then
    "$BASE" -c 'import ensurepip, venv' 2>/dev/null || need "venv for Python $pyver" "python$pyver-venv"
    say "creating the virtual environment $LTH_VENV (Python $pyver)"
    "$BASE" -m venv "$LTH_VENV"
    . "$LTH_ROOT/run/env.sh"                   # puts it first on PATH
fi
PY=$(command -v python3)
[ -z "$LTH_VENV" ] || [ "$PY" = "$LTH_VENV/bin/python3" ] || die "$LTH_VENV is not a working venv"
say "environment: ${LTH_VENV:-${VIRTUAL_ENV:-${CONDA_PREFIX:-$(dirname "$(dirname "$PY")")}}} (Python $pyver)"
pip() { "$PY" -m pip "$@"; }
has() { "$PY" -c "$1" >/dev/null 2>&1; }
has "import setuptools, wheel" || pip install -q setuptools wheel   # venvs of 3.12 have neither

# 3. MPI. Our venv pins the one chosen (links in its bin/), so mpi4py, Horovod and mpiexec
#    always agree even if the system default MPI changes later.
mpi_tools=(mpicc mpicxx mpiexec mpirun)
if [ "$MPI_KIND" = auto ]; then
    if command -v mpicc >/dev/null && command -v mpiexec >/dev/null; then
        mpi_paths=(); for t in "${mpi_tools[@]}"; do mpi_paths+=("$(command -v "$t" || true)"); done
    else
        command -v mpicc.mpich >/dev/null || need "an MPI (no mpicc/mpiexec on PATH; on a cluster: module load openmpi)" mpich libmpich-dev
        MPI_KIND=mpich
    fi
fi
if [ "$MPI_KIND" != auto ]; then
    pkgs=(mpich libmpich-dev); [ "$MPI_KIND" = openmpi ] && pkgs=(openmpi-bin libopenmpi-dev)
    if ! command -v "mpicc.$MPI_KIND" >/dev/null || ! command -v "mpiexec.$MPI_KIND" >/dev/null; then
        # installing a second MPI can switch /usr/bin/mpicc and mpiexec to it: put them back
        alternatives=$(for g in mpi mpirun; do
            update-alternatives --query "$g" 2>/dev/null | awk -v g="$g" '/^Value:/ {print g, $2}'; done)
        need "$MPI_KIND" "${pkgs[@]}"
        while read -r group value; do
            [ -z "$group" ] || update-alternatives --set "$group" "$value" >/dev/null
        done <<< "$alternatives"
    fi
    mpi_paths=(); for t in "${mpi_tools[@]}"; do mpi_paths+=("$(command -v "$t.$MPI_KIND")"); done
fi
if [ -n "$LTH_VENV" ]; then   # small scripts, not links: Hydra finds its proxy by its own path
    for i in "${!mpi_tools[@]}"; do
        t=${mpi_tools[$i]} p=${mpi_paths[$i]}
        [ -n "$p" ] && [ "$p" != "$LTH_VENV/bin/$t" ] || continue
        real=$(readlink -f "$p")        # Open MPI's compiler wrapper reads its name from argv[0]
        argv0=$(dirname "$real")/$t     # MPICH's Hydra finds its proxy beside an absolute argv[0];
        # Open MPI takes an absolute argv[0] as --prefix and puts /usr/bin first on the ranks' PATH
        [[ $t == mpi[er]* ]] && "$real" --version 2>&1 | grep -qiE 'open ?mpi|openrte' && argv0=$t
        printf '#!/bin/bash\n# %s pinned by run/install.sh\nexec -a %q %q "$@"\n' \
            "$t" "$argv0" "$real" > "$LTH_VENV/bin/$t.new"
        chmod +x "$LTH_VENV/bin/$t.new"; mv -f "$LTH_VENV/bin/$t.new" "$LTH_VENV/bin/$t"
    done
    hash -r
fi
command -v mpicc >/dev/null && command -v mpiexec >/dev/null || die "mpicc/mpiexec not found after choosing the MPI"
say "MPI: $(mpicc -show 2>/dev/null || mpicc -showme)"

# 4. Fashion-MNIST, the demo's real data (Debian package; elsewhere set dataset.path).
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    if can_apt; then say "installing dataset-fashion-mnist"; apt_install dataset-fashion-mnist
    else say "no /usr/share/datasets/fashion-mnist: point dataset.path at the IDX files"; fi
fi

# 5. TensorFlow: the pinned version replaces any other (an older stack's venv is upgraded;
#    the wheel cache below is keyed by TensorFlow's version, so Horovod is rebuilt for it).
if ! has "import tensorflow as tf; assert '$TF_PIN' in ('', tf.__version__)"; then
    say "installing $TF_PACKAGE"; pip install -q "$TF_PACKAGE"
fi
cuda_tf=$("$PY" -c 'import tensorflow as tf; print(int(tf.test.is_built_with_cuda()))' 2>/dev/null || echo 0)
gpu=${LTH_GPU:-auto}; [ "$gpu" = auto ] && gpu=$cuda_tf
if [ "$gpu" = 1 ]; then
    nvcc=$(command -v nvcc || echo "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc")
    [ -x "$nvcc" ] || die "a GPU build of Horovod needs the CUDA toolkit (nvcc): load a CUDA module, or LTH_GPU=0"
    export CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$(readlink -f "$nvcc")")")}
    # NCCL from the nvidia-nccl wheel that tensorflow[and-cuda] brings, unless NCCL_HOME is set
    nccl=$("$PY" -c 'import nvidia.nccl; print(list(nvidia.nccl.__path__)[0])' 2>/dev/null || true)
    if [ -z "${HOROVOD_NCCL_HOME:-}" ] && [ -n "$nccl" ]; then
        export HOROVOD_NCCL_INCLUDE=$nccl/include HOROVOD_NCCL_LIB=$nccl/lib HOROVOD_NCCL_LINK=SHARED
    fi
    export HOROVOD_GPU_OPERATIONS=NCCL
fi

# 6. mpi4py, compiled against this MPI (its binary wheel expects another libmpi). Built
#    wheels (mpi4py's and Horovod's) are kept, keyed by Python, MPI, TensorFlow and GPU build,
#    so a second venv or a fresh clone installs in seconds.
key=$( { "$PY" -c 'import sys, sysconfig, tensorflow as tf; print(sys.version, sysconfig.get_platform(), tf.__version__)' 2>/dev/null
         mpicc -show 2>/dev/null || mpicc -showme; mpiexec --version 2>&1 | head -n 3; echo "gpu=$gpu"; } \
       | sha256sum | cut -c1-16)
cache=${LTH_WHEEL_CACHE-${XDG_CACHE_HOME:-$HOME/.cache}/lth-mpi/wheels}
[ -n "$cache" ] && cache=$cache/$key
build() {   # build NAME DIR MAKE [ARGS]: install NAME from its newest wheel in DIR (a temporary
            # directory if DIR is empty), first running `MAKE DIR ARGS` to put one there if none is
    local name=$1 dir=${2:-$(mktemp -d)} kept=$2 make=$3; shift 3
    mkdir -p "$dir"
    if ! compgen -G "$dir/$name-*.whl" >/dev/null && ! "$make" "$dir" "$@"; then
        [ -n "$kept" ] || rm -rf "$dir"
        return 1
    fi
    pip uninstall -y -q "$name" 2>/dev/null || true
    pip install -q "$(ls -t "$dir"/"$name"-*.whl | head -n 1)"
    [ -n "$kept" ] || rm -rf "$dir"
}
wheel() { local dir=$1; shift; pip wheel -q --no-deps --no-cache-dir -w "$dir" "$@"; }
if ! has "import mpi4py.MPI"; then   # absent, or a wheel linked to another libmpi
    say "mpi4py: building against $(command -v mpicc) (a few minutes; cached in ${cache:-nothing})"
    ( export MPICC; MPICC=$(command -v mpicc); build mpi4py "$cache" wheel --no-binary mpi4py mpi4py )
fi
# 7. Horovod, from its sdist with the project's source fixes for today's TensorFlow and GCC
#    (run/fix_horovod.py, keyed to 0.28.1), and the highwayhash/farmhash headers TensorFlow's
#    wheel ships under include/external without putting them on its include path. If it cannot
#    be built, the install goes on without it: the groups average with mpi4py, and the reason
#    is kept in the environment (share/lth-mpi/horovod-absent), where results files read it.
notes=$("$PY" -c 'import os, sys; print(os.path.join(sys.prefix, "share", "lth-mpi"))')
mkdir -p "$notes"; absent=$notes/horovod-absent why=
hcache=${cache:+$cache/horovod-$(sha256sum "$LTH_ROOT/run/fix_horovod.py" | cut -c1-12)}
horovod_wheel() {   # horovod_wheel DIR: the patched sdist built into DIR; sets why if it cannot
    local dir=$1 src log=$notes/horovod-build.log tfi flags= d
    src=$(mktemp -d)
    pip download -q --no-deps --no-binary :all: --no-build-isolation -d "$src" \
        "horovod==$HOROVOD_VERSION" >"$log" 2>&1 \
        || { why="could not download the horovod==$HOROVOD_VERSION sdist (log: $log)"; rm -rf "$src"; return 1; }
    tar -xzf "$src/horovod-$HOROVOD_VERSION.tar.gz" -C "$src"
    "$PY" "$LTH_ROOT/run/fix_horovod.py" "$src/horovod-$HOROVOD_VERSION" | sed 's/^/install: Horovod source fix: /'
    tfi=$("$PY" -c 'import tensorflow as tf; print(tf.sysconfig.get_include())' 2>/dev/null)
    for d in external/highwayhash external/farmhash_archive/src; do
        [ -d "$tfi/$d" ] && flags+=" -I$tfi/$d"
    done
    command -v cmake >/dev/null || pip install -q cmake
    if ! ( export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITHOUT_GLOO=1 \
                  HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 CXXFLAGS="${CXXFLAGS:-}$flags"
           pip wheel -v --no-deps --no-cache-dir --no-build-isolation -w "$dir" \
               "$src/horovod-$HOROVOD_VERSION" ) >>"$log" 2>&1; then
        why=$(grep -m1 -E '(error|Error):' "$log" | sed -E 's/^ *//; s|^[^ ]*/([^/ ]+:[0-9]+:)|\1|' | cut -c1-200)
        [[ $why == *highwayhash* || $why == *farmhash* ]] && why+=" (Debian: apt-get install libhighwayhash-dev libfarmhash-dev; a cluster: a module that puts them on CPATH)"
        why="its build failed: ${why:-see the log} (log: $log)"
    fi
    rm -rf "$src"
    [ -z "$why" ]
}
want_nccl=$([ "$gpu" = 1 ] && echo "assert h.nccl_built()" || echo "pass")
if has "import horovod.tensorflow as h; assert h.mpi_built(); $want_nccl"; then
    :
elif [ "${LTH_HOROVOD:-1}" = 0 ]; then
    why="not built (LTH_HOROVOD=0)"
else
    say "Horovod: building $HOROVOD_VERSION with MPI + TensorFlow${HOROVOD_GPU_OPERATIONS:+ + NCCL} (about 2 minutes; cached in ${hcache:-nothing})"
    build horovod "$hcache" horovod_wheel || { pip uninstall -y -q horovod 2>/dev/null || true; }
fi
if [ -n "$why" ]; then
    echo "$why" > "$absent"
    say "Horovod: absent, $why; the groups average with mpi4py (parallel.allreduce: auto or mpi)"
else
    rm -f "$absent"
fi

# 8. The one-machine cluster's tools (run/cluster.sh), when the tests ask for them. Their
#    daemons are never enabled here: run/cluster.sh starts its own, inside its fake nodes.
if [ "${LTH_CLUSTER:-0}" != 0 ]; then
    missing=()
    for tool in slurmctld:slurmctld slurmd:slurmd srun:slurm-client munged:munge ip:iproute2; do
        command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        if can_apt; then need "the test cluster's tools (run/cluster.sh)" "${missing[@]}"
        elif [ "$LTH_CLUSTER" = 1 ]; then die "the test cluster needs ${missing[*]}: apt-get install them, or rerun as root"
        else say "cluster: ${missing[*]} missing and no root with apt: the cluster tests will be skipped"; fi
    fi
    # and Open MPI beside the MPICH default, for the cluster's hostfile test with Open MPI:
    # its own environment, as run/check-openmpi.sh makes it (no Horovod: mpi4py averages)
    ompi=$LTH_ROOT/.venv-openmpi
    if ! mpiexec --version 2>&1 | grep -qiE 'open ?mpi|openrte' && [ -n "$LTH_VENV" ] && [ "$LTH_VENV" != "$ompi" ] && can_apt &&
       ! "$ompi/bin/python" -c 'import mpi4py.MPI, tensorflow' 2>/dev/null; then
        say "cluster: making $ompi (Open MPI) for the cluster's Open MPI test"
        LTH_VENV=$ompi LTH_MPI=openmpi LTH_HOROVOD=0 LTH_CLUSTER=0 bash "$LTH_ROOT/run/install.sh" \
            | sed 's/^install: /install: (Open MPI) /' \
            || say "cluster: $ompi could not be made (above): the Open MPI test will be skipped"
    fi
fi

# 9. The package itself (editable: `lth-mpi` lands in the environment's bin/), test extras.
pip install -q --no-build-isolation -e ".[test]"
[ -z "$LTH_VENV" ] || say "to use it interactively: . ${LTH_VENV#"$LTH_ROOT"/}/bin/activate   (then lth-mpi is on PATH)"
"$PY" -c 'from lth_mpi.comm.stack import stack; print("install: ok:", stack())'
