"""Results readable while the job runs: read_cells, the analysis and `lth-mpi status` from
other processes, several times while a real search (mpiexec, Fashion-MNIST) advances."""
import os
import subprocess
import sys
import time

import pytest

from lth_mpi import data, plan, results
from mpi_helpers import ENV, ROOT, launch

pytestmark = pytest.mark.skipif(not os.path.isdir(data.FASHION_MNIST_DIR),
                                reason="dataset-fashion-mnist not installed (run/install.sh)")
CONFIG = os.path.join(ROOT, "tests", "configs", "tiny_fashion.yaml")
READER = """
import sys
sys.path.insert(0, {root!r})
from lth_mpi import results
from analysis.load import load
cells = results.read_cells({out!r})
res = load({out!r})
# read a moment later, the analysis sees at least what read_cells saw
assert {{c["name"] for c in cells}} <= {{c["name"] for c in res.cells}}
print(len(cells), ";".join(c["name"] + ":" + str(len(c["epoch"])) + ":" +
                            str(float(c["final_test_accuracy"])) for c in cells))
"""


def status(out, env=ENV):
    return subprocess.run([sys.executable, "-m", "lth_mpi", "status", out], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=60)


def test_a_running_search_reads_consistently_from_other_processes(tmp_path):
    out = str(tmp_path / "r.h5")
    job = subprocess.Popen(launch(2, sys.executable, "-m", "mpi4py", "-m", "lth_mpi", "run",
                                  CONFIG, "--output", out, "--set", "parallel.group_size=1",
                                  "--set", "train.epochs=4", "--set", "rewind.points=[0, 1]",
                                  "--set", "prune.sparsities=[0.5, 0.7, 0.9]"),
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           cwd=ROOT, env=ENV)
    grid = {c.name for c in plan.cells(3, 2, ["random_reinit"])}
    seen, statuses = [], []
    try:
        while job.poll() is None:
            if os.path.exists(out):
                r = subprocess.run([sys.executable, "-c", READER.format(root=ROOT, out=out)],
                                   capture_output=True, text=True, env=ENV, timeout=60)
                assert r.returncode == 0, r.stderr                  # never blocked, never torn
                n, _, rows = r.stdout.strip().partition(" ")
                names = [x.split(":")[0] for x in rows.split(";")] if rows else []
                assert len(names) == int(n) and set(names) <= grid
                for row in filter(None, rows.split(";")):
                    name, epochs, acc = row.split(":")
                    assert int(epochs) in (3, 4) and 0.1 < float(acc) <= 1   # whole cells only
                seen.append(int(n))
                s = status(out)
                assert s.returncode == 0, s.stderr
                statuses.append(s.stdout)
            time.sleep(0.3)
    finally:
        job.wait(timeout=600)
    assert job.returncode == 0
    assert seen == sorted(seen)                               # never goes backwards
    middle = [k for k in seen if 0 < k < 9]
    assert middle, f"no read while cells were being written: {seen}"
    running = [s for s in statuses if ": running" in s.splitlines()[0] and "ETA" in s]
    assert running and "queue: " in running[-1] and "best ticket so far" in running[-1]
    final = status(out).stdout
    assert "cells done: 9 / 9" in final and ": complete" in final
    assert "best ticket (chosen on validation)" in final
    best = max((c for c in results.read_cells(out) if c["control"] == "none"),
               key=lambda c: (c["final_val_accuracy"], c["sparsity"]))
    assert best["name"] in final and f"{100 * best['final_test_accuracy']:.2f}%" in final


def test_status_needs_no_mpi_and_refuses_what_is_not_a_results_file(tmp_path):
    code = ("import sys; sys.argv=['lth-mpi','status',sys.argv[1]]\n"
            "from lth_mpi import cli\nrc = cli.main(sys.argv[1:])\n"
            "assert 'mpi4py' not in sys.modules and 'tensorflow' not in sys.modules\n"
            "sys.exit(rc)")
    (tmp_path / "x.h5").write_text("not hdf5")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.h5")], capture_output=True,
                       text=True, cwd=ROOT, env=ENV, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip() == (f"lth-mpi: error: status: {tmp_path / 'x.h5'}: {tmp_path / 'x.h5'} "
                                "is not an lth-mpi results file (not an HDF5 file)")
    r = status(str(tmp_path / "none.h5"))
    assert r.returncode == 2 and "no such file" in r.stderr


def test_status_tells_a_dead_job_from_a_running_one(tmp_path):
    """kill -9 of every rank leaves the file saying `running`: the writer's heartbeat, which
    a live job refreshes while it trains, is what tells them apart."""
    import h5py
    import psutil
    out = str(tmp_path / "r.h5")
    env = {**ENV, "LTH_HEARTBEAT": "0.5"}          # stale after 3 s
    job = subprocess.Popen(launch(2, sys.executable, "-m", "mpi4py", "-m", "lth_mpi", "run",
                                  CONFIG, "--output", out, "--set", "parallel.group_size=1",
                                  "--set", "train.epochs=20"),
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           cwd=ROOT, env=env)
    try:
        for line in job.stdout:
            if line.startswith("[   1/6]"):
                break
        beats = []
        for _ in range(2):
            with h5py.File(out, "r", locking=False) as f:
                beats.append(float(f.attrs["heartbeat"]))
            time.sleep(1.5)
        assert beats[1] > beats[0]                          # it beats while cells train
        alive = status(out, env).stdout
        assert alive.splitlines()[0].endswith(": running") and "ETA" in alive
    finally:
        for p in psutil.Process(job.pid).children(recursive=True) + [psutil.Process(job.pid)]:
            p.kill()
        job.wait(timeout=60)
    time.sleep(4)
    dead = status(out, env)
    assert dead.returncode == 0, dead.stderr
    first = dead.stdout.splitlines()[0]
    assert ": dead: the file says running, but its writer has been silent for" in first, first
    assert "--resume continues it" in first
    assert "queue:" not in dead.stdout and "ETA" not in dead.stdout
