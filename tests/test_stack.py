"""The supported stack and the move to it: results written on the previous stack (TensorFlow
2.18.1) still read; --resume across a stack change is refused; Horovod present, or absent with
the reason run/install.sh found, and the groups then on mpi4py; TensorFlow's start-up quiet;
run/install.sh's refusals (a Python TensorFlow has no wheel for, a GPU build without CUDA)."""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import h5py
import pytest

from lth_mpi import data, keras_import
from lth_mpi.comm import stack
from mpi_helpers import ENV, ROOT, TINY, lth, mpiexec

# the tiny search (tests/configs/tiny_fashion.yaml, 1 epoch, rewind point 0) run to its end at
# commit 73bdd25 on -n 2, with tensorflow-cpu 2.18.1 and Keras 3.15.1 (the stack before 2.21)
OLD = os.path.join(ROOT, "tests", "data", "stack-tf2.18.1.h5")
# the options the old file was written with (train.sync_batchnorm was false by default then)
OLD_OPTIONS = ("--set", "train.epochs=1", "--set", "rewind.points=[0]",
               "--set", "train.sync_batchnorm=false")
needs_data = pytest.mark.skipif(not os.path.isdir(data.FASHION_MNIST_DIR),
                                reason="dataset-fashion-mnist not installed (run/install.sh)")


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_the_old_stack_file_is_what_it_says():
    with h5py.File(OLD, "r") as f:
        assert json.loads(f.attrs["software"])["tensorflow"] == "2.18.1"
        assert f.attrs["status"] == "complete" and len(f["cells"]) == 4


def test_a_file_from_the_old_stack_reads_in_the_analysis_and_status(tmp_path):
    path = str(tmp_path / "old.h5")
    shutil.copy(OLD, path)
    report = subprocess.run([sys.executable, "-m", "analysis", "report", path, "--out",
                             str(tmp_path / "report")], capture_output=True, text=True,
                            cwd=ROOT, env=ENV, timeout=300)
    assert report.returncode == 0, report.stderr
    summary = open(tmp_path / "report" / "summary.md").read()
    assert "| m01_r0_none | 1 | 0.9000 | 10% | epoch 0 | 73.70 |" in summary   # as trained
    status = subprocess.run([sys.executable, "-m", "lth_mpi", "status", path],
                            capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=120)
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[:2] == [f"{path}: complete", "cells done: 4 / 4"]


@needs_data
def test_resume_across_a_stack_change_is_refused_in_one_line(tmp_path):
    """TensorFlow's and Keras' versions decide results (initializers, kernels), like a
    result-deciding config key: a resume on another version is refused, the file untouched."""
    path = str(tmp_path / "old.h5")
    shutil.copy(OLD, path)
    before = digest(path)
    proc = lth(2, TINY, "--output", path, "--resume", *OLD_OPTIONS)
    assert proc.returncode != 0
    import tensorflow as tf
    for rank in proc.ranks:
        lines = rank["stderr"].strip().splitlines()
        assert len(lines) == 1, rank["stderr"]
        assert lines[0].startswith(f"lth-mpi: error: output: --resume: {path} was written with "
                                   "tensorflow 2.18.1; this is tensorflow " + tf.__version__)
    assert digest(path) == before


def test_horovod_status_names_the_reason_install_left(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "horovod", None)         # import horovod now fails
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    version, built, why = stack.horovod_status()
    assert (version, built) == (None, {}) and why.startswith("not importable")
    os.makedirs(tmp_path / "share" / "lth-mpi")
    (tmp_path / "share" / "lth-mpi" / "horovod-absent").write_text("its build failed: x.cc:1: error: y\n")
    assert stack.horovod_status() == (None, {}, "its build failed: x.cc:1: error: y")


@needs_data
def test_without_horovod_groups_use_mpi4py_and_say_why(tmp_path):
    """Horovod hidden from every rank (as where it could not be built): asking for it is one
    line on every rank; auto trains the groups with mpi4py and the file says Horovod is absent."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['horovod'] = None\n")
    env = {"PYTHONPATH": str(hide)}
    out = str(tmp_path / "r.h5")
    asked = mpiexec(2, ["-m", "lth_mpi", "run", TINY, "--output", out, *OLD_OPTIONS,
                        "--set", "parallel.allreduce=horovod"], env=env)
    assert asked.returncode == 2 and not os.path.exists(out)
    lines = [l for l in asked.stderr.splitlines() if l.startswith("lth-mpi: ")]
    assert len(lines) == 2 and lines[0] == lines[1], asked.stderr            # one per rank
    assert "Traceback" not in asked.stderr
    assert lines[0].startswith("lth-mpi: error: parallel.allreduce: horovod, but Horovod is "
                               "absent: not importable")
    auto = mpiexec(2, ["-m", "lth_mpi", "run", TINY, "--output", out, *OLD_OPTIONS], env=env)
    assert auto.returncode == 0, auto.stderr
    with h5py.File(out, "r") as f:
        assert json.loads(f.attrs["software"])["horovod"].startswith("absent: not importable")
        assert [r["allreduce"] for r in json.loads(f.attrs["ranks"])] == ["mpi", "mpi"]
        assert f.attrs["status"] == "complete"


def test_tensorflow_start_up_chatter_is_kept_out():
    """TensorFlow 2.19+ logs oneDNN and CPU-feature notices before it reads
    TF_CPP_MIN_LOG_LEVEL: four lines per rank per start, unless keras_import holds them."""
    proc = subprocess.run([sys.executable, "-c", "import lth_mpi.keras_import"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env=dict(ENV, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_chatter_filter_keeps_errors_and_what_is_not_a_log_line():
    text = (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
            b"I0000 00:00:1796293107.510344   27752 port.cc:153] oneDNN custom operations are on.\n"
            b"I0000 00:00:1796293107.687757   27752 cpu_feature_guard.cc:227] This TensorFlow binary\n"
            b"To enable the following instructions: AVX2 FMA, in other operations, rebuild\n"
            b"W0000 00:00:1796293107.7   27752 x.cc:1] a warning\n"
            b"E0000 00:00:1796293107.8   27752 y.cc:2] an error\n"
            b"Traceback (most recent call last):\n")
    assert keras_import.filter_chatter(text, 2) == (
        b"E0000 00:00:1796293107.8   27752 y.cc:2] an error\nTraceback (most recent call last):\n")
    assert b"a warning" in keras_import.filter_chatter(text, 1)
    assert keras_import.filter_chatter(text, 0) == text


def install(tmp_path, **env):
    """run/install.sh in this checkout's environment, with PATH reduced to it and the system's
    (no CUDA toolkit, no other Python), never calling apt."""
    venv = os.path.dirname(os.path.dirname(sys.executable))
    base = {"HOME": os.environ.get("HOME", "/root"), "LTH_NO_APT": "1", "LTH_VENV": venv,
            "PATH": f"{venv}/bin:/usr/bin:/bin", "CUDA_HOME": str(tmp_path / "no-cuda"),
            "LTH_WHEEL_CACHE": ""}
    return subprocess.run(["bash", os.path.join(ROOT, "run", "install.sh")], capture_output=True,
                          text=True, cwd=ROOT, timeout=300, env=dict(base, **env))


def test_install_refuses_a_python_tensorflow_has_no_wheel_for(tmp_path):
    fake = tmp_path / "python3.14"
    fake.write_text("#!/bin/sh\necho 3.14\n")
    fake.chmod(0o755)
    proc = install(tmp_path, PYTHON=str(fake), LTH_VENV=str(tmp_path / "venv"))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "install: error: Python 3.14: TensorFlow 2.21 has wheels for Python 3.13, 3.12, 3.11, "
        "3.10 only; install one (on a cluster: module load python/3.12) or set PYTHON"]
    assert not (tmp_path / "venv").exists()


def test_install_gpu_build_without_cuda_is_one_line(tmp_path):
    """The GPU path as far as a CPU goes: LTH_GPU=1 (as a CUDA build of TensorFlow implies)
    needs nvcc for Horovod's NCCL build; without it, one line naming what to load."""
    proc = install(tmp_path, LTH_GPU="1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "install: error: a GPU build of Horovod needs the CUDA toolkit (nvcc): load a CUDA "
        "module, or LTH_GPU=0")


def test_the_gpu_requirement_resolves_with_the_nccl_horovod_builds_with(tmp_path):
    """GPU nodes install tensorflow[and-cuda] of the version install.sh pins (the
    LTH_TF_PACKAGE line of docs/install.md); it must resolve on the registry and bring the
    nvidia-nccl wheel that install.sh hands to Horovod's NCCL build. Resolved only (pip
    --dry-run): no GPU here."""
    import re
    pin = re.search(r"LTH_TF_PACKAGE:-tensorflow-cpu==([\d.]+)",
                    open(os.path.join(ROOT, "run", "install.sh")).read()).group(1)
    spec = f"tensorflow[and-cuda]=={pin}"
    assert f'LTH_TF_PACKAGE="{spec}" bash run/install.sh' in \
        open(os.path.join(ROOT, "docs", "install.md")).read()     # the cluster set-up
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet",
                           "--ignore-installed", "--report", str(report), spec],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    names = {i["metadata"]["name"]: i["metadata"]["version"]
             for i in json.load(open(report))["install"]}
    assert names["tensorflow"] == pin
    assert any(n.startswith("nvidia-nccl") for n in names), sorted(names)


def load_fixes():
    import importlib.util
    spec = importlib.util.spec_from_file_location("fix_horovod",
                                                  os.path.join(ROOT, "run", "fix_horovod.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_horovod_source_fixes_apply_once_and_only_to_their_release(tmp_path):
    fix = load_fixes()
    src = tmp_path / "horovod-0.28.1"
    for path, old, _, _ in fix.FIXES:
        (src / path).parent.mkdir(parents=True, exist_ok=True)
        (src / path).write_text(f"// before\n{old}// after\n")
    (src / "horovod" / "__init__.py").write_text("__version__ = '0.28.1'\n")
    assert len(fix.apply(str(src))) == len(fix.FIXES)
    for path, old, new, _ in fix.FIXES:
        assert (src / path).read_text() == f"// before\n{new}// after\n"
    assert fix.apply(str(src)) == []                                   # a rerun changes nothing
    (src / "horovod" / "__init__.py").write_text("__version__ = '0.29.0'\n")
    with pytest.raises(SystemExit, match="Horovod 0.29.0; these fixes are for 0.28.1"):
        fix.apply(str(src))
