"""data_prep under real mpiexec: byte-identical output at 1, 2 and 4 ranks, restart, errors
on every rank, sharded reading by groups of ranks, and searches on converted data: ResNet-20
on CIFAR-10 (held in memory) and MobileNetV2 on an image tree at 64x64 (streamed)."""
import os

import h5py
import numpy as np
import pytest

from data_prep import cifar
from lth_mpi.data import h5format
from lth_mpi import results
from mpi_helpers import lth, mpiexec
from test_data import make_h5
from test_data_prep import cifar_arrays, make_tree, write_cifar


def convert(n, src, dst, *extra):
    return mpiexec(n, ["-m", "data_prep", "imagenet", str(src), str(dst), "--size", "32",
                       "--shard-size", "40", *extra], timeout=300)


def contents(dst):
    """{relative path: bytes} of the index and every shard file."""
    folder = str(dst)[:-3] + ".shards"
    out = {"index": open(dst, "rb").read()}
    for name in sorted(os.listdir(folder)):
        out[name] = open(os.path.join(folder, name), "rb").read()
    return out


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    make_tree(root)
    return root


@pytest.fixture(scope="module")
def reference(tree, tmp_path_factory):
    dst = tmp_path_factory.mktemp("n1") / "ds.h5"
    proc = convert(1, tree, dst)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dst


@pytest.mark.parametrize("n", [2, 4])
def test_parallel_conversion_is_byte_identical_to_one_rank(tree, reference, tmp_path, n):
    dst = tmp_path / "ds.h5"
    proc = convert(n, tree, dst)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"9 shards over {n} rank(s)" in proc.stdout
    assert all(f"[rank {r}]" in proc.stdout for r in range(n))         # every rank worked
    assert proc.stdout.count("9 shards written, 0 reused") == 1          # rank 0 reports
    ref, got = contents(reference), contents(dst)
    assert sorted(got) == sorted(ref) and len(got) == 10
    for name in ref:
        assert got[name] == ref[name], name
    with h5py.File(dst, "r") as f:
        assert len(f["train/labels"]) == 246 - 2 and len(f["test/labels"]) == 41 - 1


def test_rerun_skips_verified_shards_and_redoes_damaged_ones(tree, reference, tmp_path):
    dst = tmp_path / "ds.h5"
    assert convert(2, tree, dst).returncode == 0
    folder = tmp_path / "ds.shards"
    os.remove(folder / "train-00002.h5")                       # killed before this shard
    with h5py.File(folder / "train-00003.h5", "r+") as f:      # contents no longer match
        f["images"][0, 0, 0, 0] ^= 1
    before = {p: os.stat(folder / p).st_mtime_ns for p in os.listdir(folder)}
    proc = convert(2, tree, dst)
    assert proc.returncode == 0, proc.stderr
    assert "2 shards written, 7 reused" in proc.stdout
    assert contents(dst) == contents(reference)
    for name, mtime in before.items():
        if name not in ("train-00002.h5", "train-00003.h5"):
            assert os.stat(folder / name).st_mtime_ns == mtime, name     # not rewritten
    proc = convert(2, tree, dst, "--size", "16")                         # another plan
    assert "9 shards written, 0 reused" in proc.stdout
    assert h5format.describe(str(dst))["input_shape"] == (16, 16, 3)


def error_lines(proc):
    return [l for l in proc.stderr.splitlines() if l.startswith("data_prep: error:")]


def test_bad_input_fails_every_rank_in_one_line(tmp_path):
    proc = convert(2, tmp_path / "missing", tmp_path / "ds.h5")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 2 and all(l.endswith("missing: not a directory") for l in lines)


def test_a_failure_on_one_rank_stops_every_rank(tree, tmp_path):
    os.makedirs(tmp_path / "ds.shards" / "train-00001.h5.tmp")   # rank 1 cannot write there
    proc = convert(2, tree, tmp_path / "ds.h5")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 2 and all("train-00001.h5" in l for l in lines), proc.stderr
    assert not os.path.exists(tmp_path / "ds.h5")


def test_small_converter_under_mpiexec(tmp_path):
    train, test = cifar_arrays(60, 10, 1), cifar_arrays(20, 10, 2)
    write_cifar(tmp_path / "src", "cifar10", "python", train, test)
    proc = mpiexec(2, ["-m", "data_prep", "cifar10", str(tmp_path / "src"), str(tmp_path / "c.h5")])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("cifar10: 60 train + 20 test images") == 1
    with h5py.File(tmp_path / "c.h5", "r") as f:
        np.testing.assert_array_equal(f["test/images"][()], test[0])


@pytest.mark.parametrize("n,group", [(2, 2), (4, 2)])
def test_groups_read_every_example_once_per_epoch(tmp_path, n, group):
    make_h5(tmp_path / "tagged.h5", n_train=1000, n_test=230, sharded=True)
    proc = mpiexec(n, ["tests/mpi/read_sharded.py", str(tmp_path / "tagged.h5"), str(group)],
                   timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"read coverage OK on {n} ranks, groups of {group}" in proc.stdout


def test_search_trains_resnet20_on_converted_cifar10(tmp_path):
    write_cifar(tmp_path / "src", "cifar10", "binary", cifar_arrays(600, 10, 3),
                cifar_arrays(200, 10, 4))
    out = cifar.convert(str(tmp_path / "src"), "cifar10")
    h5format.write_file(str(tmp_path / "c10.h5"), "cifar10", out["splits"], out["class_names"],
                        out["source"], out["sources"])
    config = tmp_path / "cfg.yaml"
    config.write_text(f"""name: converted-cifar10
model: {{name: resnet20}}
dataset: {{name: cifar10, path: {tmp_path / 'c10.h5'}, augment: true, validation_examples: 100}}
train: {{epochs: 1, batch_size: 100, optimizer: sgd, learning_rate: 0.05}}
rewind: {{unit: epoch, points: [0]}}
prune: {{sparsities: [0.5]}}
controls: []
parallel: {{group_size: 2}}
""")
    proc = lth(2, str(config), "--output", str(tmp_path / "r.h5"), "--set", "model.width=4",
               "--set", "train.xla=true", timeout=300)   # XLA's convolutions in a group, forced
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cells = results.read_cells(str(tmp_path / "r.h5"))
    assert [c["name"] for c in cells] == ["m00_r0_none"]
    assert len(cells[0]["test_accuracy"]) == 1 and cells[0]["iteration"][-1] == 500 // 100
    assert np.isfinite(cells[0]["val_accuracy"]).all()           # 100 held-out examples
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert f.attrs["status"] == "complete" and len(f["dense/test_accuracy"]) == 1


def test_search_trains_mobilenet_v2_on_a_converted_tree_streamed(tree, tmp_path):
    """The imagenet64 path end to end: tree -> 64x64 shards -> streamed by each rank."""
    proc = mpiexec(2, ["-m", "data_prep", "imagenet", str(tree), str(tmp_path / "in64.h5"),
                       "--shard-size", "40"])
    assert proc.returncode == 0, proc.stderr
    config = tmp_path / "cfg.yaml"
    config.write_text(f"""name: converted-tree
model: {{name: mobilenet_v2, alpha: 0.35, stem_stride: 1}}
dataset: {{name: imagenet64, path: {tmp_path / 'in64.h5'}, augment: true, in_memory: false,
           validation_examples: 40}}
train: {{epochs: 1, batch_size: 60, optimizer: sgd, learning_rate: 0.05}}
rewind: {{unit: epoch, points: [0]}}
prune: {{sparsities: [0.5]}}
controls: []
parallel: {{group_size: 2}}
""")
    proc = lth(2, str(config), "--output", str(tmp_path / "r.h5"), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cells = results.read_cells(str(tmp_path / "r.h5"))
    assert [c["name"] for c in cells] == ["m00_r0_none"] and cells[0]["iteration"][-1] == (244 - 40) // 60
    assert cells[0]["selected_on"] == "validation"               # streamed from the file's tail
