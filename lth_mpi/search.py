"""One lottery-ticket search, phase by phase: validate, dense, masks, broadcast, grid, gather.

The flow reads top to bottom in run(); MPI stays behind lth_mpi.comm, TensorFlow behind
lth_mpi.training, HDF5 behind lth_mpi.results.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from . import config as config_mod
from . import data, gradual, imp, models, plan, pruning, results, seeds, training
from .comm import reducers, stack, world
from .comm.channel import ResultChannel
from .comm.queue import WorkQueue
from .comm.stop import Stopper
from .comm.wire import CellResult
from .comm.world import fail


class Timeline:
    """(phase, cell, t_start, t_end) rows of this rank, for the timings table."""

    def __init__(self):
        self.rows = []

    def add(self, phase: str, t_start: float, cell: int = -1):
        self.rows.append((results.PHASES.index(phase), cell, t_start, time.time()))

    def table(self, rank: int) -> np.ndarray:
        return np.array([(rank, *r) for r in self.rows], np.float64).reshape(-1, 5)


INTERRUPTED = 4    # exit status of a job stopped by SIGTERM or SIGINT (after a clean stop)


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
    pruned = list(dict.fromkeys(models.layer_of(model, prunable_idx)))
    for name in cfg["prune"]["layer_rates"]:
        if name not in pruned:
            raise ValueError(f"prune.layer_rates: {name!r} is not a pruned layer "
                             f"(pruned: {', '.join(pruned)})")
    last = cfg["train"]["epochs"] * steps_per_epoch
    if config_mod.gradual(cfg) and cfg["prune"]["end"] > last:
        raise ValueError(f"prune.end: iteration {cfg['prune']['end']} is beyond the {last} "
                         "iterations of training, so the final sparsity would never be reached")
    if cfg["rewind"]["unit"] == "iteration":
        for p in cfg["rewind"]["points"]:
            if p > last:
                raise ValueError(f"rewind.points: iteration {p} is beyond the {last} dense iterations")
            if p == last and config_mod.remaining(cfg):
                raise ValueError(f"rewind.points: iteration {p} is the end of training, which "
                                 "leaves nothing to retrain under rewind.retrain: remaining")


def levels_for(cfg: dict, model, prunable_idx) -> imp.Levels:
    """Iterative pruning's schedule over this model's prunable kernels."""
    layer_rates = cfg["prune"]["layer_rates"]
    names = [model.weights[i].path for i in prunable_idx]
    rates = {n: layer_rates[layer] for n, layer in zip(names, models.layer_of(model, prunable_idx))
             if layer in layer_rates}
    return imp.Levels(cfg, names, [tuple(model.weights[i].shape) for i in prunable_idx], rates)


class Diverged(ValueError):
    """The dense network's loss or weights became non-finite."""


def dense_phase(cfg, dense_data, group=None, stop=None):
    """Train the dense net, snapshotting weights at every rewind point; returns (history,
    checkpoints as (N, n_weights) float32, packed masks, realized sparsities, the trained
    weights flat).

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
    weights = trainer.weights()
    kernels = training.prunable_weights(model, prunable_idx, weights)
    ckpts, trained = np.stack([snaps[p] for p in points]), training.flatten(weights)
    if config_mod.gradual(cfg):     # no masks yet: each cell prunes while it trains
        sizes = {n: k.size for n, k in kernels.items()}
        return (history, ckpts, np.zeros((0, (sum(sizes.values()) + 7) // 8), np.uint8),
                np.array([pruning.exact_sparsity(sizes, s, cfg["prune"]["scope"])
                          for s in cfg["prune"]["sparsities"]]), trained)
    if config_mod.iterative(cfg):   # level 1's mask; each chain prunes the later ones itself
        levels = levels_for(cfg, model, prunable_idx)
        first = levels.first(list(kernels.values()))
        return (history, ckpts, pruning.pack_masks(first)[None],
                np.array(levels.sparsities()), trained)
    packed, realized = [], []
    for s in cfg["prune"]["sparsities"]:
        masks = pruning.magnitude_masks(kernels, s, cfg["prune"]["scope"])
        realized.append(pruning.realized_sparsity(masks))
        packed.append(pruning.pack_masks(list(masks.values())))
    return history, ckpts, np.stack(packed), np.array(realized), trained


def cell_inputs(cfg, cell, dataset, shapes, prunable_idx, ckpts, packed, chain_mask=None):
    """(start weights, masks or None) of a cell: its rewind checkpoint (a fresh init for
    random_reinit) and its mask: the sparsity's, or under iterative pruning `chain_mask`
    (the chain's current level, or the ticket's a control follows); random_mask shuffles it
    within each layer; none yet under gradual."""
    r, seed = max(cell.replicate, 0), config_mod.seeded(cfg, cell.replicate)["seed"]
    if cell.control == "random_reinit":
        fresh, _ = training.build_for(cfg, dataset, seeds.derive(seed, seeds.REINIT, cell.mask))
        start = [np.asarray(w) for w in fresh.get_weights()]
    else:
        start = training.unflatten(ckpts[r][cell.rewind], shapes)
    kernel_shapes = [shapes[i] for i in prunable_idx]
    if config_mod.gradual(cfg):
        return start, None        # dense at the start; pruned on schedule while training
    masks = pruning.unpack_masks(chain_mask if config_mod.iterative(cfg)
                                 else packed[r][cell.mask], kernel_shapes)
    if cell.control == "random_mask":   # keyed by the mask: same counts, same draw
        masks = pruning.random_like(masks, seeds.derive(seed, seeds.RANDOM_MASK, cell.mask))
    return start, masks


def train_cell(cfg, cell, trainer, start, masks, sparsity, per_replicate, on_epoch=None):
    """Train one cell from `start` under `masks`; its data order is keyed by the cell (its
    place in its replicate), never by the rank: the same numbers whoever trains it."""
    seed = config_mod.seeded(cfg, cell.replicate)["seed"]
    trainer.load(start, masks)
    first = plan.start_iteration(cell, cfg, trainer.steps_per_epoch)
    on_step = gradual_pruner(cfg, sparsity, trainer, first) if config_mod.gradual(cfg) else None
    return trainer.fit(cfg["train"]["epochs"],
                       seeds.derive(seed, seeds.CELL, cell.id % per_replicate),
                       on_epoch=on_epoch, on_step=on_step, start=first)


def gradual_pruner(cfg: dict, final: float, trainer, start: int):
    """Gradual pruning of one cell: prunes now if the cell starts inside the schedule, and
    returns the on_step callback that prunes at every scheduled iteration, by the magnitude
    of the kernels at that moment (the leader's, so a group agrees on the mask)."""
    schedule, scope = gradual.Schedule(cfg["prune"], final), cfg["prune"]["scope"]

    def prune(sparsity):
        names = [str(i) for i in range(len(trainer.masked))]
        new = pruning.prune_to(dict(zip(names, trainer.leader_kernels())),
                               dict(zip(names, trainer.current_masks())), sparsity, scope)
        trainer.set_masks([new[n] for n in names])

    if schedule.at_start(start) is not None:
        prune(schedule.at_start(start))

    def on_step(step):
        if schedule.due(step):
            prune(schedule.sparsity(step))
    return on_step


def chain_starts(layout, grid, done, writer, packed, packed_len):
    """Iterative pruning: the bit-packed mask each ticket chain of `grid` trains its first
    unfinished level with, on every rank, and the chains a diverged level ended. A new chain
    starts from the dense phase's level-1 mask; a resumed chain from the mask its last
    finished level pruned for the next (read by the writer from the file).
    `packed`: the dense phases' masks, replicate first."""
    chains = plan.chains(grid)
    rows = stopped = None
    if layout.is_writer:
        rows, stopped = [], []
        for chain in chains:
            finished = [c for c in chain if c.name in done]
            if finished:
                mask, diverged = writer.chain_start(finished[-1].name, packed_len)
            else:
                mask, diverged = packed[max(chain[0].replicate, 0)][0], False
            rows.append(mask)
            stopped.append(diverged)
        rows = np.stack(rows)
    rows = world.bcast_array(rows, (len(chains), packed_len), np.uint8)
    stopped = world.bcast_object(stopped)
    return ({c[0].chain: row for c, row in zip(chains, rows)},
            {c[0].chain for c, s in zip(chains, stopped) if s})


def ticket_masks(layout, writer, grid, cells, done, packed_len) -> dict:
    """Iterative pruning's controls: {name: bit-packed mask} of the ticket each
    follows (same level, rewind point and replicate), read by the writer from the file once
    the chains have run; a level its chain never reached (it diverged first) has none."""
    tickets = {(c.mask, c.rewind, c.replicate): c.name for c in grid if c.control == "none"}
    want = [c for c in cells if c.name not in done]
    rows = None
    if layout.is_writer:
        got = [writer.cell_mask(tickets[c.mask, c.rewind, c.replicate]) for c in want]
        rows = [np.zeros(packed_len, np.uint8) if m is None else m for m in got] or \
            [np.zeros(packed_len, np.uint8)]
        have = [m is not None for m in got]
    rows = world.bcast_array(None if rows is None else np.stack(rows),
                                (max(len(want), 1), packed_len), np.uint8)
    have = world.bcast_object(have if layout.is_writer else None)
    return {c.name: row for c, row, h in zip(want, rows, have) if h}


def replicate_indices(cfg: dict) -> list[int]:
    """[-1] for a search with one seed, else 0..R-1 for the replicates of `seeds`."""
    seeds = config_mod.replicates(cfg)
    return [-1] if seeds is None else list(range(len(seeds)))


def dense_phases(cfg, layout, writer, model, prunable_idx, have, stopper, timeline, sp,
                 n_done, n_cells):
    """Every replicate's dense phase, then its checkpoints, masks and realized sparsities on
    every rank, as arrays with a leading replicate axis (length 1 for one seed).

    One seed: rank 0 trains (or, with parallel.dense: data_parallel, every rank shares it).
    Replicates are dealt round robin over the ranks, so R seeds' dense phases run side by
    side; each owner then broadcasts its results and the writer records them. A replicate
    already in a resumed file is read back by the writer instead.
    """
    reps, points = replicate_indices(cfg), cfg["rewind"]["points"]
    shapes = [tuple(w.shape) for w in model.weights]
    n_weights = sum(int(np.prod(s)) for s in shapes)
    packed_len = (sum(int(np.prod(shapes[i])) for i in prunable_idx) + 7) // 8
    rows = 1 if config_mod.iterative(cfg) else 0 if config_mod.gradual(cfg) else len(sp)
    data_parallel = cfg["parallel"]["dense"] == "data_parallel"
    todo = [k for k, h in zip(reps, have) if not h]
    owner = {k: 0 if data_parallel else n % layout.size for n, k in enumerate(todo)}
    out, error, t_dense = {}, None, time.time()
    if layout.is_writer and len(todo) < len(reps):
        print(f"lth-mpi: resuming {cfg['output']}: dense phase"
              + (f"s of {len(reps) - len(todo)} of {len(reps)} seeds" if reps != [-1] else "")
              + f" and {n_done} of {n_cells} cells already done", flush=True)
    mine = [k for k in todo if owner[k] == layout.rank or data_parallel]
    for k in mine:
        rcfg = config_mod.seeded(cfg, k)
        try:
            if data_parallel:   # every rank trains on its shard of the whole training set
                out[k] = dense_phase(rcfg, data.load(cfg["dataset"], (layout.rank, layout.size)),
                                     reducers.mpi_reducers(layout.world), stop=stopper.requested)
            else:
                out[k] = dense_phase(rcfg, data.load(cfg["dataset"]), stop=stopper.requested)
        except Diverged as exc:
            error = str(exc) + (f" (seed {rcfg['seed']})" if k >= 0 else "")
            break
        except training.Interrupted:
            error = "interrupted"
            break
    if mine:
        timeline.add("dense", t_dense)
    t = time.time()
    world.wait_quietly(tick=stopper.requested)
    timeline.add("wait", t)
    error = world.agree(error)
    if error == "interrupted":
        stopper.requested()
        world.wait_quietly()
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

    t = time.time()
    ckpts, packed, realized = [], [], []
    keep = cfg["results"]["keep_weights"] != "none"
    for k in reps:
        root = owner.get(k, 0)
        history = trained = None
        if k in todo:
            got = out.get(k) if layout.rank == root else None
            history = world.bcast_object(got[0] if got else None, root=root)
            ck, pk, rz, trained = got[1:] if got else (None,) * 4
            if keep:
                trained = world.bcast_array(trained, (n_weights,), np.float32, root)
        elif layout.is_writer:        # resumed: the writer reads it back
            _, _, c, m = results.read_dense(writer.f, k)
            ck = np.stack([training.flatten(x) for x in c])
            pk = np.array([pruning.pack_masks(x) for x in m], np.uint8).reshape(rows, packed_len)
            rz = results.replicate_group(writer.f, k)["masks"].attrs["sparsity_realized"]
        else:
            ck = pk = rz = None
        ckpts.append(world.bcast_array(ck, (len(points), n_weights), np.float32, root))
        packed.append(world.bcast_array(pk, (rows, packed_len), np.uint8, root))
        realized.append(world.bcast_array(rz, (len(sp),), np.float64, root))
        if layout.is_writer and k in todo and not error:
            try:
                writer.write_dense(history, [w.path for w in model.weights], shapes,
                                   prunable_idx, points, cfg["rewind"]["unit"], ckpts[-1],
                                   packed[-1], sp, realized[-1], cfg["prune"]["scope"],
                                   trained, replicate=k)
                seed = f" (seed {cfg['seeds'][k]})" if k >= 0 else ""
                print(f"lth-mpi: dense phase{seed} done in {t - t_dense:.1f}s, "
                      f"test accuracy {history['test_accuracy'][-1]:.4f}", flush=True)
            except OSError as exc:    # e.g. a full disk: shared below, every rank stops
                error = f"output: cannot write the dense phase to {cfg['output']} ({exc})"
    error = world.agree(error)
    if error:
        if layout.is_writer:
            close_failed(writer, error)
        fail(error)
    timeline.add("broadcast", t)
    return np.stack(ckpts), np.stack(packed), np.stack(realized)


def run(cfg: dict, resume: bool = False, dry_run: bool = False) -> int:
    t_setup = time.time()
    timeline = Timeline()
    size = world.size()

    # --- 1. validate on every rank; the writer alone checks the output file -----------------
    error = None
    try:
        validate(cfg)
        if world.rank() == 0 and not resume and not dry_run and os.path.exists(cfg["output"]):
            raise ValueError(f"output: {cfg['output']} exists; pass --resume to continue it "
                             "or choose another --output")
    except ValueError as exc:
        error = str(exc)
    error = world.agree(error)
    if error:
        fail(error)

    points, iterative = cfg["rewind"]["points"], config_mod.iterative(cfg)
    layout = world.split(cfg["parallel"]["group_size"])
    # this rank's data and model: checks that need them come before any file is created
    error = None
    try:
        gpus = training.configure(layout, cfg["parallel"]["threads"])
        reducers.choose(layout, cfg["parallel"]["allreduce"], gpus)
        group_data = data.load(cfg["dataset"], (layout.group_rank, layout.group_size))
        model, prunable_idx = training.build_for(cfg, group_data, cfg["seed"])
        if group_data.train_total < cfg["train"]["batch_size"]:
            raise ValueError(f"train.batch_size: {cfg['train']['batch_size']} is larger than the "
                             f"{group_data.train_total} training examples")
        check_model(cfg, model, prunable_idx, group_data.train_total // cfg["train"]["batch_size"])
    except ValueError as exc:
        error = str(exc)
    error = world.agree(error)
    if error:
        fail(error)
    reps = replicate_indices(cfg)
    # iterative pruning's schedule, per replicate (its seed keys the random_mask chains)
    levels = {k: levels_for(config_mod.seeded(cfg, k), model, prunable_idx)
              for k in reps} if iterative else None
    sp = levels[reps[0]].sparsities() if iterative else cfg["prune"]["sparsities"]
    grid = plan.grid_for(cfg, len(sp))

    if dry_run:
        done = set()
        if layout.is_writer and resume and os.path.exists(cfg["output"]):
            done = set(r["name"] for r in results.read_cells(cfg["output"]))
        if layout.is_writer:
            print(plan.describe(cfg, size, sp, done, group_data.train_total
                                // cfg["train"]["batch_size"]), flush=True)
        return 0

    # --- 2. writer opens the file (new, or resumed); everyone learns what is done -----------
    writer, error, state = None, None, None
    prov = results.provenance(layout, world.allgather(results.rank_entry(layout)),
                              stack.describe())
    prov["batchnorm_examples"] = training.batchnorm_regime(cfg, model, size)
    if layout.is_writer:
        try:
            writer = results.Writer(cfg["output"], cfg, prov, len(grid), resume,
                                    data.fingerprint(cfg["dataset"]))
            state = (sorted(writer.done_cells()), [writer.has_dense(k) for k in reps])
        except (ValueError, OSError) as exc:
            error = f"output: {exc}"
    error = world.agree(error)
    if error:
        fail(error)
    done, have_dense = world.bcast_object(state)
    done = set(done)

    timeline.add("setup", t_setup)
    stopper = Stopper()   # from here on SIGTERM / SIGINT stop the job cleanly

    # --- 3. dense phase (one per replicate of `seeds`); the others wait without spinning ---
    # --- 4. broadcast rewind checkpoints and masks (bit-exact buffers) ----------------------
    shapes = [tuple(w.shape) for w in model.weights]
    packed_len = (sum(int(np.prod(shapes[i])) for i in prunable_idx) + 7) // 8
    ckpts, packed, realized = dense_phases(cfg, layout, writer, model, prunable_idx, have_dense,
                                           stopper, timeline, sp, len(done), len(grid))

    # --- 5. groups retrain their cells, data-parallel (Horovod or mpi4py) -----------------
    group = reducers.group_reducers(layout)
    trainer = training.Trainer(model, group_data, cfg["train"], prunable_idx, group,
                               stop=stopper.requested)
    chain_masks, ended = chain_starts(layout, plan.passes(grid, cfg)[0][0], done, writer,
                                      packed, packed_len) \
        if iterative else ({}, set())
    spe = trainer.steps_per_epoch
    t_grid = time.time()
    # cells differ in length (a late rewind trains less): the ETA counts iterations, not cells
    length = {c.id: plan.length(c, cfg, spe) for c in grid}
    progress = {"done": 0, "work": 0,
                "total": sum(length[c.id] for c in grid if c.name not in done)}

    def on_result(msg):
        res = CellResult.decode(msg)
        cell, hist, diverged = grid[res.cell], res.history, res.history["diverged"]
        point = points[cell.rewind] if cell.rewind >= 0 else None
        try:
            writer.write_cell(cell, sp[cell.mask], realized[max(cell.replicate, 0)][cell.mask],
                              point, res)
        except OSError as exc:   # a full disk mid-grid: the others are training, so abort
            kept = progress["done"] + len(done)
            message = (f"output: cannot write cell {cell.name} to {cfg['output']} ({exc}); "
                       f"the file keeps the {kept} cells finished before it, --resume "
                       "continues once there is room")
            close_failed(writer, message)
            sys.stderr.write(f"lth-mpi: error: {message}\n")
            sys.stderr.flush()
            world.abort(3)
        progress["done"] += 1
        progress["work"] += length[cell.id]
        elapsed = time.time() - t_grid
        eta = elapsed / progress["work"] * (progress["total"] - progress["work"])
        where = (f"{cfg['rewind']['unit']} {point}" if cell.control != "random_reinit"
                 else "fresh init")
        outcome = (f"DIVERGED in epoch {diverged}" if diverged
                   else f"acc {hist['test_accuracy'][-1]:.4f}")
        print(f"[{progress['done'] + len(done):>4}/{len(grid)}] {cell.name:<24} sparsity "
              f"{sp[cell.mask]:.3f} {where:<12} {outcome}  "
              f"cell {res.t_end - res.t_start:6.1f}s  elapsed {elapsed:7.1f}s  ETA {eta:7.1f}s",
              flush=True)

    # a cell's data order is keyed by its place within its replicate: replicate k runs
    # exactly the search that `seed: seeds[k]` alone would
    per_replicate = len(grid) // len(reps)
    keep = cfg["results"]["keep_weights"]

    def run_pass(cells, chained, mask_of, last):
        """Train this group's share of `cells` (dealt statically or taken from a queue),
        send each result to the writer, and gather: True if the job was stopped."""
        work, stopped = None, False
        if plan.assignment(cfg, chained) == "dynamic":   # the longest task left, as groups free up
            tasks, work = plan.queue(cells, cfg, spe, done, chained), WorkQueue(layout)

            def taken():
                while (i := work.take()) < len(tasks):
                    yield from tasks[i]
            todo = taken()
        else:
            mine = plan.assign(cells, layout.n_groups, plan.assignment(cfg, chained))[layout.group]
            todo = [c for c in mine if c.name not in done]
        channel = ResultChannel(layout, on_result if layout.is_writer else None)
        drain = (lambda epoch: channel.drain()) if layout.is_writer else None
        for cell in todo:
            mask = mask_of(cell)
            if cell.chain in ended or iterative and mask is None:   # a diverged level ended
                continue                                           # its chain: nothing to prune
            t = time.time()
            start, masks = cell_inputs(cfg, cell, group_data, shapes, prunable_idx, ckpts,
                                       packed, mask)
            # the group starts from the leader's exact bits, as Horovod's examples do
            if group is not None:
                start = training.unflatten(group.broadcast(training.flatten(start)), shapes)
            try:
                hist = train_cell(cfg, cell, trainer, start, masks, sp[cell.mask], per_replicate,
                                  drain)
            except training.Interrupted:   # this cell is dropped: --resume trains it again
                stopped = True
                timeline.add("cell", t, cell.id)
                break
            timeline.add("cell", t, cell.id)
            result = CellResult(cell.id, layout.group, t, time.time(), hist)
            weights = trainer.weights()
            if keep == "all" or keep == "best" and cell.control == "none":
                result.weights = training.flatten(weights)
            if config_mod.gradual(cfg):     # the mask the schedule ended with
                result.mask = pruning.pack_masks(trainer.current_masks())
            if iterative:   # the level's mask, and the next level's pruned from its weights
                result.mask = pruning.pack_masks(masks)
                if hist["diverged"] and chained:
                    ended.add(cell.chain)
                elif chained and cell.mask + 1 < len(sp):
                    trained = [weights[i] for i in prunable_idx]
                    following = levels[cell.replicate].next(trained, masks)
                    chain_masks[cell.chain] = result.mask_next = pruning.pack_masks(following)
            if layout.is_leader:
                channel.send(result.encode())

        # gather: remaining cells to the writer
        t = time.time()
        if layout.is_leader and not layout.is_writer:
            channel.end()
        channel.finish([g * layout.group_size for g in range(1, layout.n_groups)],
                       tick=stopper.requested)
        timeline.add("drain", t)
        t = time.time()
        world.wait_quietly(tick=stopper.requested)
        if work is not None:
            work.free()        # collective: after the barrier, so nobody spins in it
        timeline.add("gather", t)
        # did any rank stop early? A request after the last pass's last cell changes
        # nothing; before a later pass, it stops the job there.
        stopped = stopped or not last and stopper.requested()
        return world.agree("stopped" if stopped else None) is not None

    interrupted = False
    passes = plan.passes(grid, cfg)
    for n, (cells, chained) in enumerate(passes):
        last = n == len(passes) - 1
        if n == 0:
            interrupted = run_pass(cells, chained, lambda c: chain_masks.get(c.chain), last)
        elif not interrupted:   # iterative pruning's controls: the masks the chains pruned
            followed = ticket_masks(layout, writer, grid, cells, done, packed_len)
            interrupted = run_pass(cells, chained, lambda c: followed.get(c.name), last)

    # --- 6. every rank's timings; the file is complete unless the job was stopped -----------
    stopper.finish()
    table = world.gather_rows(timeline.table(layout.rank))
    if layout.is_writer:
        writer.write_timings(table, t_setup)
        kept = len(writer.done_cells())
        writer.close(complete=not interrupted)
    if interrupted:
        kept = world.bcast_object(kept if layout.is_writer else None)
        fail(f"{stopper.describe()}: {kept} of {len(grid)} cells are in "
             f"{cfg['output']}; --resume continues", INTERRUPTED, "stopped")
    if layout.is_writer:
        print(results.accuracy_table(cfg["output"]), flush=True)
        print(f"lth-mpi: wrote {cfg['output']}", flush=True)
    return 0
