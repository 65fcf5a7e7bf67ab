"""Running real mpiexec jobs from pytest."""
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOISE = ("oneDNN custom operations", "cpu_feature_guard", "rebuild TensorFlow", "WARNING: All log")


MPIEXEC = ["bash", os.path.join(ROOT, "run", "mpiexec.sh")]   # adds what this MPI needs
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")


def launch(n: int, *command: str) -> list[str]:
    """The command line that runs COMMAND on n ranks, through run/mpiexec.sh."""
    assert shutil.which("mpiexec"), "mpiexec not on PATH: run run/install.sh"
    return [*MPIEXEC, "-n", str(n), *command]


def mpiexec(n: int, args: list[str], timeout: float = 600, cwd: str = ROOT, env=None):
    """Run `mpiexec -n n python -m mpi4py ARGS`; returns the CompletedProcess (text).
    `env`: extra environment variables for every rank."""
    cmd = launch(n, sys.executable, "-m", "mpi4py", *args)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=dict(ENV, **(env or {})))
    proc.stderr = "\n".join(l for l in proc.stderr.splitlines() if not any(s in l for s in NOISE))
    return proc


def lth(n: int, config: str, *extra: str, timeout: float = 600, env=None):
    return mpiexec(n, ["-m", "lth_mpi", "run", config, *extra], timeout, env=env)
