"""The real pipeline under mpiexec on real Fashion-MNIST: file contents, resume, refusals."""
import json
import os

import h5py
import numpy as np
import pytest

from lth_mpi import data, plan, pruning, results
from mpi_helpers import (ENV, HOROVOD, ROOT, assert_same_cells, launch, lth, mpiexec,
                         needs_horovod, pool)

CONFIG = os.path.join(ROOT, "tests", "configs", "tiny_fashion.yaml")
needs_data = pytest.mark.skipif(not os.path.isdir(data.FASHION_MNIST_DIR),
                                reason="dataset-fashion-mnist not installed (run/install.sh)")


def check_complete(path, n_ranks, group_size):
    grid = plan.cells(2, 2, ["random_reinit"])
    cells = results.read_cells(path)
    assert [c["name"] for c in cells] == [c.name for c in grid]      # every cell, once
    for c in cells:
        assert c["final_test_accuracy"] > 0.5, c                     # chance is 0.1
        # rewind.retrain: remaining: rewound to epoch 1, a ticket trains epoch 2 only
        epochs = [2] if c["rewind_point"] == 1 and c["control"] == "none" else [1, 2]
        assert list(c["epoch"]) == epochs and c["iteration"][-1] == 2 * (4000 // 100), c
        assert abs(c["sparsity_realized"] - c["sparsity"]) < 1e-3
        # validation: 5000 held-out training examples choose the early stop; test is reported
        assert c["selected_on"] == "validation" and np.all(np.isfinite(c["val_accuracy"]))
        stop = int(np.argmax(c["val_accuracy"]))
        assert c["best_iteration"] == c["iteration"][stop]
        assert c["best_test_accuracy"] == c["test_accuracy"][stop]
    with h5py.File(path, "r") as f:
        assert f.attrs["status"] == "complete" and f.attrs["world_size"] == n_ranks
        assert len(json.loads(f.attrs["ranks"])) == n_ranks
        assert "MPICH" in f.attrs["mpi_library"] or "Open MPI" in f.attrs["mpi_library"]
        assert json.loads(f.attrs["horovod_built"]) == HOROVOD[1]      # this build's operations
        assert f["dense/test_accuracy"][-1] > 0.7
        assert f["checkpoints"].shape == (2, 266610)
        t = f["timings"][sorted(f["timings"])[-1]][()]                 # the latest job's
        resumed = "resumed" in f.attrs
    assert sorted(set(t[:, 0].astype(int))) == list(range(n_ranks))  # every rank reported
    cell_phase = results.PHASES.index("cell")
    for cell in grid:                  # each cell ran on exactly one whole group
        ranks = sorted(t[(t[:, 1] == cell_phase) & (t[:, 2] == cell.id), 0].astype(int))
        if not ranks and resumed:
            continue                   # finished before the resume: timed in the lost job
        assert len(ranks) == group_size and ranks[0] % group_size == 0
        assert ranks == list(range(ranks[0], ranks[0] + group_size))
    return cells


@needs_data
@pytest.mark.parametrize("n", [2, 4])
def test_search_on_fashion_mnist(tiny_run, n):
    out, proc = tiny_run(n)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("acc ") == 6 and "[   6/6]" in proc.stdout and "ETA" in proc.stdout
    assert "dense test accuracy" in proc.stdout
    check_complete(out, n, 2)
    with h5py.File(out, "r") as f:   # parallel.allreduce: auto, on CPUs: mpi4py, not Horovod
        assert [r["allreduce"] for r in json.loads(f.attrs["ranks"])] == ["mpi"] * n


@needs_data
def test_refuse_overwrite_then_resume(tmp_path, tiny_run):
    import shutil
    first, proc = tiny_run(2, "--set", "parallel.group_size=1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = str(tmp_path / "r.h5")
    shutil.copy(first, out)
    before = {c["name"]: c["t_start"] for c in results.read_cells(out)}
    # an existing file is never overwritten
    proc = lth(2, CONFIG, "--output", out, "--set", "parallel.group_size=1")
    assert proc.returncode != 0
    assert proc.stderr.count("lth-mpi: error: output:") == 2 and "--resume" in proc.stderr
    # as if killed after three cells: drop the others, then resume
    with h5py.File(out, "a") as f:
        for name in ["m01_r0_none", "m01_r1_none", "m01_init_random_reinit"]:
            del f["cells"][name]
        f.attrs["status"] = "running"
    proc = lth(2, CONFIG, "--output", out, "--set", "parallel.group_size=1", "--resume")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 of 6 cells already done" in proc.stdout and "dense phase done" not in proc.stdout
    assert proc.stdout.count("acc ") == 3
    cells = check_complete(out, 2, 1)
    for c in cells:
        if c["name"] in ("m00_r0_none", "m00_r1_none", "m00_init_random_reinit"):
            assert c["t_start"] == before[c["name"]]          # finished cells untouched
    with h5py.File(out, "r") as f:
        assert f.attrs["resumed"] == 1 and "timings/run1" in f
    # resuming with another config is refused
    proc = lth(2, CONFIG, "--output", out, "--set", "parallel.group_size=1", "--set", "seed=5",
               "--resume")
    assert proc.returncode != 0 and "different config" in proc.stderr


BAD_INPUTS = [
    (["--set", "prune.sparsities=[0.5, 1.5]"], "prune.sparsities: 1.5 is outside (0, 1)"),
    (["--set", "parallel.group_size=3"], "parallel.group_size: 3 does not divide the 2 ranks"),
    (["--set", "model.name=vgg"], "model.name: unknown model 'vgg'"),
    (["--set", "dataset.path=/nonexistent"], "dataset.path: data directory not found"),
    (["--set", "rewind.points=[0, 9]"], "rewind.points: epoch 9 is beyond"),
    (["--set", "prune.exclude=[fc9]"], "prune.exclude: no layer named 'fc9'"),
    (["--set", "rewind.unit=iteration", "--set", "rewind.points=[0, 100000]"],
     "rewind.points: iteration 100000 is beyond the 80 dense iterations"),
    (["--set", "dataset.train_examples=50"], "train.batch_size: 100 is larger than the 50"),
    (["--set", "train.learning_rate=.nan"], "train.learning_rate: must be a finite number"),
    (["--set", "controls=[random_reinit, random_reinit]"], "controls: duplicate entries"),
    (["--set", "seed=-1"], "seed: must be in [0, 2^32)"),
    (["--set", "model.name=resnet", "--set", "model.depth=21"],
     "model.depth: ResNet depth must be 6n+2 and >= 8, got 21"),
    (["--set", "model.name=resnet20", "--set", "model.width=0"],
     "model: resnet20 cannot be built with width=0 (Invalid value for argument `filters`"),
    (["--set", "dataset.validation_examples=60000"],
     "dataset.validation_examples: 60000 leaves no training examples"),
]
CORRUPT = [
    ("truncated", "train-images-idx3-ubyte.gz cannot be read (Compressed file ended"),
    ("garbage", "train-images-idx3-ubyte.gz cannot be read (Error -3 while decompressing"),
    ("label", "train-labels-idx1-ubyte.gz: label 12 is outside the 10 classes 0..9"),
]


def corrupt_copy(tmp_path, how):
    """Fashion-MNIST copied to tmp_path with one file damaged."""
    import gzip
    import shutil
    d = tmp_path / "fm"
    shutil.copytree(data.FASHION_MNIST_DIR, d)
    images, labels = d / "train-images-idx3-ubyte.gz", d / "train-labels-idx1-ubyte.gz"
    if how == "truncated":
        images.write_bytes(images.read_bytes()[:100_000])
    elif how == "garbage":
        images.write_bytes(images.read_bytes()[:30] + os.urandom(50_000))
    else:   # a label outside the 10 classes
        raw = bytearray(gzip.decompress(labels.read_bytes()))
        raw[8 + 123] = 12
        labels.write_bytes(gzip.compress(bytes(raw)))
    return d


@pytest.fixture(scope="module")
def refusals(tmp_path_factory):
    """Every bad input and corrupt dataset above, refused one after another in the suite's
    2-rank job (each case a whole `lth-mpi run` on every rank, in-process: mpi_helpers.Pool);
    by case, (output path, what each rank printed and its exit code)."""
    if not os.path.isdir(data.FASHION_MNIST_DIR):
        pytest.skip("dataset-fashion-mnist not installed")
    root = tmp_path_factory.mktemp("refusals")
    found = {}
    for key, args in [*((f"bad{i}", a) for i, (a, _) in enumerate(BAD_INPUTS)),
                      *((how, None) for how, _ in CORRUPT)]:
        (root / key).mkdir()
        if args is None:
            args = ["--set", f"dataset.path={corrupt_copy(root / key, key)}"]
        output = str(root / key / "r.h5")
        proc = pool().run(["run", CONFIG, "--output", output, *args], timeout=120)
        assert proc.ranks, proc.stderr          # None: the case aborted the job
        found[key] = (output, proc.ranks)
    return found


def assert_refused(output, ranks, *messages):
    """Every rank exited 2 with one line naming the problem; no traceback, no output file."""
    assert len(ranks) == 2
    for r in ranks:
        lines = [l for l in r["stderr"].splitlines() if l.startswith("lth-mpi: error:")]
        assert r["code"] == 2 and len(lines) == 1, r
        assert all(m in lines[0] for m in messages), r
        assert "Traceback" not in r["stderr"], r
    assert not os.path.exists(output)                               # refused before any output


@pytest.mark.parametrize("i", range(len(BAD_INPUTS)), ids=[m for _, m in BAD_INPUTS])
def test_bad_input_fails_every_rank_without_hanging(refusals, i):
    assert_refused(*refusals[f"bad{i}"], BAD_INPUTS[i][1])


@pytest.mark.parametrize("how,message", CORRUPT)
def test_a_corrupt_dataset_fails_every_rank_in_one_line(refusals, how, message):
    assert_refused(*refusals[how], "dataset.path: ", message)


@needs_data
def test_a_refused_job_exits_non_zero_from_every_rank(tmp_path):
    """The same refusal as a real launch: every process prints its line and the job ends."""
    proc = lth(2, CONFIG, "--output", str(tmp_path / "r.h5"), *BAD_INPUTS[5][0], timeout=120,
               pooled=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("lth-mpi: error:")]
    assert len(lines) == 2 and BAD_INPUTS[5][1] in lines[0], proc.stderr     # one line per rank
    assert "Traceback" not in proc.stderr and not os.path.exists(tmp_path / "r.h5")


def test_a_config_refusal_comes_before_the_tensorflow_import(tmp_path):
    """A typo in the config fails in a second, not after every rank has imported TensorFlow
    (seconds per rank, paid again for each resubmitted batch job)."""
    import subprocess
    import sys
    code = ("import sys\nfrom lth_mpi import cli\ntry:\n    cli.main(sys.argv[1:])\n"
            "except SystemExit as exc:\n    print('exit', exc.code)\n"
            "print('imported', sorted(m for m in ('tensorflow', 'keras', 'horovod') "
            "if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code, "run", CONFIG, "--output",
                           str(tmp_path / "r.h5"), *BAD_INPUTS[0][0]],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert BAD_INPUTS[0][1] in proc.stderr, proc.stderr
    assert proc.stdout.splitlines() == ["exit 2", "imported []"], proc.stdout + proc.stderr


@needs_data
def test_output_paths_are_strings_and_an_unwritable_directory_is_refused(tmp_path):
    import subprocess
    proc = lth(2, CONFIG, "--output", str(tmp_path / "run #1.h5"), "--dry-run", timeout=120)
    assert proc.returncode == 0, proc.stderr        # '#' would start a YAML comment
    assert "run #1.h5" in proc.stdout
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)]).returncode:
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    try:
        proc = lth(2, CONFIG, "--output", str(ro / "r.h5"), timeout=120)
    finally:
        subprocess.run(["umount", str(ro)])
    lines = [l for l in proc.stderr.splitlines() if l.startswith("lth-mpi: error:")]
    assert proc.returncode != 0 and len(lines) == 2, proc.stderr
    assert f"output: directory is not writable: {ro}" in lines[0]


def test_dry_run_and_console_script(tmp_path):
    out = tmp_path / "r.h5"
    proc = mpiexec(4, ["-m", "lth_mpi", "run", CONFIG, "--dry-run", "--set", "dataset.name=synthetic",
                       "--set", "dataset.train_examples=400", "--set", "dataset.test_examples=100",
                       "--output", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert "2 masks x 2 rewind points" in proc.stdout and "= 6 cells" in proc.stdout
    assert "2 groups take 6 tasks from a shared queue as they free up, longest first: " \
        "6 trainings" in proc.stdout
    assert "bill: 7 trainings; at P = 4 (2 groups of 2)" in proc.stdout
    assert not out.exists() and (tmp_path / "r.h5.bill.json").exists()   # the bill, no results


def test_synthetic_run_at_one_rank_with_iteration_rewinds(tmp_path):
    """P = 1: one group of one rank; rewind points in iterations; the lth-mpi script."""
    import subprocess
    import shutil
    out = str(tmp_path / "r.h5")
    proc = subprocess.run(
        launch(1, shutil.which("lth-mpi"), "run", CONFIG,
         "--output", out, "--set", "parallel.group_size=1", "--set", "dataset.name=synthetic",
         "--set", "rewind.unit=iteration", "--set", "rewind.points=[0, 7, 30]",
         "--set", "dataset.train_examples=1000", "--set", "dataset.test_examples=200",
         "--set", "train.batch_size=50", "--set", "controls=[]"),
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cells = results.read_cells(out)
    assert len(cells) == 6 and {c["rewind_point"] for c in cells} == {0, 7, 30}
    by_point = {c["rewind_point"]: c for c in cells if c["mask"] == 0}
    # 20 steps per epoch, 40 in all: rewound to k, a ticket trains iterations k+1..40, a
    # start inside an epoch training the rest of it
    assert list(by_point[7]["iteration"]) == [20, 40] and list(by_point[30]["iteration"]) == [40]
    assert min(c["final_test_accuracy"] for c in cells) > 0.5
    with h5py.File(out, "r") as f:
        assert list(f["checkpoints"].attrs["points"]) == [0, 7, 30]
        # iteration 0 is the initialization: rewinding to it differs from iteration 7
        assert not np.array_equal(f["checkpoints"][0], f["checkpoints"][1])


@needs_data
def test_killed_run_keeps_finished_cells_and_resumes(tmp_path, tiny_run):
    """SIGKILL the whole job mid-grid: the file keeps every finished cell; --resume ends it."""
    import signal
    import subprocess
    import sys
    out = str(tmp_path / "r.h5")
    cmd = launch(2, sys.executable, "-m", "mpi4py", "-m", "lth_mpi",
                 "run", CONFIG, "--output", out, "--set", "train.epochs=2")
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           cwd=ROOT, env=ENV)
    try:
        for line in job.stdout:
            if line.startswith("[   2/6]"):   # cell 2 is written and flushed
                break
    finally:   # as a batch system would: every process of the job at once
        import psutil
        procs = [psutil.Process(job.pid)] + psutil.Process(job.pid).children(recursive=True)
        for p in procs:
            p.send_signal(signal.SIGKILL)
        psutil.wait_procs(procs, timeout=60)
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "running"          # it never closed
    cells = results.read_cells(out)
    assert 2 <= len(cells) < 6
    kept = {c["name"]: c["t_start"] for c in cells}
    proc = lth(2, CONFIG, "--output", out, "--resume")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("acc ") == 6 - len(kept)
    for c in check_complete(out, 2, 2):
        if c["name"] in kept:
            assert c["t_start"] == kept[c["name"]]
    plain = {c["name"]: c for c in results.read_cells(tiny_run(2)[0])}
    assert_same_cells(out, plain)                        # as if never stopped


@needs_data
@needs_horovod
def test_data_parallel_dense_phase(tmp_path, tiny_run):
    """parallel.dense=data_parallel: every rank shares the dense training (MPI Allreduce)
    and trains the network rank 0 alone trains, up to float summation order; then the group
    of 2 averages through Horovod (as on GPUs) instead of mpi4py."""
    out = str(tmp_path / "r.h5")
    proc = lth(2, CONFIG, "--output", out, "--set", "parallel.dense=data_parallel",
               "--set", "parallel.allreduce=horovod")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_complete(out, 2, 2)
    with h5py.File(out, "r") as f:
        t = f["timings/run0"][()]
        ranks = json.loads(f.attrs["ranks"])
    assert ranks[1]["threads"] == 1                    # 2 ranks share 2 cores
    assert [r["allreduce"] for r in ranks] == ["horovod"] * 2
    dense = results.PHASES.index("dense")
    assert sorted(t[t[:, 1] == dense, 0].astype(int)) == [0, 1]
    # the same dense network as rank 0's alone: same batches, gradients averaged over the
    # halves instead of summed over the whole (float order only)
    with h5py.File(tiny_run(2)[0], "r") as f, h5py.File(out, "r") as g:
        np.testing.assert_allclose(g["dense/train_loss"][()], f["dense/train_loss"][()],
                                   rtol=2e-3)
        np.testing.assert_allclose(g["dense/test_accuracy"][()], f["dense/test_accuracy"][()],
                                   atol=0.005)
        np.testing.assert_allclose(g["checkpoints"][()], f["checkpoints"][()], atol=2e-3)


def test_a_cell_does_not_depend_on_who_trains_it(tmp_path):
    """Groups of one rank, one thread each: at -n 1 every cell runs on rank 0, at -n 2 half of
    them on rank 1 (static round robin), at -n 3 whichever group frees up first takes the next
    cell from the shared queue; the curves are bit-identical, since every random stream is
    keyed by the cell (and the group rank), never by the world rank."""
    small = ["--set", "parallel.group_size=1", "--set", "parallel.threads=1",
             "--set", "dataset.name=synthetic",
             "--set", "dataset.train_examples=600", "--set", "dataset.test_examples=200",
             "--set", "train.batch_size=50", "--set", "train.epochs=2"]
    runs = {}
    for n, assign in ((1, "cells"), (2, "cells"), (3, "dynamic")):
        out = str(tmp_path / f"r{n}.h5")
        proc = lth(n, CONFIG, "--output", out, *small, "--set", f"parallel.assign={assign}",
                   timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        runs[n] = {c["name"]: c for c in results.read_cells(out)}
    assert runs[1].keys() == runs[2].keys() == runs[3].keys() and len(runs[1]) == 6
    assert {c["group"] for c in runs[2].values()} == {0, 1}        # both ranks trained cells
    assert len({c["group"] for c in runs[3].values()}) >= 2        # the queue fed several
    for name, cell in runs[1].items():
        for curve in ("train_loss", "test_loss", "test_accuracy"):
            assert np.array_equal(cell[curve], runs[2][name][curve]), (name, curve)
            assert np.array_equal(cell[curve], runs[3][name][curve]), (name, curve)


@needs_data
def test_resume_is_decided_by_what_changes_results(tmp_path, tiny_run):
    """Threads, XLA, the assignment of cells to groups and a moved dataset do not block
    --resume (float summation order or who trains a cell, not the results); other data or
    another seed do."""
    import shutil
    first, proc = tiny_run(2)              # written from the installed dataset's directory
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out, moved = str(tmp_path / "r.h5"), tmp_path / "b"
    shutil.copy(first, out)
    shutil.copytree(data.FASHION_MNIST_DIR, moved)
    proc = lth(2, CONFIG, "--output", out, "--resume", "--set", f"dataset.path={moved}",
               "--set", "parallel.threads=1", "--set", "train.xla=false",
               "--set", "parallel.assign=cells")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "6 of 6 cells already done" in proc.stdout
    labels = moved / "train-labels-idx1-ubyte.gz"
    import gzip
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[8 + 7] = (raw[8 + 7] + 1) % 10                  # one label changed, still valid
    labels.write_bytes(gzip.compress(bytes(raw)))
    before = os.path.getmtime(out)
    proc = lth(2, CONFIG, "--output", out, "--resume", "--set", f"dataset.path={moved}")
    assert proc.returncode != 0 and proc.stderr.count("was written with other data") == 2
    proc = lth(2, CONFIG, "--output", out, "--resume", "--set", "seed=3")
    assert proc.returncode != 0 and "(seed differ)" in proc.stderr
    assert os.path.getmtime(out) == before                 # refusals leave the file alone


@needs_data
def test_random_mask_control_through_the_real_pipeline(tmp_path):
    """controls: [random_mask]: per (mask, rewind), the ticket's per-layer counts at random
    positions, trained from the same rewound weights; the report shows them per rewind."""
    import subprocess
    import sys
    out = str(tmp_path / "r.h5")
    proc = lth(2, CONFIG, "--output", out, "--set", "controls=[random_mask]",
               "--set", "parallel.group_size=1", "--set", "results.keep_weights=all")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cells = {c["name"]: c for c in results.read_cells(out)}
    assert len(cells) == 8
    with h5py.File(out, "r") as f:
        shapes = [tuple(s) for s in json.loads(f["weights"].attrs["shapes"])]
        prunable = json.loads(f["weights"].attrs["prunable"])
        masks = f["masks"][()]
        trained = {n: results.read_weights(f, n) for n in cells}
    offsets = np.cumsum([0] + [int(np.prod(s)) for s in shapes])

    def kept(name):     # what the cell trained with, read off its trained weights
        flat = trained[name]
        return [flat[offsets[i]:offsets[i + 1]] != 0 for i in prunable]
    for m in range(2):
        ticket_mask = pruning.unpack_masks(masks[m], [shapes[i] for i in prunable])
        for r in range(2):
            ticket, rand = cells[f"m0{m}_r{r}_none"], cells[f"m0{m}_r{r}_random_mask"]
            assert rand["rewind"] == r and list(rand["epoch"]) == list(ticket["epoch"])
            assert rand["final_test_accuracy"] != ticket["final_test_accuracy"]
            # the ticket's count in every layer, at other places
            got = kept(rand["name"])
            assert [int(k.sum()) for k in got] == [int(t.sum()) for t in ticket_mask]
            assert all((k != t.ravel()).any() for k, t in zip(got, ticket_mask))
            assert [int(k.sum()) for k in kept(ticket["name"])] == \
                [int(t.sum()) for t in ticket_mask]
    assert "random_mask epoch 1" in results.accuracy_table(out)
    rep = subprocess.run([sys.executable, "-m", "analysis", "report", out, "--out",
                          str(tmp_path / "rep")], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert rep.returncode == 0, rep.stderr
    assert "| random_mask epoch 0 | random_mask epoch 1 |" in (tmp_path / "rep" / "summary.md").read_text()


@needs_data
def test_a_custom_model_through_the_real_pipeline(tmp_path):
    out = str(tmp_path / "r.h5")
    proc = lth(2, CONFIG, "--output", out, "--set", "model.name=custom",
               "--set", "model.builder=tests.custom_models:small_cnn", "--set", "model.filters=4",
               "--set", "controls=[]", "--set", "parallel.group_size=1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cells = results.read_cells(out)
    assert len(cells) == 4 and min(c["final_test_accuracy"] for c in cells) > 0.3   # chance: 0.1
    with h5py.File(out, "r") as f:
        names = json.loads(f["weights"].attrs["names"])
        assert [names[i] for i in json.loads(f["weights"].attrs["prunable"])] == \
            ["c1/kernel", "d1/kernel", "out/kernel"]
