"""analysis/: numbers on hand-made inputs, then report and scaling on small real runs."""
import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from lth_mpi import config, data, plan, results
from lth_mpi.comm import wire
from mpi_helpers import ROOT, settings_for

sys.path.insert(0, ROOT)   # analysis/ is importable from the repository root
from analysis import amdahl, tickets, timeline  # noqa: E402

CONFIG = os.path.join(ROOT, "tests", "configs", "tiny_fashion.yaml")
PHASES = results.PHASES


def cli(*args):
    """`python -m analysis ARGS` in a subprocess, from the repository root."""
    return subprocess.run([sys.executable, "-m", "analysis", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


# --- winning tickets ---------------------------------------------------------------------------

def cell(mask, rewind, sparsity, final, best=None, control="none", val=None):
    name = f"m{mask:02d}_{'r%d' % rewind if rewind >= 0 else 'init'}_{control}"
    val = final if val is None else val
    return {"name": name, "mask": mask, "rewind": rewind, "sparsity": sparsity,
            "control": control, "final_test_accuracy": final,
            "best_test_accuracy": final if best is None else best,
            "final_val_accuracy": val, "best_val_accuracy": val}


HAND = [cell(0, 0, 0.5, 0.905), cell(0, 1, 0.5, 0.910),
        cell(1, 0, 0.8, 0.893), cell(1, 1, 0.8, 0.902),
        cell(2, 0, 0.9, 0.850, best=0.896), cell(2, 1, 0.9, 0.895),
        cell(3, 0, 0.95, 0.700), cell(3, 1, 0.95, 0.887, best=0.899),
        cell(3, -1, 0.95, 0.950, control="random_reinit")]   # a control never wins


def test_winning_tickets_on_a_hand_made_table():
    # dense 0.90, tolerance 0.005: tickets need >= 0.895
    wins = tickets.winning_tickets(HAND, 0.90, 0.005)
    assert [(w["sparsity"], w["rewind"]) for w in wins] == [(0.9, 1), (0.5, 0)]
    # tolerance 0.015 (>= 0.885): rewind 1 reaches 95%, rewind 0 stops at 80%
    wins = tickets.winning_tickets(HAND, 0.90, 0.015)
    assert [w["name"] for w in wins] == ["m03_r1_none", "m01_r0_none"]
    # tolerance 0: only cells at least as accurate as dense
    assert [w["name"] for w in tickets.winning_tickets(HAND, 0.90, 0.0)] == \
        ["m01_r1_none", "m00_r0_none"]
    # at the early-stop point both rewinds reach 90% and rewind 1 reaches 95%
    wins = tickets.winning_tickets(HAND, 0.90, 0.005, metric="best")
    assert [w["name"] for w in wins] == ["m03_r1_none", "m02_r0_none"]
    assert tickets.winning_tickets(HAND, 0.99, 0.01) == []


def test_grid_best_cell_and_dense_band():
    g = tickets.grid(HAND[:-1] + [], 5, 2)
    assert g.shape == (5, 2) and g[1, 1] == 0.902 and g[3, 0] == 0.700
    assert np.isnan(g[4]).all()                       # mask 4 has no finished cell
    assert tickets.best_cell(HAND)["name"] == "m00_r1_none"        # the control is not a ticket
    mean, spread, n = tickets.dense_band([0.5, 0.80, 0.82, 0.84])  # default: last half
    assert n == 2 and mean == pytest.approx(0.83) and spread == pytest.approx(0.01)
    mean, spread, n = tickets.dense_band([0.5, 0.80, 0.82, 0.84], window=3)
    assert n == 3 and mean == pytest.approx(0.82) and spread == pytest.approx(np.sqrt(8e-4 / 3))
    dense = {"test_accuracy": [0.5, 0.9, 0.8], "val_accuracy": [0.5, 0.7, 0.75]}
    assert tickets.dense_reference(dense, "final") == 0.8
    # the dense early stop is chosen on validation (epoch 3), the test accuracy taken there
    assert tickets.dense_reference(dense, "best") == 0.8
    assert tickets.dense_reference(dense, "best", "val") == 0.75
    dense["val_accuracy"] = [np.nan] * 3                         # no validation split: on test
    assert tickets.dense_reference(dense, "best") == 0.9


def test_tickets_are_chosen_on_validation_and_reported_on_test():
    # on test, m02 (0.9 sparsity) would pass a 0.895 bar; on validation it does not
    hand = [cell(0, 0, 0.5, 0.905, val=0.90), cell(1, 0, 0.8, 0.880, val=0.899),
            cell(2, 0, 0.9, 0.899, val=0.85)]
    assert [w["name"] for w in tickets.winning_tickets(hand, 0.90, 0.005)] == ["m02_r0_none"]
    wins = tickets.winning_tickets(hand, 0.90, 0.005, split="val")
    assert [w["name"] for w in wins] == ["m01_r0_none"]
    assert tickets.accuracy(wins[0], "final", "test") == 0.880     # what gets reported
    assert tickets.best_cell(hand, split="val")["name"] == "m00_r0_none"
    assert tickets.selection_split({"val_accuracy": [0.5]}, [{"val_accuracy": [0.4]}]) == "val"
    assert tickets.selection_split({"val_accuracy": [np.nan]}, []) == "test"


# --- utilization and serial time of a known timeline ------------------------------------------

def rows(rank, *phases):
    return [(rank, PHASES.index(p), c, a, b) for p, c, a, b in phases]


# rank 0: dense, then cells 0 and 2 (with 0.5 s untimed before them); rank 1 waits, then cell 1
HAND_TIMELINE = np.array(
    rows(0, ("setup", -1, 0, 1), ("dense", -1, 1, 3), ("broadcast", -1, 3, 4),
         ("cell", 0, 4.5, 8.5), ("cell", 2, 8.5, 10), ("drain", -1, 10, 10.2),
         ("gather", -1, 10.2, 10.5))
    + rows(1, ("setup", -1, 0, 1), ("wait", -1, 1, 3), ("broadcast", -1, 3, 4),
           ("cell", 1, 4.5, 9.5), ("drain", -1, 9.5, 9.5), ("gather", -1, 9.5, 10.5)),
    np.float64) + [0, 0, 0, 1000, 1000]   # Unix-like times: only differences matter


def test_utilization_of_a_known_timeline():
    t = HAND_TIMELINE
    assert timeline.wall_seconds(t) == pytest.approx(10.5)
    # busy: rank 0 dense 2 + cells 4 + 1.5; rank 1 cell 5 -> 12.5 of 2 x 10.5 rank-seconds
    assert timeline.utilization(t, PHASES) == pytest.approx(12.5 / 21)
    b = timeline.breakdown(t, PHASES)
    assert b == pytest.approx({"busy": 12.5, "idle": 0.5 + 3.0, "overhead": 4.0, "untimed": 1.0})
    per = timeline.phase_seconds(t, PHASES)
    assert per[1]["wait"] == pytest.approx(2) and per[0]["untimed"] == pytest.approx(0.5)
    s = timeline.serial_seconds(t, PHASES)
    # head: start to the first cell (4.5 s: setup 1, dense 2, broadcast 1, untimed 0.5);
    # tail: last cell end (10) to job end (10.5); rank 1's idle gather is imbalance, not serial
    assert s["head"] == pytest.approx(4.5) and s["tail"] == pytest.approx(0.5)
    assert (s["setup"], s["dense"], s["broadcast"]) == pytest.approx((1, 2, 1))
    assert s["untimed"] == pytest.approx(0.5) and s["total"] == pytest.approx(5.0)
    assert timeline.serial_fraction(t, PHASES) == pytest.approx(5.0 / 10.5)


# --- Amdahl ----------------------------------------------------------------------------------

def test_amdahl_fit_recovers_the_serial_fraction():
    p = np.array([1, 2, 4, 8, 16])
    t = 200.0 * (0.1 + 0.9 / p)
    f, t1 = amdahl.fit(p, t)
    assert f == pytest.approx(0.1, abs=1e-9) and t1 == pytest.approx(200.0)
    noisy = t * (1 + 0.01 * np.random.default_rng(0).standard_normal(len(p)))
    f, t1 = amdahl.fit(p, noisy)
    assert abs(f - 0.1) < 0.02 and abs(t1 - 200) < 5
    assert amdahl.speedup(0.1, 4) == pytest.approx(1 / 0.325)
    assert amdahl.speedup(0.0, 8) == pytest.approx(8)
    # the fraction implied by one run's phases: 10 s serial of 100 s at P = 1; at P = 4 the
    # same job takes 10 + 90 / 4 s, and maps back to the same f
    assert amdahl.fraction_from_phases(10, 100, 1) == pytest.approx(0.1)
    assert amdahl.fraction_from_phases(10, 10 + 90 / 4, 4) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        amdahl.fit([2, 2], [10, 11])


def test_projection_to_the_seeds_cluster():
    p = amdahl.project(cell_seconds=20.0, serial_seconds=30.0, measured_group_size=2)
    assert (p.cells, p.groups, p.rounds) == (100, 20, 5)
    assert p.cell_seconds == pytest.approx(10.0)           # 20 s x 2 ranks / 4 GPUs
    assert p.wall == pytest.approx(30 + 5 * 10) and p.one_group == pytest.approx(30 + 100 * 10)
    assert p.speedup == pytest.approx(1030 / 80)
    half = amdahl.project(20.0, 30.0, 2, efficiency=0.5)
    assert half.cell_seconds == pytest.approx(20.0) and half.wall == pytest.approx(130.0)
    assert amdahl.project(20.0, 0.0, 1, groups=30).rounds == 4   # ceil(100 / 30)


# --- strong scaling on synthetic files written with the core's writer --------------------------

def synthetic_run(path, p, f=0.1, t1=400.0, epochs=2):
    """A finished results file of 8 cells on p ranks (groups of 1) whose timeline follows
    Amdahl with serial fraction f: serial f t1 (setup, dense, broadcast, gather tail), the
    cells' (1 - f) t1 shared evenly by the ranks."""
    cfg = config.load(raw={"name": "synthetic-scaling", "model": {"name": "lenet_300_100"},
                           "prune": {"sparsities": [0.5, 0.8, 0.9, 0.95]},
                           "rewind": {"points": [0, 1]}, "train": {"epochs": epochs},
                           "parallel": {"group_size": 1}})
    grid = plan.cells(4, 2)
    ranks = [{"rank": r, "host": "h", "group": r, "group_rank": 0} for r in range(p)]
    w = results.Writer(settings_for(cfg, path, [0.5, 0.8, 0.9, 0.95]),
                       {"world_size": p, "group_size": 1, "n_groups": p, "ranks": ranks},
                       len(grid), False)
    shapes, t0 = [(4, 3), (3,)], 1.7e9
    hist = {"epoch": np.array([1, 2]), "iteration": np.array([10, 20]),
            "train_loss": np.array([1.0, 0.5]), "test_loss": np.array([0.9, 0.6]),
            "test_accuracy": np.array([0.8, 0.85]), "val_loss": np.array([0.9, 0.7]),
            "val_accuracy": np.array([0.79, 0.84]), "epoch_seconds": np.array([1.0, 1.0])}
    w.write_dense(-1, hist, ["k", "b"], shapes, [0], np.zeros((2, 15), np.float32),
                  np.zeros((4, 2), np.uint8), [0.5, 0.8, 0.9, 0.95])
    s, cell_s = f * t1, (1 - f) * t1 / len(grid)
    table = []
    for r in range(p):
        table += [(r, 0, -1, t0, t0 + 0.2 * s),
                  (r, 1 if r == 0 else 2, -1, t0 + 0.2 * s, t0 + 0.85 * s),
                  (r, 3, -1, t0 + 0.85 * s, t0 + 0.9 * s)]
        t = t0 + 0.9 * s
        for c in grid[r::p]:
            table.append((r, 4, c.id, t, t + cell_s))
            w.write_cell(c, [0.5, 0.8, 0.9, 0.95][c.mask], 0.5, c.rewind,
                         wire.CellResult(c.id, r, t, t + cell_s, hist))
            t += cell_s
        end = t0 + 0.9 * s + (1 - f) * t1 / p
        table.append((r, 6, -1, end, end + 0.1 * s))
    w.write_timings(np.array(table, np.float64), t0)
    w.close(complete=True)
    return str(path)


def test_scaling_recovers_amdahl_from_synthetic_runs(tmp_path):
    paths = [synthetic_run(tmp_path / f"results_P{p}.h5", p) for p in (1, 2, 4, 8)]
    from analysis.scaling import study
    out = study(paths, str(tmp_path / "out"))
    assert out["f_fit"] == pytest.approx(0.1, abs=1e-6)        # from T(P) = 400 (0.1 + 0.9 / P)
    assert out["t1_fit"] == pytest.approx(400.0)
    assert out["f_phases"] == pytest.approx(0.1)                # 40 s serial of the 400 s at P = 1
    assert [m.p for m in out["rows"]] == [1, 2, 4, 8]
    for m in out["rows"]:
        assert m.wall == pytest.approx(40 + 360 / m.p) and m.serial == pytest.approx(40)
        assert m.cell == pytest.approx(45) and m.utilization == pytest.approx(
            (360 + 26) / (m.p * m.wall))                       # cells + rank 0's dense 0.65 x 40
    # projection from each run: a 45 s cell on 1 rank is 11.25 s on 4 GPUs, 5 rounds
    assert out["projections"][0].wall == pytest.approx(40 + 5 * 11.25)
    assert "f = 0.100" in out["text"] and "100 cells" in out["text"]
    assert os.path.getsize(tmp_path / "out" / "scaling.png") > 10_000

    # a different experiment or an unfinished run is refused in one line
    other = synthetic_run(tmp_path / "other.h5", 2, epochs=3)
    proc = cli("scaling", paths[0], other, "--out", str(tmp_path))
    assert proc.returncode == 2 and "differs in train.epochs" in proc.stderr
    with h5py.File(paths[1], "a") as f:
        del f["cells"]["m00_r0_none"]
    proc = cli("scaling", *paths, "--out", str(tmp_path))
    assert proc.returncode == 2 and "not a finished run (7 of 8 cells" in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


# --- refusals and the no-MPI rule ------------------------------------------------------------

def test_refuses_files_that_are_not_results(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not hdf5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = [1, 2, 3]
    for path, why in [(text, "not an HDF5 file"), (tmp_path / "other.h5", "no format="),
                      (tmp_path / "absent.h5", "no such file")]:
        proc = cli("report", str(path), "--out", str(tmp_path / "rep"))
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("analysis: error: ") and why in proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "rep").exists()


def test_analysis_never_imports_mpi_or_tensorflow(tmp_path):
    path = synthetic_run(tmp_path / "r.h5", 2)
    code = ("import sys\n"
            "from analysis.__main__ import main\n"
            f"assert main(['report', {path!r}, '--out', {str(tmp_path / 'rep')!r}]) == 0\n"
            f"assert main(['scaling', {path!r}, {synthetic_run(tmp_path / 'r1.h5', 1)!r}, "
            f"'--out', {str(tmp_path)!r}]) == 0\n"
            "bad = [m for m in ('mpi4py', 'horovod', 'tensorflow', 'keras') if m in sys.modules]\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- a small real run: the report's figures and numbers ----------------------------------------

@pytest.fixture(scope="module")
def real_runs(tiny_run):
    """The tiny config at P = 1 and P = 2 (groups of 1; the P = 2 run is shared with other
    tests)."""
    extra = ["--set", "parallel.group_size=1"]
    if not os.path.isdir(data.FASHION_MNIST_DIR):
        extra += ["--set", "dataset.name=synthetic", "--set", "dataset.train_examples=1000",
                  "--set", "dataset.test_examples=200"]
    out = {}
    for n in (1, 2):
        out[n], proc = tiny_run(n, *extra)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_report_of_a_real_run(real_runs, tmp_path):
    path = real_runs[2]
    proc = cli("report", path, "--out", str(tmp_path), "--tolerance", "0.02")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "6 of 6 cells finished" in proc.stdout and "missing" not in proc.stdout
    from matplotlib.image import imread
    for name in ("accuracy", "heatmap", "learning_curves", "early_stop", "timeline"):
        png = tmp_path / f"{name}.png"
        assert 10_000 < os.path.getsize(png) < 150_000, name
        h, w, _ = imread(png).shape
        assert h >= 250 and w >= 400, name

    # the numbers in the summary, recomputed here straight from the file
    summary = (tmp_path / "summary.md").read_text()
    cells = results.read_cells(path)
    with h5py.File(path, "r") as f:
        dense = float(f["dense/val_accuracy"][-1])       # tickets are chosen on validation
        t = f["timings/run0"][()]
        phases = json.loads(f["timings/run0"].attrs["phases"])
    for c in cells:
        assert f"| {c['name']} | {c['id']} |" in summary
        assert f"{100 * c['final_test_accuracy']:.2f}" in summary
    assert "chosen on the validation split" in summary
    ok = [c for c in cells if c["control"] == "none" and c["final_val_accuracy"] >= dense - 0.02]
    if ok:
        sparsest = max(c["sparsity"] for c in ok)
        top = max((c for c in ok if c["sparsity"] == sparsest),
                  key=lambda c: c["final_val_accuracy"])
        assert f"winning ticket {top['name']}" in proc.stdout
        assert f"accuracy {100 * top['final_test_accuracy']:.2f}%" in proc.stdout  # test, reported
    else:
        assert "No finished ticket is within the tolerance" in summary
    wall = t[:, 4].max() - t[:, 3].min()
    busy = sum(r[4] - r[3] for r in t if phases[int(r[1])] in ("dense", "cell"))
    assert f"utilization {100 * busy / (2 * wall):.1f}%" in proc.stdout
    assert f"wall time {wall:.1f} s on 2 ranks" in summary
    best = max((c for c in cells if c["control"] == "none"),
               key=lambda c: (c["final_val_accuracy"], c["sparsity"]))
    assert f"{100 * best['final_test_accuracy']:.2f} (best)" in summary


def test_report_of_an_interrupted_run(real_runs, tmp_path):
    path = str(tmp_path / "killed.h5")
    shutil.copy(real_runs[2], path)
    with h5py.File(path, "a") as f:            # as if killed after four cells: no timings yet
        del f["cells"]["m01_r1_none"], f["cells"]["m01_init_random_reinit"], f["timings"]
        f.attrs["status"] = "running"
    proc = cli("report", path, "--out", str(tmp_path / "rep"), "--format", "html")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 of 6 cells finished, 2 missing" in proc.stdout
    page = (tmp_path / "rep" / "summary.html").read_text()
    assert "2 missing (m01_r1_none, m01_init_random_reinit)" in page and "No timings" in page
    assert "<td>m01_r0_none</td>" in page and "<td>m01_r1_none</td>" not in page
    assert sorted(os.listdir(tmp_path / "rep")) == ["accuracy.png", "early_stop.png",
                                                    "heatmap.png", "learning_curves.png",
                                                    "summary.html"]


def test_scaling_of_real_runs(real_runs, tmp_path):
    proc = cli("scaling", real_runs[2], real_runs[1], "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from analysis.scaling import study
    out = study([real_runs[1], real_runs[2]], str(tmp_path))
    walls = {}
    for n, path in real_runs.items():
        with h5py.File(path, "r") as f:
            t = f["timings/run0"][()]
        walls[n] = t[:, 4].max() - t[:, 3].min()
    assert [m.p for m in out["rows"]] == [1, 2]
    assert [m.wall for m in out["rows"]] == pytest.approx([walls[1], walls[2]])
    # two points: the fit goes through both
    for m in out["rows"]:
        assert out["t1_fit"] * (out["f_fit"] + (1 - out["f_fit"]) / m.p) == pytest.approx(m.wall)
    assert out["t1"] == pytest.approx(walls[1])              # speed-up against the measured P = 1
    assert f"f = {out['f_fit']:.3f}" in proc.stdout and "100 cells" in proc.stdout
    assert os.path.isfile(tmp_path / "scaling.png")
