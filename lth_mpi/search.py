"""One lottery-ticket search, phase by phase: validate, dense, masks, broadcast, grid, gather.

The flow reads top to bottom in run(); MPI stays behind lth_mpi.parallel, TensorFlow behind
lth_mpi.training, HDF5 behind lth_mpi.results.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from . import config as config_mod
from . import data, models, parallel, plan, pruning, results, seeds, training


class Timeline:
    """(phase, cell, t_start, t_end) rows of this rank, for the timings table."""

    def __init__(self):
        self.rows = []

    def add(self, phase: str, t_start: float, cell: int = -1):
        self.rows.append((results.PHASES.index(phase), cell, t_start, time.time()))

    def table(self, rank: int) -> np.ndarray:
        return np.array([(rank, *r) for r in self.rows], np.float64).reshape(-1, 5)


INTERRUPTED = 4    # exit status of a job stopped by SIGTERM or SIGINT (after a clean stop)


def fail(message: str, code: int = 2, kind: str = "error"):
    """Every rank prints the same one-line error and exits non-zero (no rank left waiting).
    Called by all ranks once they agree; each writes before any exits, because under
    `python -m mpi4py` the first non-zero exit aborts the job and would cut the others off."""
    sys.stderr.write(f"lth-mpi: {kind}: {message}\n")   # one write: lines never interleave
    sys.stderr.flush()
    parallel.wait_quietly()
    sys.exit(code)


def close_failed(writer, message: str) -> None:
    """Mark the file failed and close it, if the file system still lets us; cells written
    before stay readable either way (each was flushed, and marked complete, when written)."""
    try:
        writer.fail(message)
    except Exception:        # noqa: BLE001  (a full disk may refuse even this)
        pass


def validate(cfg: dict) -> None:
    """Checks that need the registries or the file system; raise ValueError in one line."""
    data.check(cfg["dataset"])
    models.check(cfg["model"]["name"], {k: v for k, v in cfg["model"].items() if k != "name"})
    parent = os.path.dirname(os.path.abspath(cfg["output"]))
    if not os.path.isdir(parent):
        raise ValueError(f"output: directory does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"output: directory is not writable: {parent}")


def check_model(cfg: dict, model, prunable_idx, steps_per_epoch: int) -> None:
    names = models.layer_names(model)
    for name in cfg["prune"]["exclude"]:
        if name not in names:
            raise ValueError(f"prune.exclude: no layer named {name!r} (layers: {', '.join(names)})")
    if not prunable_idx:
        raise ValueError("prune.exclude: every prunable layer is excluded")
    if cfg["rewind"]["unit"] == "iteration":
        last = cfg["train"]["epochs"] * steps_per_epoch
        for p in cfg["rewind"]["points"]:
            if p > last:
                raise ValueError(f"rewind.points: iteration {p} is beyond the {last} dense iterations")
            if p == last and config_mod.remaining(cfg):
                raise ValueError(f"rewind.points: iteration {p} is the end of training, which "
                                 "leaves nothing to retrain under rewind.retrain: remaining")


class Diverged(ValueError):
    """The dense network's loss or weights became non-finite."""


def dense_phase(cfg, dense_data, group=None, stop=None):
    """Train the dense net, snapshotting weights at every rewind point; returns (history,
    checkpoints as (N, n_weights) float32, packed masks, realized sparsities).

    On rank 0 alone by default; with parallel.dense=data_parallel every rank runs this with
    the world as its group, starting from rank 0's initial weights.
    """
    model, prunable_idx = training.build_for(cfg, dense_data, cfg["seed"])
    trainer = training.Trainer(model, dense_data, cfg["train"], [], group, stop)   # no masks
    if group is not None:
        shapes = [w.shape for w in trainer.weights()]
        leader = group.broadcast(training.flatten(trainer.weights()))
        trainer.load(training.unflatten(leader, shapes))
    points, unit = cfg["rewind"]["points"], cfg["rewind"]["unit"]
    snaps = {}

    def snapshot(step):
        if step in points and step not in snaps:
            snaps[step] = training.flatten(trainer.weights())
    snapshot(0)   # epoch 0 and iteration 0 are both the initialization
    on_epoch = (lambda e: snapshot(e)) if unit == "epoch" else None
    on_step = snapshot if unit == "iteration" else None
    history = trainer.fit(cfg["train"]["epochs"], seeds.derive(cfg["seed"], seeds.DENSE),
                          on_epoch=on_epoch, on_step=on_step)
    if history["diverged"]:   # a NaN kernel would sort as the largest magnitude: no masks
        raise Diverged(f"train: the dense network diverged in epoch {history['diverged']} "
                       f"(non-finite loss or weights) at learning_rate "
                       f"{cfg['train']['learning_rate']:g}; no masks were computed")
    kernels = training.prunable_weights(model, prunable_idx, trainer.weights())
    packed, realized = [], []
    for s in cfg["prune"]["sparsities"]:
        masks = pruning.magnitude_masks(kernels, s, cfg["prune"]["scope"])
        realized.append(pruning.realized_sparsity(masks))
        packed.append(pruning.pack_masks(list(masks.values())))
    return history, np.stack([snaps[p] for p in points]), np.stack(packed), np.array(realized)


def run(cfg: dict, resume: bool = False, dry_run: bool = False) -> int:
    t_setup = time.time()
    timeline = Timeline()
    size = parallel.world_size()

    # --- 1. validate on every rank; the writer alone checks the output file -----------------
    error = None
    try:
        validate(cfg)
        if parallel.world_rank() == 0 and not resume and not dry_run and os.path.exists(cfg["output"]):
            raise ValueError(f"output: {cfg['output']} exists; pass --resume to continue it "
                             "or choose another --output")
    except ValueError as exc:
        error = str(exc)
    error = parallel.agree(error)
    if error:
        fail(error)

    sp, points = cfg["prune"]["sparsities"], cfg["rewind"]["points"]
    grid = plan.cells(len(sp), len(points), cfg["controls"])
    layout = parallel.split(cfg["parallel"]["group_size"])
    parallel.configure_tensorflow(layout, cfg["parallel"]["threads"])
    # this rank's data and model: checks that need them come before any file is created
    error = None
    try:
        group_data = data.load(cfg["dataset"], (layout.group_rank, layout.group_size))
        model, prunable_idx = training.build_for(cfg, group_data, cfg["seed"])
        if group_data.train_total < cfg["train"]["batch_size"]:
            raise ValueError(f"train.batch_size: {cfg['train']['batch_size']} is larger than the "
                             f"{group_data.train_total} training examples")
        check_model(cfg, model, prunable_idx, group_data.train_total // cfg["train"]["batch_size"])
    except ValueError as exc:
        error = str(exc)
    error = parallel.agree(error)
    if error:
        fail(error)

    if dry_run:
        done = set()
        if layout.is_writer and resume and os.path.exists(cfg["output"]):
            done = set(r["name"] for r in results.read_cells(cfg["output"]))
        if layout.is_writer:
            print(plan.describe(cfg, size, done), flush=True)
        return 0

    # --- 2. writer opens the file (new, or resumed); everyone learns what is done -----------
    writer, error, state = None, None, None
    prov = parallel.provenance(layout)
    if layout.is_writer:
        try:
            writer = results.Writer(cfg["output"], cfg, prov, len(grid), resume,
                                    data.fingerprint(cfg["dataset"]))
            state = (sorted(writer.done_cells()), writer.has_dense())
        except (ValueError, OSError) as exc:
            error = f"output: {exc}"
    error = parallel.agree(error)
    if error:
        fail(error)
    done, have_dense = parallel.bcast_object(state)
    done = set(done)

    timeline.add("setup", t_setup)
    stopper = parallel.Stopper()   # from here on SIGTERM / SIGINT stop the job cleanly

    # --- 3. dense phase on rank 0; the others wait without spinning -------------------------

    shapes = [tuple(w.shape) for w in model.weights]
    n_weights = sum(int(np.prod(s)) for s in shapes)
    packed_len = (sum(int(np.prod(shapes[i])) for i in prunable_idx) + 7) // 8
    ckpts = packed = realized = error = None
    data_parallel = cfg["parallel"]["dense"] == "data_parallel" and not have_dense
    t = time.time()
    if layout.is_writer and have_dense:
        _, _, ck, mk = results.read_dense(writer.f)
        ckpts = np.stack([training.flatten(c) for c in ck])
        packed = np.stack([pruning.pack_masks(m) for m in mk])
        realized = writer.f["masks"].attrs["sparsity_realized"]
        print(f"lth-mpi: resuming {cfg['output']}: dense phase and {len(done)} of "
              f"{len(grid)} cells already done", flush=True)
    elif layout.is_writer or data_parallel:
        try:
            if data_parallel:   # every rank trains on its shard of the whole training set
                history, ckpts, packed, realized = dense_phase(
                    cfg, data.load(cfg["dataset"], (layout.rank, layout.size)),
                    parallel.world_reducers(layout), stop=stopper.requested)
            else:
                history, ckpts, packed, realized = dense_phase(cfg, data.load(cfg["dataset"]),
                                                               stop=stopper.requested)
        except Diverged as exc:
            error = str(exc)
        except training.Interrupted:
            error = "interrupted"
        if layout.is_writer and not error:
            try:
                writer.write_dense(history, [w.path for w in model.weights], shapes,
                                   prunable_idx, points, cfg["rewind"]["unit"], ckpts, packed,
                                   sp, realized, cfg["prune"]["scope"])
                print(f"lth-mpi: dense phase done in {time.time() - t:.1f}s, test accuracy "
                      f"{history['test_accuracy'][-1]:.4f}", flush=True)
            except OSError as exc:    # e.g. a full disk: shared below, every rank stops
                error = f"output: cannot write the dense phase to {cfg['output']} ({exc})"
    if layout.is_writer or data_parallel:
        timeline.add("dense", t)
    t = time.time()
    parallel.wait_quietly(tick=stopper.requested)
    timeline.add("wait", t)
    error = parallel.agree(error)
    if error == "interrupted":
        stopper.requested()
        parallel.wait_quietly()
        stopper.finish()
        message = (f"{stopper.describe()} during the dense phase; nothing was "
                   f"kept, run again (or --resume) to start over")
        if layout.is_writer:
            writer.close(complete=False)
        fail(message, INTERRUPTED, "stopped")
    if error:
        if layout.is_writer:
            close_failed(writer, error)
        fail(error)

    # --- 4. broadcast rewind checkpoints and masks (bit-exact buffers) ----------------------
    t = time.time()
    ckpts = parallel.bcast_array(ckpts, (len(points), n_weights), np.float32)
    packed = parallel.bcast_array(packed, (len(sp), packed_len), np.uint8)
    realized = parallel.bcast_array(realized, (len(sp),), np.float64)
    timeline.add("broadcast", t)

    # --- 5. groups retrain their cells, data-parallel through Horovod ----------------------
    group = parallel.init_horovod(layout)
    trainer = training.Trainer(model, group_data, cfg["train"], prunable_idx, group,
                               stop=stopper.requested)
    mine = plan.assign(grid, layout.n_groups, cfg["parallel"]["assign"])[layout.group]
    todo = [c for c in mine if c.name not in done]
    t_grid = time.time()
    # cells differ in length (a late rewind trains less): the ETA counts iterations, not cells
    spe = trainer.steps_per_epoch
    length = {c.id: cfg["train"]["epochs"] * spe - plan.start_iteration(c, cfg, spe) for c in grid}
    progress = {"done": 0, "work": 0,
                "total": sum(length[c.id] for c in grid if c.name not in done)}

    def on_result(msg):
        cell = grid[int(msg[0])]
        n, diverged = int(msg[4]), int(msg[5])
        hist = dict(zip(results.CURVES, msg[6:].reshape(len(results.CURVES), n)))
        point = points[cell.rewind] if cell.rewind >= 0 else None
        try:
            writer.write_cell(cell, sp[cell.mask], realized[cell.mask], point, int(msg[1]),
                              hist, msg[2], msg[3], diverged)
        except OSError as exc:   # a full disk mid-grid: the others are training, so abort
            kept = progress["done"] + len(done)
            message = (f"output: cannot write cell {cell.name} to {cfg['output']} ({exc}); "
                       f"the file keeps the {kept} cells finished before it, --resume "
                       "continues once there is room")
            close_failed(writer, message)
            sys.stderr.write(f"lth-mpi: error: {message}\n")
            sys.stderr.flush()
            parallel.abort(3)
        progress["done"] += 1
        progress["work"] += length[cell.id]
        elapsed = time.time() - t_grid
        eta = elapsed / progress["work"] * (progress["total"] - progress["work"])
        where = f"{cfg['rewind']['unit']} {point}" if point is not None else "fresh init"
        outcome = (f"DIVERGED in epoch {diverged}" if diverged
                   else f"acc {hist['test_accuracy'][-1]:.4f}")
        print(f"[{progress['done'] + len(done):>4}/{len(grid)}] {cell.name:<24} sparsity "
              f"{sp[cell.mask]:.3f} {where:<12} {outcome}  "
              f"cell {msg[3] - msg[2]:6.1f}s  elapsed {elapsed:7.1f}s  ETA {eta:7.1f}s",
              flush=True)

    channel = parallel.ResultChannel(layout, on_result if layout.is_writer else None)
    drain = (lambda epoch: channel.drain()) if layout.is_writer else None
    interrupted = False
    for cell in todo:
        t = time.time()
        if cell.control == "random_reinit":
            fresh, _ = training.build_for(
                cfg, group_data, seeds.derive(cfg["seed"], seeds.REINIT, cell.mask))
            start = [np.asarray(w) for w in fresh.get_weights()]
        else:
            start = training.unflatten(ckpts[cell.rewind], shapes)
        # the group starts from the leader's exact bits, as Horovod's examples do
        if group is not None:
            start = training.unflatten(group.broadcast(training.flatten(start)), shapes)
        masks = pruning.unpack_masks(packed[cell.mask], [shapes[i] for i in prunable_idx])
        if cell.control == "random_mask":   # the same random mask for every rewind point
            masks = pruning.random_like(masks, seeds.derive(cfg["seed"], seeds.RANDOM_MASK,
                                                             cell.mask))
        trainer.load(start, masks)
        # keyed by the cell, not by the rank: the same numbers whoever trains it
        try:
            hist = trainer.fit(cfg["train"]["epochs"],
                               seeds.derive(cfg["seed"], seeds.CELL, cell.id), on_epoch=drain,
                               start=plan.start_iteration(cell, cfg, trainer.steps_per_epoch))
        except training.Interrupted:   # this cell is dropped: --resume trains it again
            interrupted = True
            timeline.add("cell", t, cell.id)
            break
        timeline.add("cell", t, cell.id)
        if layout.is_leader:
            curves = np.concatenate([np.asarray(hist[k], np.float64) for k in results.CURVES])
            channel.send(np.concatenate([[cell.id, layout.group, t, time.time(),
                                          len(hist["epoch"]), hist["diverged"]], curves]))

    # --- 6. gather: remaining cells to the writer, then every rank's timings ---------------
    t = time.time()
    if layout.is_leader and not layout.is_writer:
        channel.end()
    channel.finish([g * layout.group_size for g in range(1, layout.n_groups)])
    timeline.add("drain", t)
    t = time.time()
    parallel.wait_quietly()
    timeline.add("gather", t)
    stopper.finish()
    # did any rank stop early? (a stop request that came after its last cell changes nothing)
    interrupted = parallel.agree("stopped" if interrupted else None) is not None
    table = parallel.gather_rows(timeline.table(layout.rank))
    if layout.is_writer:
        writer.write_timings(table, t_setup)
        kept = len(writer.done_cells())
        writer.close(complete=not interrupted)
    if interrupted:
        kept = parallel.bcast_object(kept if layout.is_writer else None)
        fail(f"{stopper.describe()}: {kept} of {len(grid)} cells are in "
             f"{cfg['output']}; --resume continues", INTERRUPTED, "stopped")
    if layout.is_writer:
        print(results.accuracy_table(cfg["output"]), flush=True)
        print(f"lth-mpi: wrote {cfg['output']}", flush=True)
    return 0
