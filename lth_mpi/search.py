"""One lottery-ticket search, as phases: set up, open the output, dense, grid, finish.

run() reads top to bottom; each phase returns a small value the next one takes, and a
resumed search gets the same values from the file. MPI stays behind lth_mpi.comm,
TensorFlow behind lth_mpi.training, HDF5 behind lth_mpi.results, and what depends on the
pruning mode behind lth_mpi.modes.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np

from . import (config, cost, data, models, outcome, plan, pruning, results, seeds, stability,
               training)
from .comm import reducers, stack, world
from .comm.channel import ResultChannel
from .comm.queue import WorkQueue
from .comm.stop import Stopper
from .comm.wire import CellResult
from .comm.world import fail

INTERRUPTED = 4    # exit status of a job stopped by SIGTERM or SIGINT (after a clean stop)


class Timeline:
    """(phase, cell, t_start, t_end) rows of this rank, for the timings table."""

    def __init__(self):
        self.rows = []

    def add(self, phase: str, t_start: float, cell: int = -1):
        self.rows.append((results.PHASES.index(phase), cell, t_start, time.time()))

    def table(self, rank: int) -> np.ndarray:
        return np.array([(rank, *r) for r in self.rows], np.float64).reshape(-1, 5)


@dataclasses.dataclass
class Setup:
    """What every phase works with: the settings bound to this model and data, the rank
    layout, this group's data, the model (its weights are replaced by every training) and
    the grid."""
    s: config.Settings
    layout: world.Layout
    data: object
    model: object
    prunable_idx: list[int]
    shapes: list[tuple]
    grid: list[plan.Cell]

    @property
    def n_weights(self) -> int:
        return sum(int(np.prod(s)) for s in self.shapes)

    @property
    def per_replicate(self) -> int:
        """Cells of one replicate: a cell's data order is keyed by its place within its
        replicate, so replicate k runs exactly the search `seed: seeds[k]` alone would."""
        return len(self.grid) // len(self.s.replicates)


@dataclasses.dataclass
class Output:
    """The results file (the writer rank's) and what it already holds, known on every rank."""
    writer: results.Writer | None
    done: set[str]
    have_dense: list[bool]

    def close_failed(self, message: str) -> None:
        """Mark the file failed and close it, if the file system still lets us; cells
        written before stay readable either way (each was flushed and marked when written)."""
        if self.writer is None:
            return
        try:
            self.writer.fail(message)
        except Exception:        # noqa: BLE001  (a full disk may refuse even this)
            pass


@dataclasses.dataclass
class Dense:
    """Every replicate's dense phase on every rank, replicate first: rewind checkpoints
    (R, N, weights) float32, bit-packed masks (R, mode rows, bytes), realized sparsities."""
    checkpoints: np.ndarray
    masks: np.ndarray
    realized: np.ndarray


class Diverged(ValueError):
    """The dense network's loss or weights became non-finite."""


def run(cfg: dict, resume: bool = False, dry_run: bool = False) -> int:
    t0, timeline = time.time(), Timeline()
    setup = set_up(cfg, resume, dry_run)
    if dry_run:
        return show_plan(setup, resume, t0)
    out = open_output(setup, resume)
    timeline.add("setup", t0)
    stopper = Stopper()   # from here on SIGTERM / SIGINT stop the job cleanly
    dense = dense_phases(setup, out, stopper, timeline)
    work = Work(setup, out, cell_trainer(setup, stopper), dense, stopper, timeline)
    setup, dense, interrupted = choose_rewind(work)
    if not interrupted:
        interrupted = train_grid(work.following(setup, dense))
    return finish(setup, out, stopper, timeline, t0, interrupted)


# --- 1. set up: every check before any file is created -------------------------------------

def validate(s: config.Settings) -> None:
    """Checks that need the registries or the file system (ValueError in one line)."""
    data.check(s.dataset)
    models.check(*s.model)
    parent = os.path.dirname(os.path.abspath(s.output))
    if not os.path.isdir(parent):
        raise ValueError(f"output: directory does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"output: directory is not writable: {parent}")


def set_up(cfg: dict, resume: bool, dry_run: bool) -> Setup:
    """Settings, layout, this group's data and the model, checked on every rank alike."""
    s, error = config.resolve(cfg), None
    try:
        validate(s)
        if world.rank() == 0 and not resume and not dry_run and os.path.exists(s.output):
            raise ValueError(f"output: {s.output} exists; pass --resume to continue it or "
                             "choose another --output")
    except ValueError as exc:
        error = str(exc)
    world.agree_or_fail(error)
    layout = world.split(s.group_size)
    try:
        reducers.choose(layout, s.allreduce, training.configure(layout, s.threads))
        group_data = data.load(s.dataset, (layout.group_rank, layout.group_size))
        model, prunable_idx = training.build_for(s, group_data, s.setup_seed)
        s = s.bind(training.kernels_of(model, prunable_idx), models.layer_names(model),
                   group_data.train_total // s.batch_size, group_data.train_total)
    except ValueError as exc:
        error = str(exc)
    world.agree_or_fail(error)
    return Setup(s, layout, group_data, model, prunable_idx,
                 [tuple(w.shape) for w in model.weights], plan.grid(s))


def show_plan(setup: Setup, resume: bool, t0: float) -> int:
    """--dry-run: the plan, with the cells a resumed file already holds marked, and the bill
    from a few steps measured here, also left next to the output for the run to record."""
    s = setup.s
    bill = cost.estimate(s, setup.grid, setup.layout.size, measure(setup, t0))
    if setup.layout.is_writer:
        done = set()
        if resume and os.path.exists(s.output):
            done = set(r["name"] for r in results.read_cells(s.output))
        print(plan.describe(s, setup.layout.size, list(s.targets), done, s.steps_per_epoch),
              flush=True)
        print(cost.describe(bill), flush=True)
        results.save_bill(s, bill)
    return 0


TIMED_SECONDS = 5.0   # the bill times steps in doubling runs until one takes this long


def measure(setup: Setup, t0: float) -> cost.Measured:
    """The dense phase's trainer (rank 0 alone, or every rank when data-parallel) and then
    the cells' (every group at once, as the grid runs) each take a few real steps and one
    evaluation; their times, the slowest group's, on every rank."""
    s, layout = setup.s, setup.layout
    seconds = time.time() - t0
    dense = (0.0, 0.0, 0.0, 0)
    if s.dense_parallel or layout.is_writer:
        where = (layout.rank, layout.size) if s.dense_parallel else (0, 1)
        dense_data = data.load(s.dataset, where)
        model, _ = training.build_for(s, dense_data, s.seed(-1))
        group = reducers.mpi_reducers(layout.world) if s.dense_parallel else None
        dense = timed(training.Trainer(model, dense_data, s.train, [], group), group)
    world.wait_quietly()
    group = reducers.group_reducers(layout)
    cells = timed(training.Trainer(setup.model, setup.data, s.train, setup.prunable_idx,
                                   group), group)
    world.wait_quietly()   # a group done first must not spin (MPICH) while others still time
    rows = world.allgather((*dense, *cells))
    return cost.Measured(seconds, rows[0][0], rows[0][1], max(r[4] for r in rows),
                         max(r[5] for r in rows), int(max(r[7] for r in rows)), rows[0][2],
                         max(r[6] for r in rows))


def timed(trainer, group=None) -> tuple[float, float, float, int]:
    """(seconds per step; what an epoch costs besides its steps: evaluating test and
    validation, its shuffle; what the first steps and evaluation took beyond that: tracing,
    compiling; the most steps timed) of a trainer. The step is the slope between a short
    run and runs of doubling length (whole compiled chunks of steps, so nothing is traced
    while timed) until one takes TIMED_SECONDS; a group agrees on when to stop."""
    spe, chunk = trainer.steps_per_epoch, training.CHECK_EVERY
    short = chunk if spe >= chunk else spe
    most = spe - spe % chunk if spe >= chunk else spe

    def steps(n):
        t = time.perf_counter()
        trainer.train_epoch(seed, steps=n)
        return time.perf_counter() - t

    def epoch(n):
        t_steps, t = steps(n), time.perf_counter()
        trainer.evaluate()
        trainer.evaluate(split="val")
        return t_steps, time.perf_counter() - t

    def enough(seconds):
        long_enough = np.array([seconds >= TIMED_SECONDS], np.float64)
        return bool((group.total(long_enough) if group else long_enough)[0] > 0)
    seed = seeds.derive(0, seeds.DENSE)
    first, (t_short, evaluation) = epoch(short), epoch(short)
    long, t_long = short, t_short
    while long < most and not enough(t_long):
        long = min(most, 2 * long)
        t_long = steps(long)
    step = (t_long - t_short) / (long - short) if long > short else t_short / short
    fixed = max(0.0, t_short - short * step) + evaluation
    return step, fixed, max(0.0, sum(first) - t_short - evaluation), long


# --- 2. the output: new, or resumed; everyone learns what is done ---------------------------

def open_output(setup: Setup, resume: bool) -> Output:
    s, layout = setup.s, setup.layout
    prov = results.provenance(layout, world.allgather(results.rank_entry(layout)),
                              stack.describe())
    prov["batchnorm_examples"] = training.batchnorm_regime(s, setup.model, layout.size)
    bill = results.saved_bill(s, layout.size) if layout.is_writer else None
    if bill is not None:     # a dry run of this search, at this P, left its bill
        prov["estimate"] = bill
    writer, error, state = None, None, None
    if layout.is_writer:
        try:
            writer = results.Writer(s, prov, len(setup.grid), resume, data.fingerprint(s.dataset))
            outcome.note(f"results {os.path.abspath(s.output)}")
            state = (sorted(writer.done_cells()), [writer.has_dense(k) for k in s.replicates])
        except (ValueError, OSError) as exc:
            error = f"output: {exc}"
    world.agree_or_fail(error)
    done, have_dense = world.bcast_object(state)
    return Output(writer, set(done), have_dense)


# --- 3. the dense phases, then checkpoints and masks on every rank ---------------------------

def dense_phase(setup: Setup, replicate: int, dense_data, group=None, stop=None):
    """Train replicate's dense net, snapshotting weights at every rewind point; returns
    (history, checkpoints (N, weights) float32, packed masks, realized sparsities, trained
    weights flat). On one rank by default; with parallel.dense: data_parallel every rank runs
    this with the world as its group, starting from rank 0's initial weights."""
    s, seed = setup.s, setup.s.seed(replicate)
    model, prunable_idx = training.build_for(s, dense_data, seed)
    trainer = training.Trainer(model, dense_data, s.train, [], group, stop)   # no masks
    if group is not None:
        shapes = [w.shape for w in trainer.weights()]
        leader = group.broadcast(training.flatten(trainer.weights()))
        trainer.load(training.unflatten(leader, shapes))
    snaps = {}

    def snapshot(step):
        if step in s.points and step not in snaps:
            snaps[step] = training.flatten(trainer.weights())
    snapshot(0)   # epoch 0 and iteration 0 are both the initialization
    history = trainer.fit(s.epochs, seeds.derive(seed, seeds.DENSE),
                          on_epoch=snapshot if s.unit == "epoch" else None,
                          on_step=snapshot if s.unit == "iteration" else None)
    if history["diverged"]:   # a NaN kernel would sort as the largest magnitude: no masks
        raise Diverged(f"train: the dense network diverged in epoch {history['diverged']} "
                       f"(non-finite loss or weights) at learning_rate "
                       f"{s.train.learning_rate:g}; no masks were computed"
                       + s.label(replicate))
    weights = trainer.weights()
    packed, realized = s.mode.dense_masks(training.prunable_weights(model, prunable_idx,
                                                                    weights))
    return (history, np.stack([snaps[p] for p in s.points]), packed, realized,
            training.flatten(weights))


def dense_phases(setup: Setup, out: Output, stopper: Stopper, timeline: Timeline) -> Dense:
    """Every replicate's dense phase. One seed: rank 0 trains (or, with parallel.dense:
    data_parallel, every rank shares it). Replicates are dealt round robin over the ranks,
    so R seeds' dense phases run side by side; each owner then broadcasts its results and
    the writer records them. A replicate already in a resumed file is read back by the
    writer instead. The others wait without spinning."""
    s, layout = setup.s, setup.layout
    reps = s.replicates
    todo = [k for k, h in zip(reps, out.have_dense) if not h]
    owner = {k: 0 if s.dense_parallel else n % layout.size for n, k in enumerate(todo)}
    got, error, t_dense = {}, None, time.time()
    if layout.is_writer and len(todo) < len(reps):
        print(f"lth-mpi: resuming {s.output}: dense phase"
              + (f"s of {len(reps) - len(todo)} of {len(reps)} seeds" if s.replicated else "")
              + f" and {len(out.done)} of {len(setup.grid)} cells already done", flush=True)
    mine = [k for k in todo if owner[k] == layout.rank or s.dense_parallel]
    for k in mine:
        try:
            if s.dense_parallel:   # every rank trains on its shard of the whole training set
                got[k] = dense_phase(setup, k, data.load(s.dataset, (layout.rank, layout.size)),
                                     reducers.mpi_reducers(layout.world), stopper.requested)
            else:
                got[k] = dense_phase(setup, k, data.load(s.dataset), stop=stopper.requested)
        except Diverged as exc:
            error = str(exc)
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
        if layout.is_writer:
            out.writer.close(complete=False)
        fail(f"{stopper.describe()} during the dense phase; nothing was kept, run again (or "
             "--resume) to start over", INTERRUPTED, "stopped")
    world.agree_or_fail(error, out.close_failed)

    t, parts = time.time(), []
    for k in reps:
        root = owner.get(k, 0)
        history = trained = None
        if k in todo:
            mine = got.get(k) if layout.rank == root else None
            history = world.bcast_object(mine[0] if mine else None, root=root)
            part = mine[1:4] if mine else None
            if s.keep_weights != "none":
                trained = world.bcast_array(mine[4] if mine else None, (setup.n_weights,),
                                            np.float32, root)
        else:        # resumed: the writer reads it back, as the phase left it
            part = out.writer.dense(k) if layout.is_writer else None
        part = share_dense(setup, part, root)
        parts.append(part)
        if layout.is_writer and k in todo and error is None:
            error = record_dense(setup, out, k, history, part, trained, t - t_dense)
    world.agree_or_fail(error, out.close_failed)
    timeline.add("broadcast", t)
    return Dense(*(np.stack(p) for p in zip(*parts)))


def share_dense(setup: Setup, part, root: int) -> tuple:
    """(checkpoints, packed masks, realized sparsities) of one dense phase from `root` to
    every rank, as bit-exact buffers."""
    s, plen = setup.s, setup.s.mode.kernels.packed_len
    ck, pk, rz = part if part is not None else (None, None, None)
    return (world.bcast_array(ck, (len(s.points), setup.n_weights), np.float32, root),
            world.bcast_array(pk, (s.mode.mask_rows(), plen), np.uint8, root),
            world.bcast_array(rz, (len(s.targets),), np.float64, root))


def record_dense(setup: Setup, out: Output, replicate: int, history, part, trained,
                 seconds: float) -> str | None:
    """The writer writes one dense phase; the error line if the file system refuses."""
    s, model = setup.s, setup.model
    try:
        out.writer.write_dense(replicate, history, [w.path for w in model.weights],
                               setup.shapes, setup.prunable_idx, *part, trained)
    except OSError as exc:    # e.g. a full disk: shared, every rank stops
        return f"output: cannot write the dense phase to {s.output} ({exc})"
    print(f"lth-mpi: dense phase{s.label(replicate)} done in {seconds:.1f}s, "
          f"test accuracy {history['test_accuracy'][-1]:.4f}", flush=True)
    return None


# --- 4. the grid: groups retrain their cells, data-parallel ----------------------------------

def cell_inputs(setup: Setup, cell, dense: Dense, mask) -> tuple[np.ndarray, list | None]:
    """(start weights flat, masks or None) of a cell: its rewind checkpoint (a fresh init
    for random_reinit) and the mask its mode gives (`mask`: the chain's, or the followed
    ticket's, where the mode has chains); random_mask shuffles it within each layer."""
    s, r, seed = setup.s, setup.s.index(cell.replicate), setup.s.seed(cell.replicate)
    if cell.control == "random_reinit":
        fresh, _ = training.build_for(s, setup.data,
                                      seeds.derive(seed, seeds.REINIT, cell.mask))
        start = training.flatten(fresh.get_weights())
    else:
        start = dense.checkpoints[r][cell.rewind]
    packed = None if cell.dense else s.mode.cell_mask(cell, dense.masks[r], mask)
    if packed is None:
        return start, None
    masks = pruning.unpack_masks(packed, list(s.mode.kernels.shapes))
    if cell.control == "random_mask":   # keyed by the mask: same counts, same draw
        masks = pruning.random_like(masks, seeds.derive(seed, seeds.RANDOM_MASK, cell.mask))
    return start, masks


def data_order(setup: Setup, cell) -> int:
    """A cell's data-order seed, keyed by the cell (its place in its replicate; a dense
    pair's rewind point), never by the rank: the same numbers whoever trains it."""
    seed = setup.s.seed(cell.replicate)
    if cell.dense:
        return seeds.derive(seed, seeds.LADDER, cell.rewind)
    return seeds.derive(seed, seeds.CELL, cell.id % setup.per_replicate)


def train_cell(setup: Setup, cell, trainer, start, masks, on_epoch=None,
               order: int | None = None) -> dict:
    """Train one cell from `start` (flat) under `masks`, in its data order (or `order`)."""
    s = setup.s
    trainer.load(training.unflatten(start, setup.shapes), masks)
    first = plan.start_iteration(cell, s, trainer.steps_per_epoch)
    pruner = None if cell.dense else s.mode.pruner(s.targets[cell.mask], trainer, first)
    return trainer.fit(s.epochs, data_order(setup, cell) if order is None else order,
                       on_epoch=on_epoch, on_step=pruner, start=first)


def train_pair(setup: Setup, cell, trainer, start, masks, on_epoch=None):
    """A stability pair: two trainings from the same `start` and masks, the second in
    another data order (the same one under stability.data_order: same), then the straight
    line between them evaluated (Trainer.linear_path). Returns (the curves the cell
    stores: the first copy's, or the copy that diverged; the first copy's trained weights;
    its pair row for the writer: both copies' final (test, val) accuracies, then the path,
    empty if a copy diverged)."""
    st, first = setup.s.stability, data_order(setup, cell)
    second = first if st.same_order else seeds.derive(first, seeds.SECOND_COPY)
    hist_a = train_cell(setup, cell, trainer, start, masks, on_epoch)
    if hist_a["diverged"]:
        return hist_a, trainer.weights(), np.zeros(0)
    a = training.flatten(trainer.weights())
    hist_b = train_cell(setup, cell, trainer, start, masks, on_epoch, order=second)
    if hist_b["diverged"]:
        return hist_b, trainer.weights(), np.zeros(0)
    path = trainer.linear_path(a, training.flatten(trainer.weights()),
                               stability.alphas(st.path_points),
                               seeds.derive(first, seeds.BATCHNORM), st.batchnorm_batches)
    ends = [hist_a["test_accuracy"][-1], hist_a["val_accuracy"][-1],
            hist_b["test_accuracy"][-1], hist_b["val_accuracy"][-1]]
    return hist_a, training.unflatten(a, setup.shapes), stability.pack(ends, path)


def chain_starts(setup: Setup, out: Output, cells, dense: Dense):
    """Chained modes: the bit-packed mask each chain of `cells` trains its first unfinished
    level with, on every rank, and the chains a diverged level ended. A new chain starts
    from the dense phase's mask; a resumed one from the mask its last finished level pruned
    for the next (read by the writer from the file)."""
    chains, plen = plan.chains(cells), setup.s.mode.kernels.packed_len
    rows = stopped = None
    if setup.layout.is_writer:
        rows, stopped = [], []
        for chain in chains:
            finished = [c for c in chain if c.name in out.done]
            if finished:
                mask, diverged = out.writer.chain_start(finished[-1].name, plen)
            else:
                mask, diverged = dense.masks[setup.s.index(chain[0].replicate)][0], False
            rows.append(mask)
            stopped.append(diverged)
        rows = np.stack(rows)
    rows = world.bcast_array(rows, (len(chains), plen), np.uint8)
    stopped = world.bcast_object(stopped)
    return ({c[0].chain: row for c, row in zip(chains, rows)},
            {c[0].chain for c, st in zip(chains, stopped) if st})


def ticket_masks(setup: Setup, out: Output, cells) -> dict:
    """Cells that follow a ticket (iterative controls): {name: bit-packed mask} of the
    ticket each follows (same level, rewind point and replicate), read by the writer from
    the file once the chains have run; a level its chain never reached has none."""
    plen = setup.s.mode.kernels.packed_len
    tickets = {(c.mask, c.rewind, c.replicate): c.name for c in setup.grid
               if c.control == "none"}
    want = [c for c in cells if c.name not in out.done]
    rows = have = None
    if setup.layout.is_writer:
        got = [out.writer.cell_mask(tickets[c.mask, c.rewind, c.replicate]) for c in want]
        rows = np.stack([np.zeros(plen, np.uint8) if m is None else m for m in got]
                        or [np.zeros(plen, np.uint8)])
        have = [m is not None for m in got]
    rows = world.bcast_array(rows, (max(len(want), 1), plen), np.uint8)
    have = world.bcast_object(have)
    return {c.name: row for c, row, h in zip(want, rows, have) if h}


class Progress:
    """The writer's side of a phase's cells: each result into the file, and a line with the
    ETA (cells differ in length, a late rewind trains less: the ETA counts iterations)."""

    def __init__(self, setup: Setup, out: Output, dense: Dense, spe: int, cells: list):
        self.setup, self.out, self.dense = setup, out, dense
        self.cells = {c.id: c for c in cells}
        self.length = {c.id: plan.length(c, setup.s, spe) for c in cells}
        self.total = sum(self.length[c.id] for c in cells if c.name not in out.done)
        self.before = sum(c.name in out.done for c in cells)
        self.done = self.work = 0
        self.t0 = time.time()

    def on_result(self, msg):
        s, res = self.setup.s, CellResult.decode(msg)
        cell, hist, diverged = self.cells[res.cell], res.history, res.history["diverged"]
        point = s.points[cell.rewind] if cell.rewind >= 0 else None
        sparsity = 0.0 if cell.dense else s.targets[cell.mask]
        realized = 0.0 if cell.dense else self.dense.realized[s.index(cell.replicate)][cell.mask]
        try:
            self.out.writer.write_cell(cell, sparsity, realized, point, res)
        except OSError as exc:   # a full disk mid-grid: the others are training, so abort
            kept = self.done + self.before
            message = (f"output: cannot write cell {cell.name} to {s.output} ({exc}); the "
                       f"file keeps the {kept} cells finished before it, --resume continues "
                       "once there is room")
            self.out.close_failed(message)
            sys.stderr.write(f"lth-mpi: error: {message}\n")
            sys.stderr.flush()
            world.abort(3)
        self.done += 1
        self.work += self.length[cell.id]
        elapsed = time.time() - self.t0
        eta = elapsed / self.work * (self.total - self.work)
        where = f"{s.unit} {point}" if cell.control != "random_reinit" else "fresh init"
        outcome = (f"DIVERGED in epoch {diverged}" if diverged
                   else f"acc {hist['test_accuracy'][-1]:.4f}")
        if cell.pair and res.pair.size:
            path = stability.unpack(res.pair)[1]
            outcome += f" instability {stability.instability(path[:, 1]):.4f}"
        print(f"[{self.done + self.before:>4}/{len(self.cells)}] {cell.name:<24} "
              f"sparsity {sparsity:.3f} {where:<12} {outcome}  cell "
              f"{res.t_end - res.t_start:6.1f}s  elapsed {elapsed:7.1f}s  ETA {eta:7.1f}s",
              flush=True)


def cell_trainer(setup: Setup, stopper: Stopper):
    """The one trainer of this rank's group, for every cell (and pair) it trains."""
    return training.Trainer(setup.model, setup.data, setup.s.train, setup.prunable_idx,
                            reducers.group_reducers(setup.layout), stop=stopper.requested)


def choose_rewind(work: "Work") -> tuple[Setup, Dense, bool]:
    """rewind.points: auto: a stability pair of the dense net at every candidate point
    (the dense phase kept each as a checkpoint), over the groups like cells; the writer
    reads them back from the file, picks the earliest point below stability.threshold
    (in every seed) and records it with the evidence. The grid then runs as if that point
    was given. Returns (setup, dense) for the grid, and whether the job was stopped."""
    setup, dense, out = work.setup, work.dense, work.out
    s = setup.s
    if not s.auto:
        return setup, dense, False
    ladder = plan.ladder(s, len(setup.grid))
    progress = None
    if setup.layout.is_writer:
        progress = Progress(setup, out, dense, work.trainer.steps_per_epoch, ladder)
    if work.run(ladder, False, {}, {}, set(), last=False, progress=progress):
        return setup, dense, True
    choice = None
    if setup.layout.is_writer:
        choice = stability.evidence(out.writer.ladder(), list(s.points), s.stability.threshold,
                                    len(s.replicates))
        out.writer.write_choice(choice)
        print(f"lth-mpi: rewind.points: auto chose {s.unit} {choice['chosen_point']} "
              + ("(the earliest stable point" if choice["stable"] else
                 "(no candidate was stable: the latest one")
              + f"; instability on {choice['chosen_on']} by point: "
              + ", ".join(f"{p}: {v:.4f}" for p, v in zip(s.points, choice["instability"]))
              + ")", flush=True)
    i = world.bcast_object(choice)["chosen_index"]
    return (dataclasses.replace(setup, s=s.rewound_to(s.points[i])),
            dataclasses.replace(dense, checkpoints=dense.checkpoints[:, i:i + 1]), False)


def train_grid(work: "Work") -> bool:
    """Every pass of the grid (plan.passes); True if the job was stopped."""
    setup, out, s = work.setup, work.out, work.setup.s
    passes = plan.passes(setup.grid, s)
    chain_masks, ended = (chain_starts(setup, out, passes[0][0], work.dense) if s.mode.chained
                          else ({}, set()))
    for n, (cells, chained) in enumerate(passes):
        followed = ticket_masks(setup, out, cells) if n else {}   # what the first pass pruned
        if work.run(cells, chained, followed, chain_masks, ended, last=n == len(passes) - 1):
            return True
    return False


class Work:
    """This group's share of each pass (dealt statically or taken from a queue), each
    result sent to the writer, then the pass's gather."""

    def __init__(self, setup, out, trainer, dense, stopper, timeline):
        self.setup, self.out, self.trainer, self.group = setup, out, trainer, trainer.group
        self.dense, self.stopper, self.timeline = dense, stopper, timeline
        self.progress = None
        if setup.layout.is_writer:
            self.progress = Progress(setup, out, dense, trainer.steps_per_epoch, setup.grid)

    def following(self, setup: Setup, dense: Dense) -> "Work":
        """The same work on new settings (auto's chosen rewind point)."""
        return Work(setup, self.out, self.trainer, dense, self.stopper, self.timeline)

    def todo(self, cells, chained):
        """This group's cells, in order; with a queue, taken as the group frees up."""
        s, layout, done = self.setup.s, self.setup.layout, self.out.done
        if plan.assignment(s, chained) != "dynamic":
            mine = plan.assign(cells, layout.n_groups, plan.assignment(s, chained))
            return [c for c in mine[layout.group] if c.name not in done], None
        tasks = plan.queue(cells, s, self.trainer.steps_per_epoch, done, chained)
        work = WorkQueue(layout)   # the longest task left, as groups free up
        if work.fallback and layout.is_writer:
            print(f"lth-mpi: note: no shared queue ({work.fallback}): the groups take the "
                  "cells round robin, longest first", flush=True)

        def taken():
            while (i := work.take()) < len(tasks):
                yield from tasks[i]
        return taken(), work

    def run(self, cells, chained, followed, chain_masks, ended, last, progress=None) -> bool:
        """Train this group's cells, gather: True if the job was stopped. A chained cell
        trains its chain's current mask (`chain_masks`, which takes each chain's next mask
        as its levels finish); a cell that follows a ticket, the ticket's (`followed`).
        `progress`: the writer's (the grid's unless given)."""
        s, layout, setup = self.setup.s, self.setup.layout, self.setup
        todo, work = self.todo(cells, chained)
        progress = progress or self.progress
        channel = ResultChannel(layout, progress.on_result if layout.is_writer else None)
        drain = (lambda epoch: channel.drain()) if layout.is_writer else None
        stopped = False
        for cell in todo:
            mask = chain_masks.get(cell.chain) if chained else followed.get(cell.name)
            if cell.chain in ended or s.mode.chained and mask is None and not cell.dense:
                continue          # a diverged level ended its chain: nothing to prune
            t = time.time()
            start, masks = cell_inputs(setup, cell, self.dense, mask)
            # the group starts from the leader's exact bits, as Horovod's examples do
            if self.group is not None:
                start = self.group.broadcast(start)
            try:
                if cell.pair:
                    hist, weights, pair = train_pair(setup, cell, self.trainer, start, masks,
                                                     drain)
                else:
                    hist = train_cell(setup, cell, self.trainer, start, masks, drain)
                    weights, pair = self.trainer.weights(), np.zeros(0)
            except training.Interrupted:   # this cell is dropped: --resume trains it again
                stopped = True
                self.timeline.add("cell", t, cell.id)
                break
            self.timeline.add("cell", t, cell.id)
            result = CellResult(cell.id, layout.group, t, time.time(), hist, pair=pair)
            if s.keep_weights == "all" or s.keep_weights == "best" and cell.control == "none":
                result.weights = training.flatten(weights)
            if chained and hist["diverged"]:
                ended.add(cell.chain)
            mask_now, mask_next = (None, None) if cell.dense else s.mode.after_cell(
                self.trainer, masks, [weights[i] for i in setup.prunable_idx], hist, chained,
                cell.mask + 1 >= len(s.targets))
            if mask_now is not None:
                result.mask = mask_now
            if mask_next is not None:
                chain_masks[cell.chain] = result.mask_next = mask_next
            if layout.is_leader:
                channel.send(result.encode())
        return self.gather(channel, work, stopped, last)

    def gather(self, channel, work, stopped, last) -> bool:
        """Remaining cells to the writer; did any rank stop? A request after the last pass's
        last cell changes nothing; before a later pass, it stops the job there."""
        layout, stopper = self.setup.layout, self.stopper
        t = time.time()
        if layout.is_leader and not layout.is_writer:
            channel.end()
        channel.finish([g * layout.group_size for g in range(1, layout.n_groups)],
                       tick=stopper.requested)
        self.timeline.add("drain", t)
        t = time.time()
        world.wait_quietly(tick=stopper.requested)
        if work is not None:
            work.free()        # collective: after the barrier, so nobody spins in it
        self.timeline.add("gather", t)
        stopped = stopped or not last and stopper.requested()
        return world.agree("stopped" if stopped else None) is not None


# --- 5. finish: every rank's timings; the file is complete unless the job was stopped --------

def finish(setup: Setup, out: Output, stopper: Stopper, timeline: Timeline, t0: float,
           interrupted: bool) -> int:
    s, layout = setup.s, setup.layout
    stopper.finish()
    table = world.gather_rows(timeline.table(layout.rank))
    kept = None
    if layout.is_writer:
        out.writer.write_timings(table, t0)
        kept = len(out.writer.done_cells())
        out.writer.close(complete=not interrupted)
    if interrupted:
        kept = world.bcast_object(kept)
        fail(f"{stopper.describe()}: {kept} of {len(setup.grid)} cells are in {s.output}; "
             "--resume continues", INTERRUPTED, "stopped")
    if layout.is_writer:
        print(results.accuracy_table(s.output), flush=True)
        print(f"lth-mpi: wrote {s.output}", flush=True)
    return 0
