"""Clean stops: a real SIGTERM (or SIGINT) to mpiexec or to one rank mid-grid, as Slurm sends
at the time limit. The job stops within seconds, every rank prints one line and exits with
status 4, the file keeps every finished cell and says `interrupted`, and --resume finishes it
with the numbers of a run that was never stopped."""
import os
import signal
import subprocess
import sys
import time

import h5py
import psutil
import pytest

from lth_mpi import data, results
from mpi_helpers import TINY as CONFIG
from mpi_helpers import ENV, ROOT, assert_same_cells, launch, lth

pytestmark = pytest.mark.skipif(not os.path.isdir(data.FASHION_MNIST_DIR),
                                reason="dataset-fashion-mnist not installed (run/install.sh)")
GROUPS_OF_ONE = ["--set", "parallel.group_size=1"]


def rank_pid(job: subprocess.Popen, rank: int) -> int:
    for p in psutil.Process(job.pid).children(recursive=True):
        try:
            env = p.environ()
        except psutil.Error:
            continue
        if env.get("PMI_RANK", env.get("OMPI_COMM_WORLD_RANK")) == str(rank) and "python" in p.name():
            return p.pid
    raise AssertionError(f"no process of rank {rank}")


@pytest.fixture(scope="module")
def plain(tiny_run):
    out, proc = tiny_run(2, *GROUPS_OF_ONE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {c["name"]: c for c in results.read_cells(out)}


@pytest.mark.parametrize("target,sig", [("mpiexec", signal.SIGTERM), ("rank 1", signal.SIGTERM),
                                        ("mpiexec", signal.SIGINT)])
def test_a_signal_stops_the_job_cleanly_and_resume_finishes_it(tmp_path, plain, target, sig):
    if target == "mpiexec" and "Open MPI" in __import__("mpi4py.MPI").MPI.Get_library_version():
        pytest.skip("Open MPI 4.1's mpirun does not pass SIGTERM/SIGINT on to the ranks "
                    "(measured: the job ran to its end); signal the ranks, as Slurm does")
    out = str(tmp_path / "r.h5")
    cmd = launch(2, sys.executable, "-m", "mpi4py", "-m", "lth_mpi", "run", CONFIG,
                 "--output", out, *GROUPS_OF_ONE)
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           cwd=ROOT, env=ENV)
    for line in job.stdout:
        if line.startswith("[   1/6]"):           # mid-grid: one cell written
            break
    pid = job.pid if target == "mpiexec" else rank_pid(job, 1)
    t0 = time.time()
    os.kill(pid, sig)
    stdout, stderr = job.communicate(timeout=120)
    took = time.time() - t0
    assert job.returncode == 4, stderr
    assert took < 20, took                                  # within seconds
    lines = [l for l in stderr.splitlines() if l.startswith("lth-mpi: stopped:")]
    name = signal.Signals(sig).name
    assert len(lines) == 2 and all(f"{name} on rank" in l for l in lines), stderr
    if target == "rank 1":                                  # only rank 1 got it; both know
        assert all(f"{name} on rank 1" in l for l in lines)
    assert "--resume continues" in lines[0] and "Traceback" not in stderr
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "interrupted"
        assert all("complete" in g.attrs for g in f["cells"].values())
        kept = len(f["cells"])
    assert 1 <= kept < 6 and f"{kept} of 6 cells are in" in lines[0]
    proc = lth(2, CONFIG, "--output", out, *GROUPS_OF_ONE, "--resume")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_same_cells(out, plain)


def test_a_signal_to_a_rank_with_nothing_left_to_train_stops_the_job(tmp_path):
    """One IMP chain on two groups of one: rank 1 has no work and waits for rank 0's chain.
    A SIGTERM to it must stop the job like one to a training rank (it was ignored: the
    waiting rank never looked, and the job ended `complete` with exit 0)."""
    out = str(tmp_path / "r.h5")
    cmd = launch(2, sys.executable, "-m", "mpi4py", "-m", "lth_mpi", "run", CONFIG,
                 "--output", out, *GROUPS_OF_ONE, "--set", "prune.mode=iterative",
                 "--set", "prune.sparsities=null", "--set", "prune.levels=8", "--set", "train.epochs=4",
                 "--set", "rewind.points=[0]", "--set", "controls=[]")
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           cwd=ROOT, env=ENV)
    for line in job.stdout:
        if line.startswith("[   1/8]"):           # rank 0 trains level 2; rank 1 waits
            break
    os.kill(rank_pid(job, 1), signal.SIGTERM)
    stdout, stderr = job.communicate(timeout=120)
    assert job.returncode == 4, stdout + stderr
    lines = [l for l in stderr.splitlines() if l.startswith("lth-mpi: stopped:")]
    assert len(lines) == 2 and all("SIGTERM on rank 1" in l for l in lines), stderr
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "interrupted"
        assert 1 <= len(f["cells"]) < 8
    proc = lth(2, CONFIG, "--output", out, *GROUPS_OF_ONE, "--set", "prune.mode=iterative",
               "--set", "prune.sparsities=null", "--set", "prune.levels=8", "--set", "train.epochs=4",
               "--set", "rewind.points=[0]", "--set", "controls=[]", "--resume")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(results.read_cells(out)) == 8
