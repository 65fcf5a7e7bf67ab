"""HDF5 schema round trip: what the writer puts in, the readers get back."""
import h5py
import numpy as np
import pytest

from lth_mpi import config, plan, pruning, results
from lth_mpi.comm import wire
from mpi_helpers import settings_for

CFG = config.load(raw={"model": {"name": "lenet_300_100"}, "prune": {"sparsities": [0.5, 0.9]},
                       "rewind": {"points": [0, 1]}, "train": {"epochs": 2},
                       "controls": ["random_reinit"], "parallel": {"group_size": 1}})


def history(acc):
    return {"epoch": np.array([1, 2]), "iteration": np.array([10, 20]),
            "train_loss": np.array([1.0, 0.5]), "test_loss": np.array([0.9, 0.6]),
            "test_accuracy": np.array([acc - 0.1, acc]), "val_loss": np.array([0.8, 0.7]),
            "val_accuracy": np.array([acc - 0.05, acc - 0.06]), "epoch_seconds": np.array([1.0, 1.1])}


def write(path, cells=None):
    grid = plan.cells(2, 2, ["random_reinit"])
    w = results.Writer(settings_for(CFG, path, [0.5, 0.9]), {"world_size": 1, "ranks": [{"rank": 0}]},
                       len(grid), False)
    shapes = [(4, 3), (3,), (3, 2), (2,)]
    prunable = [0, 2]
    r = np.random.default_rng(0)
    ckpts = np.stack([np.concatenate([r.standard_normal(np.prod(s)) for s in shapes]).astype(np.float32)
                      for _ in range(2)])
    kernels = {"a": r.standard_normal((4, 3)), "b": r.standard_normal((3, 2))}
    masks = [pruning.magnitude_masks(kernels, s) for s in (0.5, 0.9)]
    packed = np.stack([pruning.pack_masks(list(m.values())) for m in masks])
    w.write_dense(-1, history(0.8), ["a/kernel", "a/bias", "b/kernel", "b/bias"], shapes, prunable,
                  ckpts, packed, [pruning.realized_sparsity(m) for m in masks])
    for c in (grid if cells is None else [grid[i] for i in cells]):
        w.write_cell(c, [0.5, 0.9][c.mask], 0.5, 0 if c.rewind >= 0 else None,
                     wire.CellResult(c.id, 0, 100.0 + c.id, 101.5 + c.id,
                                        history(0.7 + 0.01 * c.id)))
    return w, ckpts, masks, shapes


def test_round_trip(tmp_path):
    path = tmp_path / "r.h5"
    w, ckpts, masks, shapes = write(path)
    w.write_timings(np.array([[0, 1, -1, 0.0, 2.0], [0, 4, 3, 2.0, 3.0]]), 0.0)
    w.close(complete=True)
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == results.FORMAT and f.attrs["status"] == "complete"
        assert config.yaml.safe_load(f.attrs["config"]) == {**CFG, "output": str(path)}
        got_shapes, prunable, got_ckpts, got_masks = results.read_dense(f)
        assert got_shapes == shapes and prunable == [0, 2]
        np.testing.assert_array_equal(np.concatenate([a.ravel() for a in got_ckpts[1]]), ckpts[1])
        for want, got in zip(masks, got_masks):
            for a, b in zip(want.values(), got):
                np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(f["masks"].attrs["sparsity_realized"],
                                   [pruning.realized_sparsity(m) for m in masks])
        assert f["timings/run0"].shape == (2, 5)
    cells = results.read_cells(str(path))
    assert [c["name"] for c in cells] == [c.name for c in plan.cells(2, 2, ["random_reinit"])]
    assert cells[3]["final_test_accuracy"] == pytest.approx(0.73)
    assert cells[3]["seconds"] == pytest.approx(1.5)
    # the early stop is chosen on validation (best at epoch 1), test is reported there
    assert cells[3]["selected_on"] == "validation" and cells[3]["best_iteration"] == 10
    assert cells[3]["best_test_accuracy"] == pytest.approx(0.63)
    assert cells[3]["best_val_accuracy"] == pytest.approx(0.68)
    np.testing.assert_array_equal(cells[0]["test_loss"], [0.9, 0.6])
    table = results.accuracy_table(str(path))
    assert "dense test accuracy: 0.8000" in table and "0.7300" in table


def test_a_cell_group_not_yet_openable_is_not_complete(tmp_path):
    """A reader of a running search can list a cell's name before h5py can open its group
    (items() then gives None): it is skipped like a half-written cell, not a crash."""
    path = tmp_path / "r.h5"
    w, *_ = write(path)
    w.close(complete=True)
    with h5py.File(path, "r") as f:
        assert not results.cell_complete(f, None)
        assert all(results.cell_complete(f, g) for g in f["cells"].values())


def test_never_overwrites_and_resume_checks_config(tmp_path):
    path = tmp_path / "r.h5"
    w, *_ = write(path, cells=[0, 1])
    w.f.close()   # as if killed: status stays "running"
    with pytest.raises(FileExistsError):
        results.Writer(settings_for(CFG, path, [0.5, 0.9]), {}, 6, resume=False)
    again = results.Writer(settings_for(CFG, path, [0.5, 0.9]), {}, 6, resume=True)
    assert again.done_cells() == {"m00_r0_none", "m00_r1_none"} and again.has_dense()
    again.close(complete=False)
    other = dict(CFG, seed=99)
    with pytest.raises(ValueError, match="different config"):
        results.Writer(settings_for(other, path, [0.5, 0.9]), {}, 6, resume=True)


def test_refuses_foreign_file(tmp_path):
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f["data"] = [1, 2]
    with pytest.raises(results.NotAResultsFile, match="not an lth-mpi results file"):
        results.read_cells(str(path))


def test_selection_uses_validation_else_says_test():
    h = history(0.8)
    assert results.select(h) == (0, "validation")
    h["val_accuracy"] = np.full(2, np.nan)           # no validation split
    assert results.select(h) == (1, "test")


def test_version_1_files_still_read(tmp_path):
    """A file written before validation curves: what the writer of version 1 wrote."""
    path = tmp_path / "v1.h5"
    w, *_ = write(path)
    w.close(complete=True)
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = 1
        for g in [f["dense"]] + list(f["cells"].values()):
            for k in results.NEW_IN_2:
                del g[k]
            for k in ("selected_on", "best_val_accuracy", "final_val_accuracy"):
                g.attrs.pop(k, None)
    cells = results.read_cells(str(path))
    assert cells[0]["selected_on"] == "test" and np.isnan(cells[0]["best_val_accuracy"])
    assert np.isnan(cells[0]["val_accuracy"]).all() and len(cells[0]["val_accuracy"]) == 2
    with pytest.raises(ValueError, match="has format version 1, this lth-mpi writes 3"):
        results.Writer(settings_for(CFG, path, [0.5, 0.9]), {}, 6, resume=True)
    with h5py.File(path, "r") as f:
        assert f.attrs["status"] == "complete"       # the refused resume left it alone


def test_config_hash_ignores_key_order_and_speed_settings():
    raw = {"model": {"name": "resnet", "width": 8, "depth": 20}, "prune": {"sparsities": [0.5]}}
    other = {"prune": {"sparsities": [0.5]}, "model": {"depth": 20, "name": "resnet", "width": 8}}
    a, b = config.load(raw=raw), config.load(raw=other)
    assert results.config_hash(a) == results.config_hash(b)
    c = config.load(raw=raw, overrides=["parallel.threads=3", "dataset.prefetch=0",
                                        "output=x.h5", "dataset.path=/elsewhere"])
    assert results.config_hash(c) == results.config_hash(a)
    assert results.config_hash(config.load(raw=raw, overrides=["model.width=16"])) != \
        results.config_hash(a)


def test_every_reader_refuses_a_later_format(tmp_path):
    """A file of a format this version does not know is refused in one line by the one
    reader that status, export and the analysis use, not misread."""
    path = tmp_path / "v4.h5"
    w, *_ = write(path)
    w.close(complete=True)
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = results.VERSION + 1
    for read in (results.read, results.read_cells, results.accuracy_table):
        with pytest.raises(results.NotAResultsFile, match="format version 4; this lth-mpi reads"):
            read(str(path))
