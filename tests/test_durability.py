"""Nothing lost: a stop in the middle of any write to the results file, then --resume.

LTH_FAULT (lth_mpi/faults.py) stops rank 0 at a write point of the real pipeline (mpiexec,
real Fashion-MNIST, real HDF5): `exit` ends the process there, as a kill would; `enospc`
raises a full disk's error. What was cut short must not count, and --resume must finish the
file with the same numbers as a run that was never stopped.
"""
import os

import h5py
import pytest

from lth_mpi import data, results
from mpi_helpers import TINY as CONFIG
from mpi_helpers import assert_same_cells, finished_cells, lth

pytestmark = pytest.mark.skipif(not os.path.isdir(data.FASHION_MNIST_DIR),
                                reason="dataset-fashion-mnist not installed (run/install.sh)")
SMALL = ["--set", "controls=[]", "--set", "rewind.points=[0]", "--set", "parallel.group_size=1"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    cells = finished_cells(str(tmp_path_factory.mktemp("ref") / "r.h5"), *SMALL)
    assert sorted(cells) == ["m00_r0_none", "m01_r0_none"]
    return cells


def test_a_stop_inside_any_write_is_redone_on_resume(tmp_path, reference):
    """Stopped inside each write point in turn: the first run in the dense phase's curves,
    its resume in the dense phase's masks, the next resume in the 2nd cell's curves, the next
    in a cell's attributes (so each resume also redoes what the stop before it cut short);
    a last resume finishes the file with the numbers of a run never stopped."""
    out = str(tmp_path / "r.h5")
    for i, (point, nth) in enumerate([("dense-curves", 1), ("dense-masks", 1),
                                      ("cell-curves", 2), ("cell-attrs", 1)]):
        resume = ["--resume"] if i else []
        proc = lth(2, CONFIG, "--output", out, *SMALL, *resume,
                   env={"LTH_FAULT": f"exit:{point}:{nth}"})
        # non-zero also where the launcher says 0 (MPICH 4.2): the file is not complete
        assert proc.returncode != 0, (point, proc.stdout + proc.stderr)
        with h5py.File(out, "r") as f:
            assert f.attrs["status"] == "running", point   # killed: nobody could say more
            if point.startswith("dense"):
                assert "dense" in f and not f.attrs.get("dense_complete"), point  # half written
            else:
                assert f.attrs["dense_complete"] == 1 and len(f["cells"]) == 2, point
                assert sum("complete" in g.attrs for g in f["cells"].values()) == 1, point
        finished = results.read_cells(out)                 # readers skip what was cut short
        assert len(finished) == (0 if point.startswith("dense") else 1), point
    proc = lth(2, CONFIG, "--output", out, *SMALL, "--resume")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_same_cells(out, reference)
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "complete"
        assert all("complete" in g.attrs for g in f["cells"].values())


def test_a_full_disk_mid_grid_keeps_the_finished_cells(tmp_path, reference):
    out = str(tmp_path / "r.h5")
    proc = lth(2, CONFIG, "--output", out, *SMALL, env={"LTH_FAULT": "enospc:cell-curves:2"})
    assert proc.returncode != 0
    lines = [l for l in proc.stderr.splitlines() if l.startswith("lth-mpi: error:")]
    assert len(lines) == 1 and "No space left on device" in lines[0], proc.stderr
    assert "the file keeps the 1 cells finished before it" in lines[0]
    assert "Traceback" not in proc.stderr
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "failed" and "No space left" in f.attrs["error"]
    assert len(results.read_cells(out)) == 1
    proc = lth(2, CONFIG, "--output", out, *SMALL, "--resume")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_same_cells(out, reference)


def test_a_full_disk_while_writing_the_dense_phase_stops_every_rank(tmp_path):
    out = str(tmp_path / "r.h5")
    proc = lth(2, CONFIG, "--output", out, *SMALL, env={"LTH_FAULT": "enospc:dense-masks"})
    assert proc.returncode != 0
    lines = [l for l in proc.stderr.splitlines() if l.startswith("lth-mpi: error:")]
    assert len(lines) == 2 and "output: cannot write the dense phase" in lines[0], proc.stderr
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "failed" and not f.attrs.get("dense_complete")
