"""Kept weights and TensorFlow Lite export, through the real pipeline: a search on real
Fashion-MNIST under mpiexec keeps weights in the HDF5 file, `lth-mpi export` rebuilds the
ticket from them and runs it in the TFLite interpreter."""
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from lth_mpi import data, pruning, results
from mpi_helpers import ROOT, TINY, lth

pytestmark = pytest.mark.skipif(not os.path.isdir(data.FASHION_MNIST_DIR),
                                reason="dataset-fashion-mnist not installed (run/install.sh)")


@pytest.fixture(scope="module")
def kept(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("keep") / "r.h5")
    proc = lth(2, TINY, "--output", out, "--set", "results.keep_weights=best",
               "--set", "parallel.group_size=1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def export(*args):
    return subprocess.run([sys.executable, "-m", "lth_mpi", "export", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_best_keeps_the_best_ticket_of_each_mask_and_the_dense_net(kept):
    cells = {c["name"]: c for c in results.read_cells(kept)}
    with h5py.File(kept, "r") as f:
        holding = sorted(n for n, g in f["cells"].items() if "weights" in g)
        shapes = [tuple(s) for s in json.loads(f["weights"].attrs["shapes"])]
        prunable = json.loads(f["weights"].attrs["prunable"])
        dense = f["dense/weights"][()]
        packed = f["masks"][()]
        stored = {n: results.read_weights(f, n) for n in holding}
    best = []
    for m in (0, 1):
        tickets = [c for c in cells.values() if c["mask"] == m and c["control"] == "none"]
        best.append(max(tickets, key=results.score)["name"])
    assert holding == sorted(best)
    assert dense.dtype == np.float32 and dense.size == sum(int(np.prod(s)) for s in shapes)
    offsets = np.cumsum([0] + [int(np.prod(s)) for s in shapes])
    for name, flat in stored.items():
        masks = pruning.unpack_masks(packed[cells[name]["mask"]], [shapes[i] for i in prunable])
        for i, m in zip(prunable, masks):
            w = flat[offsets[i]:offsets[i + 1]].reshape(shapes[i])
            assert (w[~m] == 0).all() and (w[m] != 0).mean() > 0.99   # pruned exactly zero


def export_here(capsys, *args):
    """`lth-mpi export ARGS` in this process (TensorFlow is imported once for the suite):
    (exit code, what it printed)."""
    from lth_mpi import cli
    code = cli.main(["export", *args])
    return code, capsys.readouterr().out


def test_export_runs_the_ticket_in_tflite_at_its_own_accuracy(kept, tmp_path, capsys):
    with h5py.File(kept, "r") as f:
        name = next(n for n, g in f["cells"].items() if "weights" in g and g.attrs["mask"] == 1)
    sizes = {}
    for quantize, tolerance in (("none", 0.002), ("float16", 0.005), ("int8", 0.015)):
        out = str(tmp_path / f"{quantize}.tflite")
        code, printed = export_here(capsys, kept, name, "--format", "tflite", "--quantize",
                                    quantize, "--output", out)
        assert code == 0, printed
        line = printed.strip().splitlines()[-1]
        assert line.startswith(f"{out}: {name} (10% of weights)"), line
        tflite = float(line.split("test accuracy in TFLite ")[1].split("%")[0]) / 100
        own = float(line.split("the cell's own ")[1].split("%")[0]) / 100
        cell = next(c for c in results.read_cells(kept) if c["name"] == name)
        assert own == pytest.approx(cell["final_test_accuracy"], abs=5e-5)
        assert abs(tflite - own) <= tolerance, line
        sizes[quantize] = os.path.getsize(out)
    assert sizes["int8"] < sizes["float16"] < sizes["none"]
    # the command itself, in its own process
    proc = export(kept, "dense", "--output", str(tmp_path / "dense.tflite"))
    assert proc.returncode == 0 and "dense (100% of weights), float32" in proc.stdout


def test_export_refuses_what_it_cannot_do_in_one_line(kept, tmp_path):
    with h5py.File(kept, "r") as f:
        without = next(n for n, g in f["cells"].items() if "weights" not in g)
    for args, message in (
            ([kept, without], f"{without} has no trained weights in the file (cells with weights:"),
            ([kept, "m09_r0_none"], "no cell 'm09_r0_none' in the file"),
            ([kept, "dense", "--quantize", "int4"], "--quantize: 'int4' is not one of"),
            ([kept, "dense", "--format", "onnx"], "--format: 'onnx' is not one of tflite"),
            ([str(tmp_path / "none.h5"), "dense"], "none.h5: no such file")):
        proc = export(*args)
        errors = [l for l in proc.stderr.splitlines() if l.startswith("lth-mpi: error:")]
        assert proc.returncode == 2 and len(errors) == 1 and message in errors[0], proc.stderr
        assert "Traceback" not in proc.stderr
