"""Kept weights and TensorFlow Lite export, through the real pipeline: a search on real
Fashion-MNIST under mpiexec keeps weights in the HDF5 file, `lth-mpi export` rebuilds the
ticket from them and runs it in the TFLite interpreter."""
import json
import os
import warnings
import subprocess
import sys

import h5py
import numpy as np
import pytest

from lth_mpi import data, pruning, results, tensorboard_export
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


def best_tickets(cells: dict) -> list[str]:
    """Of each mask, the ticket of highest final validation accuracy (the first on a tie),
    read from the cells' own attributes."""
    best = []
    for m in (0, 1):
        tickets = sorted((c for c in cells.values() if c["mask"] == m and c["control"] == "none"),
                         key=lambda c: c["id"])
        assert all(np.isfinite(c["final_val_accuracy"]) for c in tickets)
        top = max(c["final_val_accuracy"] for c in tickets)
        best.append(next(c["name"] for c in tickets if c["final_val_accuracy"] == top))
    return sorted(best)


def test_a_stop_between_two_kept_copies_keeps_only_the_best_on_resume(kept, tmp_path):
    out = str(tmp_path / "r.h5")
    keep = ["--set", "results.keep_weights=best", "--set", "parallel.group_size=1"]
    proc = lth(2, TINY, "--output", out, *keep, env={"LTH_FAULT": "exit:cell-replace"})
    assert proc.returncode != 0
    with h5py.File(out, "r") as f:    # the new copy complete, the old one not yet deleted
        held = [g.attrs["mask"] for g in f["cells"].values() if "weights" in g]
        assert len(held) > len(set(held)), held
    proc = lth(2, TINY, "--output", out, *keep, "--resume")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cells = {c["name"]: c for c in results.read_cells(out)}
    with h5py.File(out, "r") as f:
        holding = sorted(n for n, g in f["cells"].items() if "weights" in g)
    assert holding == best_tickets(cells)
    with h5py.File(kept, "r") as f:   # and the same as a run never stopped
        assert holding == sorted(n for n, g in f["cells"].items() if "weights" in g)


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
    assert holding == best_tickets(cells)
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
            ([kept, "dense", "--format", "onnx"], "--format: 'onnx' is not one of tflite, tensorboard"),
            ([str(tmp_path / "none.h5"), "dense"], "none.h5: no such file")):
        proc = export(*args)
        errors = [l for l in proc.stderr.splitlines() if l.startswith("lth-mpi: error:")]
        assert proc.returncode == 2 and len(errors) == 1 and message in errors[0], proc.stderr
        assert "Traceback" not in proc.stderr


class Pixels:
    """A dataset-like stand-in whose pixels span 0..100, not 0..255: int8's calibrated input
    scale is then 100/255, and raw pixels fed without it would be read 2.55x too dark."""
    input_shape, mean, std = (4,), [0.0], [1 / 255]    # the model sees raw pixel values

    def __init__(self, n):
        rng = np.random.default_rng(0)
        self.x = rng.integers(0, 101, (n, 4)).astype(np.float32)
        self.x[0], self.x[1] = 0, 100
        self.y = (self.x[:, 0] > 50).astype(np.int64)
        self.train_total = n

    def train_batches(self, seed, steps, batch):
        assert batch <= self.train_total
        yield self.x[:batch], self.y[:batch]

    def test_batches(self, batch):
        for i in range(0, len(self.x), batch):
            yield self.x[i:i + batch], self.y[i:i + batch]


def test_int8_uses_the_inputs_quantization_and_calibrates_on_little_data():
    import keras
    from lth_mpi import export as export_mod
    inp = keras.Input((4,))
    dense = keras.layers.Dense(2)
    model = keras.Model(inp, dense(inp))
    kernel = np.zeros((4, 2), np.float32)
    kernel[0] = [-1, 1]
    dense.set_weights([kernel, np.array([50, -50], np.float32)])   # class 1 iff pixel 0 > 50
    data_ = Pixels(300)                  # fewer than the 512 calibration examples (a traceback)
    blob = export_mod.convert(model, data_, "int8")
    import tensorflow as tf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(model_content=blob)
    scale, zero = interpreter.get_input_details()[0]["quantization"]
    assert scale == pytest.approx(100 / 255, rel=0.02)
    assert export_mod.accuracy(blob, data_) > 0.95     # raw pixels as uint8 give about 0.5
    assert export_mod.accuracy(export_mod.convert(model, data_), data_) == 1.0


def test_int8_export_of_a_search_on_little_data(tmp_path, capsys):
    out = str(tmp_path / "small.h5")
    proc = lth(2, TINY, "--output", out, "--set", "dataset.train_examples=400",
               "--set", "results.keep_weights=best", "--set", "prune.sparsities=[0.5]",
               "--set", "rewind.points=[0]", "--set", "controls=[]")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    code, printed = export_here(capsys, out, "m00_r0_none", "--quantize", "int8",
                                "--output", str(tmp_path / "t.tflite"))
    assert code == 0, printed
    line = printed.strip().splitlines()[-1]
    assert "int8 calibrated on only 400 training examples" in line, line
    tflite = float(line.split("test accuracy in TFLite ")[1].split("%")[0])
    own = float(line.split("the cell's own ")[1].split("%")[0])
    assert abs(tflite - own) <= 1.5, line


def tensorboard_scalars(run_dir: str) -> dict:
    """{tag: [(step, value)]} of a run's event files, read back with TensorFlow's event reader
    (the TFRecord event format TensorBoard reads; TensorBoard itself is not installed)."""
    import tensorflow as tf
    out = {}
    for name in sorted(os.listdir(run_dir)):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(run_dir, name)):
            for v in event.summary.value:
                if v.tag not in out:    # TensorBoard takes a tag's plugin from its first event
                    assert v.metadata.plugin_data.plugin_name == "scalars", v.metadata
                out.setdefault(v.tag, []).append((event.step, float(tf.make_ndarray(v.tensor))))
    return out


def test_tensorboard_export_writes_every_cells_curves(kept, tmp_path):
    """Every finished cell and the dense net become a run whose scalars are the file's curves,
    step by step, NaN where the file has NaN; a bad --format or a stray --quantize is one
    line."""
    got = results.read(kept)
    out = tmp_path / "tb"
    proc = export(kept, str(out), "--format", "tensorboard")
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(out)) == sorted(["dense"] + [c["name"] for c in got.cells])
    for name, curves in [("dense", got.dense_runs[0])] + [(c["name"], c) for c in got.cells]:
        scalars = tensorboard_scalars(str(out / name))
        assert sorted(scalars) == sorted(tensorboard_export.SCALARS)
        for tag, points in scalars.items():
            assert [s for s, _ in points] == [int(i) for i in curves["iteration"]]
            np.testing.assert_array_equal(np.array([v for _, v in points], np.float32),
                                          np.asarray(curves[tag], np.float32))
    proc = export(kept, str(tmp_path / "tb2"), "--format", "tensorboard", "--quantize", "int8")
    errors = [l for l in proc.stderr.splitlines() if l.startswith("lth-mpi: error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "--quantize and --output" in errors[0]
