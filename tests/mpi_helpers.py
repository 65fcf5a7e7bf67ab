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


TINY = os.path.join(ROOT, "tests", "configs", "tiny_fashion.yaml")
COMPARED = ("train_loss", "test_accuracy", "val_accuracy")


def finished_cells(out: str, *extra: str) -> dict:
    """Run the tiny search on 2 ranks to its end; its cells by name (a reference run)."""
    proc = lth(2, TINY, "--output", out, *extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from lth_mpi import results
    return {c["name"]: c for c in results.read_cells(out)}


def assert_same_cells(path: str, reference: dict) -> None:
    """Every cell of `path` has the reference run's curves, bit for bit (a resumed run)."""
    import numpy as np
    from lth_mpi import results
    cells = {c["name"]: c for c in results.read_cells(path)}
    assert sorted(cells) == sorted(reference)
    for name, c in cells.items():
        for k in COMPARED:
            np.testing.assert_array_equal(c[k], reference[name][k])
