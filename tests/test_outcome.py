"""A lost rank is never a success: whatever the launcher returns, run/mpiexec.sh (and so
the Slurm templates, through lth_mpi.outcome) exits non-zero unless the results file is
complete. MPICH 4.2's Hydra exits 0 for a job that lost a rank about one run in four; a
launcher that always does so (the real mpiexec, then `exit 0`) makes that every run."""
import os
import subprocess
import sys

import h5py
import pytest

from lth_mpi import data, outcome
from mpi_helpers import ENV, ROOT, TINY, launch
from test_durability import SMALL
from test_launch_scripts import fake_bin

needs_data = pytest.mark.skipif(not os.path.isdir(data.FASHION_MNIST_DIR),
                                reason="dataset-fashion-mnist not installed (run/install.sh)")


def test_the_notes_and_the_file_decide_when_the_launcher_says_0():
    complete = {"/r.h5": "complete", "/s.h5": "running"}.__getitem__
    assert outcome.judge([], 0, complete) == (0, None)                     # not a search
    assert outcome.judge(["run"], 3, complete) == (3, None)                # failed: as it is
    assert outcome.judge(["run", "results /r.h5", "done"], 0, complete) == (0, None)
    assert outcome.judge(["run", "done"], 0, complete) == (0, None)        # a dry run
    code, line = outcome.judge(["run", "results /s.h5"], 0, complete)
    assert code == 1 and "/s.h5 is running, not complete" in line and "--resume" in line
    code, line = outcome.judge(["run"], 0, complete)                       # rank 0 lost early
    assert code == 1 and "never finished" in line
    # the last search of the launch decides; a file that cannot be read is not complete
    assert outcome.judge(["run", "results /s.h5", "run", "results /r.h5", "done"], 0,
                         complete) == (0, None)
    assert outcome.judge(["run", "results /gone.h5", "done"], 0, complete)[0] == 1


def lying_launcher(tmp_path) -> dict:
    """The environment of a launch whose mpiexec always exits 0, as MPICH 4.2's can."""
    real = subprocess.run(["bash", "-c", f". {ROOT}/run/env.sh; command -v mpiexec"],
                          capture_output=True, text=True, check=True).stdout.strip()
    bindir = fake_bin(tmp_path, "mpiexec", f'[ "$1" = --version ] && exec {real} "$@"\n'
                                           f'{real} "$@"\nexit 0\n')
    return dict(ENV, PATH=bindir + os.pathsep + ENV["PATH"],
                LTH_OUTCOME_DIR=str(tmp_path / "notes"))


def run(env, *args, **extra):
    cmd = launch(2, sys.executable, "-m", "mpi4py", "-m", "lth_mpi", *args)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env=dict(env, **extra))


@needs_data
def test_a_killed_rank_fails_the_launch_even_when_the_launcher_says_0(tmp_path):
    env, out = lying_launcher(tmp_path), str(tmp_path / "r.h5")
    proc = run(env, "run", TINY, "--output", out, *SMALL, LTH_FAULT="exit:cell-curves:2")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("lth-mpi: error:")]
    assert lines == [f"lth-mpi: error: the launcher exited 0, but {out} is running, not "
                     "complete: a rank was lost or killed; `lth-mpi status` says more, and "
                     "--resume continues it"], proc.stderr
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "running"
    proc = run(env, "run", TINY, "--output", out, *SMALL, "--resume")     # finished: 0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "lth-mpi: error" not in proc.stderr
    proc = run(env, "run", TINY, "--output", str(tmp_path / "d.h5"), *SMALL, "--dry-run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert os.listdir(tmp_path / "notes") == []                           # notes cleaned up


def test_a_refused_config_and_a_plain_command_keep_their_own_status(tmp_path):
    env = lying_launcher(tmp_path)
    proc = run(env, "run", TINY, "--set", "model.name=nope")
    assert proc.returncode == 1, proc.stderr     # the lying launcher hid the ranks' exit 2
    lines = [l for l in proc.stderr.splitlines() if l.startswith("lth-mpi: error:")]
    assert len(lines) == 3 and "never finished on rank 0" in lines[-1], proc.stderr
    proc = subprocess.run(launch(1, sys.executable, "-c", "import sys; sys.exit(0)"),
                          capture_output=True, text=True, cwd=ROOT, env=env)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
    proc = subprocess.run(launch(1, sys.executable, "-c", "import sys; sys.exit(5)"),
                          capture_output=True, text=True, cwd=ROOT, env=ENV)
    assert proc.returncode != 0, proc.stderr
