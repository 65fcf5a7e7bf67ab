"""Running real mpiexec jobs from pytest."""
import atexit
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Client

import pytest

import lth_mpi.keras_import  # noqa: F401  (TensorFlow first, without its start-up chatter)
from lth_mpi.comm.stack import horovod_status

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOISE = ("oneDNN custom operations", "cpu_feature_guard", "rebuild TensorFlow", "WARNING: All log")


MPIEXEC = ["bash", os.path.join(ROOT, "run", "mpiexec.sh")]   # adds what this MPI needs
# Horovod as run/install.sh left it: (version, operations, None), or (None, {}, why it is absent)
HOROVOD = horovod_status()
needs_horovod = pytest.mark.skipif(HOROVOD[0] is None, reason=f"Horovod absent: {HOROVOD[2]}")
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")


def launch(n: int, *command: str) -> list[str]:
    """The command line that runs COMMAND on n ranks, through run/mpiexec.sh."""
    assert shutil.which("mpiexec"), "mpiexec not on PATH: run run/install.sh"
    return [*MPIEXEC, "-n", str(n), *command]


def quiet(text: str) -> str:
    return "\n".join(l for l in text.splitlines() if not any(s in l for s in NOISE))


def mpiexec(n: int, args: list[str], timeout: float = 600, cwd: str = ROOT, env=None):
    """Run `mpiexec -n n python -m mpi4py ARGS`; returns the CompletedProcess (text).
    `env`: extra environment variables for every rank."""
    cmd = launch(n, sys.executable, "-m", "mpi4py", *args)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=dict(ENV, **(env or {})))
    proc.stderr = quiet(proc.stderr)
    return proc


class Pool:
    """The suite's long-lived 2-rank job (tests/mpi/pool.py), started at its first command
    and ended with the session: a command sent here costs what it computes, without a launch
    and the TensorFlow import on both ranks (about 4 s of each short search here)."""
    SIZE = 2

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="lth-pool-")
        address = os.path.join(self.dir, "socket")
        self.log = os.path.join(self.dir, "log")
        with open(self.log, "w") as log:
            self.job = subprocess.Popen(
                launch(self.SIZE, sys.executable, "-m", "mpi4py", "tests/mpi/pool.py", address),
                cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        while not os.path.exists(address):
            assert self.job.poll() is None, open(self.log).read()
            time.sleep(0.05)
        self.conn = Client(address, "AF_UNIX")

    def run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        """`lth-mpi ARGV` on both ranks, as a launch of its own would report it; and, in
        `.ranks`, each rank's exit code, stdout and stderr (None if the job aborted)."""
        start = os.path.getsize(self.log)
        self.conn.send(argv)
        if not self.conn.poll(timeout):
            self.kill()
            raise subprocess.TimeoutExpired(["lth-mpi", *argv], timeout)
        try:
            replies = self.conn.recv()
        except EOFError:        # the command raised and aborted the job (tests/mpi/pool.py)
            code = self.job.wait(60)
            with open(self.log) as log:
                log.seek(start)
                proc = subprocess.CompletedProcess(argv, code, "", quiet(log.read()))
            proc.ranks = None
            return proc
        codes, outs, errs = zip(*replies)
        proc = subprocess.CompletedProcess(argv, next((c for c in codes if c), 0),
                                           "".join(outs), quiet("".join(errs)))
        proc.ranks = [{"code": c, "stdout": o, "stderr": e} for c, o, e in replies]
        return proc

    @property
    def alive(self) -> bool:
        return self.job.poll() is None

    def close(self) -> None:
        if self.alive:
            self.conn.send(None)
            try:
                self.job.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def kill(self) -> None:
        os.killpg(self.job.pid, signal.SIGKILL)
        self.job.wait()


_pool = None


def pool() -> Pool:
    global _pool
    if _pool is None or not _pool.alive:
        _pool = Pool()
        atexit.register(_pool.close)
    return _pool


def lth(n: int, config: str, *extra: str, timeout: float = 600, env=None, pooled=True):
    """`lth-mpi run CONFIG EXTRA` on n ranks. A plain search on 2 ranks runs in the suite's
    long-lived job (Pool): not one with faults injected (`env`), nor one that sets the threads
    (TensorFlow fixes its thread pools once per process) or uses Horovod (its background
    thread would outlive the search), nor where the test is about the launch itself
    (`pooled=False`)."""
    argv = ["run", config, *extra]
    if pooled and n == Pool.SIZE and env is None and \
            not any("threads" in a or "horovod" in a for a in extra):
        return pool().run(argv, timeout)
    return mpiexec(n, ["-m", "lth_mpi", *argv], timeout, env=env)


@functools.cache
def cluster_reason() -> str | None:
    """Why the two-node cluster (run/cluster.sh) cannot run here, in one line; None if it can."""
    proc = subprocess.run(["bash", os.path.join(ROOT, "run", "cluster.sh"), "check"],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode == 0:
        return None
    return "cluster tests skipped: " + (proc.stderr.strip().splitlines() or ["?"])[-1] \
        .removeprefix("cluster: error: ")


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


def settings_for(cfg: dict, path, targets):
    """A config's settings as a search bound to its model hands the results writer: writing
    to `path`, with these sparsity targets."""
    import dataclasses
    from lth_mpi import config
    return dataclasses.replace(config.resolve({**cfg, "output": str(path)}),
                               targets=tuple(targets))
