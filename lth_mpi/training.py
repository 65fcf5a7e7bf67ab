"""Masked training and evaluation in TensorFlow, with no MPI or Horovod in sight.

A data-parallel group plugs in through a `Group` of collective functions that the parallel
layer builds (lth_mpi.comm.reducers); a single rank passes none. One Trainer serves every cell
of a rank: its compiled step is traced once, and a cell only loads new weights and a new mask
into existing variables. TensorFlow's threads and GPU are set up here too (configure).

One model per cell, whatever the group size (docs/design.md): every rank of a group takes
its slice of the same global batch, gradients are averaged, BatchNorm moving statistics are
averaged over the group at the end of every epoch and the leader's weights then broadcast,
so all ranks hold bit-identical weights whenever they evaluate. With sync_batchnorm the batch
statistics themselves are summed over the group every step, so a group of G trains the
network one rank trains on the global batch.
"""
from __future__ import annotations

import os
import time

import numpy as np

from . import models, seeds, stability
from .modes.base import Kernels
from .keras_import import keras, tf


def make_optimizer(train) -> keras.optimizers.Optimizer:
    """The optimizer of the trainer's settings (config.Train)."""
    if train.optimizer == "adam":
        opt = keras.optimizers.Adam(train.learning_rate, weight_decay=train.weight_decay or None)
    else:
        opt = keras.optimizers.SGD(train.learning_rate, momentum=train.momentum,
                                   weight_decay=train.weight_decay or None)
    # float16 gradients underflow without loss scaling; the wrapper also skips any step
    # whose (group-averaged, hence identical on every rank) gradients are not finite.
    # bfloat16 has float32's exponent range: no scaling needed
    return keras.optimizers.LossScaleOptimizer(opt) \
        if train.mixed_precision == "float16" else opt


def thread_budget(layout, threads: int | None) -> int:
    """Intra-op threads: the cores this rank is bound to if the launcher bound it, else its
    node-local share of the node's cores."""
    if threads:
        return threads
    bound = len(os.sched_getaffinity(0))
    cores = os.cpu_count() or 1
    return max(1, bound if bound < cores else cores // layout.local_size)


def gpu_claim(local_rank: int, visible: str | None) -> str:
    """The CUDA device (an id of CUDA_VISIBLE_DEVICES, as Slurm's gres sets it) this rank
    takes: the node-local rank's turn among those it sees; "" when it sees none. configure
    takes the same turn among the GPUs TensorFlow lists (one per visible id, in order)."""
    ids = [i for i in (visible or "").split(",") if i.strip()]
    return ids[local_rank % len(ids)].strip() if ids else ""


def configure(layout, threads: int | None) -> int:
    """TensorFlow's threads and this rank's GPU, before TensorFlow creates its first tensor;
    returns how many GPUs the node has. GPUs are counted per node over all groups
    (`layout.local_rank`: hvd.local_rank() would count inside a group only, and two groups
    on a node would both claim GPU 0)."""
    layout.threads = thread_budget(layout, threads)
    tf.config.threading.set_intra_op_parallelism_threads(layout.threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(2, layout.threads))
    layout.gpu = gpu_claim(layout.local_rank, os.environ.get("CUDA_VISIBLE_DEVICES"))
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        gpu = gpus[layout.local_rank % len(gpus)]
        tf.config.set_visible_devices(gpu, "GPU")
        tf.config.experimental.set_memory_growth(gpu, True)
    return len(gpus)


def synchronize_batchnorm(model, batch_sum) -> int:
    """Make every BatchNormalization layer take its batch mean and variance over the group's
    global batch; returns how many layers were changed.

    One reduction per layer and step: the sums of (x - shift) and (x - shift)^2 and the count,
    with the moving mean (identical on every rank) as the shift, which keeps the one-pass
    variance from cancelling. The same formula runs at G = 1 (batch_sum = identity), so a group
    and one rank differ only in the order of float summation. The gradient flows through the
    reduction (its gradient is the same sum of the upstream gradients).
    """
    layers = batchnorm_layers(model)
    for layer in layers:
        summed = batch_sum()

        def moments(inputs, mask, layer=layer, summed=summed):
            axes = layer._reduction_axes
            shift = tf.stop_gradient(tf.cast(layer.moving_mean, inputs.dtype))
            d = inputs - shift
            count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(inputs), axes)), inputs.dtype)
            c = shift.shape[0]
            sums = summed(tf.concat([tf.reduce_sum(d, axes), tf.reduce_sum(tf.square(d), axes),
                                     tf.reshape(count, [1])], 0))
            n = tf.stop_gradient(sums[2 * c])
            offset = sums[:c] / n
            variance = tf.maximum(sums[c:2 * c] / n - tf.square(offset), 0.0)
            return shift + offset, variance
        layer._moments = moments
    return len(layers)


def batchnorm_layers(model) -> list:
    return [la for la in model._flatten_layers() if isinstance(la, keras.layers.BatchNormalization)]


def batchnorm_statistics(model) -> list:
    """The moving mean and variance variables of every BatchNormalization layer."""
    return [v for la in batchnorm_layers(model) for v in (la.moving_mean, la.moving_variance)]


def flatten(arrays) -> np.ndarray:
    """Arrays (or variables) as one float32 buffer, to send or store in one piece."""
    return np.concatenate([np.asarray(a, np.float32).ravel() for a in arrays])


def unflatten(flat, shapes) -> list:
    """Inverse of flatten, given the shapes."""
    out, start = [], 0
    for s in shapes:
        n = int(np.prod(s))
        out.append(flat[start:start + n].reshape(s))
        start += n
    return out


class Interrupted(Exception):
    """A stop was requested (SIGTERM, SIGINT) and the group agreed to stop."""


CHECK_EVERY = 20   # steps between stop checks (in a group, one tiny allreduce each)
EVAL_HELD = 256 * 2 ** 20   # bytes: a test or validation shard up to this is held as a tensor


def has_convolutions(model) -> bool:
    """Any convolution layer in `model`, nested models included."""
    layers = list(model.layers)
    while layers:
        layer = layers.pop()
        if "Conv" in type(layer).__name__:
            return True
        layers += getattr(layer, "layers", [])
    return False


def use_xla(setting, model) -> bool:
    """train.xla: true/false as given; auto compiles with XLA on a GPU, and on a CPU only for
    models without convolutions: XLA's CPU backend runs convolutions without oneDNN, several
    times slower (benchmarks/xla_cpu.py; the numbers are in docs/performance.md)."""
    if setting != "auto":
        return bool(setting)
    return bool(tf.config.list_logical_devices("GPU")) or not has_convolutions(model)


def sync_batchnorm(setting, model) -> bool:
    """train.sync_batchnorm: true/false as given (nothing to do without BatchNorm); auto
    synchronizes whenever there is BatchNorm, so every training (the one-rank dense net,
    cells in groups of any G) takes its batch statistics over the same global batch, with
    the same formula (identity sums on one rank), and "ticket vs dense" or "G=1 vs G=4"
    compare networks, not BatchNorm regimes. Cost: docs/design.md (Synchronized BatchNorm)."""
    return bool(batchnorm_layers(model)) and (setting is True or setting == "auto")


def batchnorm_examples(setting, model, batch: int, size: int) -> int | None:
    """How many examples each BatchNorm batch statistic is taken over by a trainer of `size`
    ranks (None without BatchNorm): the global batch, or a rank's slice when not synchronized."""
    if not batchnorm_layers(model):
        return None
    return batch if sync_batchnorm(setting, model) or size == 1 else batch // size


def batchnorm_regime(s, model, world_size: int) -> dict:
    """{"dense": n, "cells": n}: the examples each BatchNorm batch statistic covers in the
    dense phase (one rank, or every rank with parallel.dense: data_parallel) and in the
    cells (groups of G); None without BatchNorm. Recorded in the results file: the analysis
    refuses to compare a dense net and tickets trained under different regimes."""
    t = s.train
    dense = world_size if s.dense_parallel else 1
    return {"dense": batchnorm_examples(t.sync_batchnorm, model, t.batch_size, dense),
            "cells": batchnorm_examples(t.sync_batchnorm, model, t.batch_size, s.group_size)}


class Trainer:
    """Trains `model` on this rank's part of each batch; prunable kernels are masked on every
    step. `stop()` (optional) says whether a stop was requested; it is asked every
    CHECK_EVERY steps, the group agrees on the answer, and train_epoch raises Interrupted."""

    def __init__(self, model, data, train, prunable_idx, group=None,
                 stop=None):
        """`train`: the trainer's settings (config.Train, a Settings' `train`)."""
        self.model, self.data, self.train, self.group = model, data, train, group
        self.stop = stop
        size = group.size if group else 1
        self.total = group.total if group else (lambda x: x)
        self.local_batch = train.batch_size // size
        self.steps_per_epoch = data.train_total // train.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(f"train.batch_size: {train.batch_size} is larger than the "
                             f"{data.train_total} training examples")
        self.optimizer = make_optimizer(train)
        self.optimizer.build(model.trainable_weights)
        self.prunable_idx = list(prunable_idx)
        self.masked = [model.weights[i] for i in self.prunable_idx]
        self.masks = [tf.Variable(tf.ones(v.shape), trainable=False) for v in self.masked]
        self.mean = tf.constant(data.mean, tf.float32)
        self.std = tf.constant(data.std, tf.float32)
        self.loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.loss_sum = tf.Variable(0.0, trainable=False)
        self.statistics = batchnorm_statistics(model)
        self.sync_bn = sync_batchnorm(train.sync_batchnorm, model)
        if self.sync_bn:
            synchronize_batchnorm(model, group.batch_sum if group else (lambda: tf.identity))
        xla = use_xla(train.xla, model)
        # autograph=False: a step has no tensor-dependent Python control flow, and converting
        # it (Horovod's code with it) cost seconds of every process's first step; only the
        # two in-graph loops below need autograph
        self._train_steps = None
        if group is None:     # one rank: the whole step is one XLA program
            self._train_step = tf.function(lambda x, y: self._update(*self._gradients(x, y)),
                                           jit_compile=xla, autograph=False)

            def steps(xs, ys):   # many steps per call: one dispatch instead of one per step
                for i in tf.range(tf.shape(xs)[0]):
                    self._train_step(xs[i], ys[i])
            self._train_steps = tf.function(steps, reduce_retracing=True)
        else:                 # two compiled halves around the allreduce, which XLA cannot hold;
            # the forward pass holds collectives too when BatchNorm is synchronized
            gradients = tf.function(self._gradients, jit_compile=xla and not self.sync_bn,
                                    autograph=False)
            update = tf.function(self._update, jit_compile=xla, autograph=False)

            def step(x, y):
                grads, loss = gradients(x, y)
                update(group.average(grads), loss)
            self._train_step = tf.function(step, autograph=False)
        self._eval_step = tf.function(self._eval, jit_compile=xla, autograph=False)

        def evaluate_all(xs, ys):   # one call per pass: every full batch's sums, in order
            sums = tf.TensorArray(tf.float32, size=tf.shape(xs)[0])
            for i in tf.range(tf.shape(xs)[0]):
                sums = sums.write(i, self._eval_step(xs[i], ys[i]))
            return sums.stack()
        self._eval_all = tf.function(evaluate_all, reduce_retracing=True)
        self._held = {}   # (split, batch) -> what _hold returns

    # --- state --------------------------------------------------------------------------
    def load(self, weights: list[np.ndarray], masks: list[np.ndarray] | None = None):
        """Start a cell: weights (all of model.weights), masks for the prunable kernels
        (None = dense), optimizer state zeroed, pruned weights set to exactly zero."""
        self.model.set_weights(weights)
        for var, m in zip(self.masks, masks or [np.ones(v.shape) for v in self.masks]):
            var.assign(np.asarray(m, np.float32))
        # fresh moments and step count; the loss scale (mixed precision) carries over
        inner = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        for var in inner.variables:
            if "learning_rate" not in var.path:
                var.assign(tf.zeros_like(var))
        self.apply_masks()

    def set_masks(self, masks: list[np.ndarray]):
        """New masks mid-training (gradual pruning): optimizer state kept, pruned weights
        zeroed now and after every step."""
        for var, m in zip(self.masks, masks):
            var.assign(np.asarray(m, np.float32))
        self.apply_masks()

    def current_masks(self) -> list[np.ndarray]:
        return [np.asarray(m) > 0.5 for m in self.masks]

    def leader_kernels(self) -> list[np.ndarray]:
        """The prunable kernels as the group's leader has them: every rank of a group
        computes the same mask from the same numbers, even if its own last bits differ."""
        kernels = [np.asarray(v) for v in self.masked]
        if self.group is None:
            return kernels
        flat = np.asarray(self.group.broadcast(flatten(kernels)))
        return unflatten(flat, [k.shape for k in kernels])

    def apply_masks(self):
        for var, m in zip(self.masked, self.masks):
            var.assign(var * m)

    def weights(self) -> list[np.ndarray]:
        return [np.array(w) for w in self.model.get_weights()]

    def agree(self):
        """End of an epoch in a group: one model on every rank. The BatchNorm moving
        statistics, which follow each rank's own slices unless synchronized, are averaged;
        then every weight takes the leader's bits (identical already in practice, since
        gradients are averaged; one broadcast per epoch makes it certain)."""
        if self.group is None:
            return
        if self.statistics and not self.sync_bn:
            summed = self.total(flatten(self.statistics).astype(np.float64))
            mean = np.asarray(summed) / self.group.size
            for v, a in zip(self.statistics, unflatten(mean, [v.shape for v in self.statistics])):
                v.assign(a.astype(np.float32))
        weights = self.model.weights
        leader = np.asarray(self.group.broadcast(flatten(weights)))
        for w, a in zip(weights, unflatten(leader, [w.shape for w in weights])):
            w.assign(a)

    # --- compiled steps -----------------------------------------------------------------
    def _normalize(self, x):
        return (tf.cast(x, tf.float32) / 255.0 - self.mean) / self.std

    def _gradients(self, x, y):
        with tf.GradientTape() as tape:
            logits = tf.cast(self.model(self._normalize(x), training=True), tf.float32)
            loss = self.loss_fn(y, logits)
            scaled = self.optimizer.scale_loss(loss)   # identity unless mixed precision
        return tape.gradient(scaled, self.model.trainable_weights), loss

    def _update(self, grads, loss):
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_weights))
        # Re-masking after the update makes "exactly zero" hold whatever the optimizer
        # (momentum, Adam moments, weight decay) does. Masking the gradients too would be
        # redundant: every optimizer here is element-wise, so pruned coordinates never
        # influence kept ones. Under XLA this multiply fuses into the update and is free.
        self.apply_masks()
        self.loss_sum.assign_add(loss)

    def _eval(self, x, y):
        logits = tf.cast(self.model(self._normalize(x), training=False), tf.float32)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), y),
                                        tf.float32))
        loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        return tf.stack([correct, loss, tf.cast(tf.shape(y)[0], tf.float32)])

    # --- loops --------------------------------------------------------------------------
    def train_epoch(self, epoch_seed: int, on_step=None, first_step: int = 0,
                    steps: int | None = None) -> float:
        """One pass over this rank's shard in a fresh order (or its first `steps` batches);
        returns the mean train loss.

        Every rank runs the same number of steps (the collectives require it): the global
        batch is split over the group, and the last partial batch is dropped.
        """
        n = self.steps_per_epoch if steps is None else steps
        self.loss_sum.assign(0.0)
        batches = self.data.train_batches(epoch_seed, n, self.train.batch_size)
        if on_step is None and self._train_steps is not None:
            # one rank, nothing to do between steps: CHECK_EVERY steps per compiled call
            chunk = []
            for i, batch in enumerate(batches, 1):
                chunk.append(batch)
                if len(chunk) == CHECK_EVERY or i == n:
                    self.check_stop()
                    self._train_steps(tf.constant(np.stack([b[0] for b in chunk])),
                                      tf.constant(np.stack([b[1] for b in chunk])))
                    chunk = []
        else:
            for i, (x, y) in enumerate(batches):
                if i % CHECK_EVERY == 0:
                    self.check_stop()
                self._train_step(tf.constant(x), tf.constant(y))
                if on_step is not None:
                    on_step(first_step + i + 1)
        loss_sum, steps = np.asarray(self.total(np.array([self.loss_sum.numpy(), n], np.float64)))
        return float(loss_sum / steps)

    def evaluate(self, batch: int = 1000, split: str = "test") -> tuple[float, float]:
        """(accuracy, mean loss) over the whole test (or validation) set, summed over the
        group's blocks; NaN for an empty split."""
        if split == "val" and self.data.val_total == 0:
            return float("nan"), float("nan")
        if (split, batch) not in self._held:
            self._held[split, batch] = self._hold(split, batch)
        held = self._held[split, batch]
        if held is None:   # too large to hold: one call per batch, streamed
            rows = [self._eval_step(tf.constant(x), tf.constant(y)).numpy()
                    for x, y in self._eval_batches(split, batch)]
        else:
            xs, ys, ragged, order = held
            full = iter(self._eval_all(xs, ys).numpy() if xs is not None else [])
            rest = iter([self._eval_step(x, y).numpy() for x, y in ragged])
            rows = [next(full) if is_full else next(rest) for is_full in order]
        sums = np.zeros(3)
        for row in rows:        # float64, in the data's order: the same sums as batch by batch
            sums += row
        sums = np.asarray(self.total(sums))
        return float(sums[0] / sums[2]), float(sums[1] / sums[2])

    def _eval_batches(self, split: str, batch: int):
        return self.data.test_batches(batch) if split == "test" else self.data.val_batches(batch)

    def _hold(self, split: str, batch: int):
        """This rank's test (or validation) batches as tensors, read once: the full ones
        stacked for one compiled call per pass, the ragged ones apart, and which came where.
        None if the split is larger than EVAL_HELD (it is streamed every pass)."""
        count = self.data.test_count if split == "test" else self.data.val_count
        if count * int(np.prod(self.data.input_shape)) > EVAL_HELD:   # uint8 images
            return None
        full, ragged, order = [], [], []
        for x, y in self._eval_batches(split, batch):
            order.append(len(y) == batch)
            (full if order[-1] else ragged).append((x, y))
        xs = tf.constant(np.stack([x for x, _ in full])) if full else None
        ys = tf.constant(np.stack([y for _, y in full])) if full else None
        return xs, ys, [(tf.constant(x), tf.constant(y)) for x, y in ragged], order

    def fit(self, epochs: int, seed: int, on_epoch=None, on_step=None, start: int = 0) -> dict:
        """Train from iteration `start` to the end of epoch `epochs`, evaluating on test and
        validation at the end of every epoch; returns the curves, counted from the start of
        training (a ticket rewound to iteration k continues at k + 1; a start inside an
        epoch trains the rest of it).
        Epoch e's data order comes from (seed, e) and this rank's shard: the same on any
        layout (seeds.py).

        on_step(global_step) lets the dense phase snapshot rewind points in iterations;
        on_epoch(epoch) lets the writer rank drain finished results while it trains.

        Divergence: an epoch whose mean train loss or whose weights are not finite ends the
        training there; its row has NaN evaluations and `diverged` (0 otherwise) is that
        epoch. The loss is the group's sum and the weights the leader's, so every rank of a
        group decides alike.
        """
        hist = {k: [] for k in ("epoch", "iteration", "train_loss", "test_loss",
                                "test_accuracy", "val_loss", "val_accuracy", "epoch_seconds")}
        spe, it, diverged = self.steps_per_epoch, start, 0
        while it < epochs * spe and not diverged:
            t0 = time.time()
            epoch = it // spe + 1
            steps = epoch * spe - it
            train_loss = self.train_epoch(seeds.derive(seed, epoch), on_step, it, steps)
            it += steps
            self.agree()
            if not (np.isfinite(train_loss) and self.finite()):
                diverged = epoch
                acc = loss = val_acc = val_loss = float("nan")
            else:
                acc, loss = self.evaluate()
                val_acc, val_loss = self.evaluate(split="val")
            for k, v in zip(hist, (epoch, it, train_loss, loss, acc, val_loss, val_acc,
                                   time.time() - t0)):
                hist[k].append(v)
            if on_epoch is not None:
                on_epoch(epoch)
        out = {k: np.asarray(v) for k, v in hist.items()}
        out["diverged"] = diverged
        return out

    def reestimate_batchnorm(self, seed: int, batches: int):
        """BatchNorm's moving statistics recomputed for the weights loaded now, as the plain
        average over `batches` training batches (at most an epoch's; in training mode, no
        update of any other weight): weights interpolated between two networks carry no
        valid statistics. A group computes them over its global batches (synchronized
        BatchNorm) or averages its ranks' (agree)."""
        layers = batchnorm_layers(self.model)
        if not layers:
            return
        batches = min(batches, self.steps_per_epoch)
        for layer in layers:
            layer.moving_mean.assign(tf.zeros_like(layer.moving_mean))
            layer.moving_variance.assign(tf.ones_like(layer.moving_variance))
        momenta = [layer.momentum for layer in layers]
        try:
            for i, (x, _) in enumerate(self.data.train_batches(seed, batches,
                                                               self.train.batch_size), 1):
                for layer in layers:      # momentum (i-1)/i: the running mean of i batches
                    layer.momentum = (i - 1) / i
                self.model(self._normalize(tf.constant(x)), training=True)
        finally:
            for layer, m in zip(layers, momenta):
                layer.momentum = m
        self.agree()

    def linear_path(self, a: np.ndarray, b: np.ndarray, alphas, seed: int,
                    batchnorm_batches: int) -> np.ndarray:
        """Evaluate the straight line between two trained networks (flat weights `a`, `b`,
        same masks) at each alpha: rows of stability.PATH_COLUMNS. BatchNorm statistics are
        re-estimated at every point, the ends included, on the same training batches."""
        shapes = [w.shape for w in self.model.weights]
        rows = []
        for alpha in alphas:
            self.model.set_weights(unflatten(stability.interpolate(a, b, float(alpha)), shapes))
            self.reestimate_batchnorm(seed, batchnorm_batches)
            acc, loss = self.evaluate()
            val_acc, val_loss = self.evaluate(split="val")
            rows.append((alpha, acc, loss, val_acc, val_loss))
        return np.asarray(rows, np.float64)

    def check_stop(self):
        """Raise Interrupted if any rank of the group was asked to stop (all decide alike)."""
        if self.stop is None:
            return
        flag = float(bool(self.stop()))
        if self.group is not None:
            flag = float(np.asarray(self.group.total(np.array([flag])))[0])
        if flag > 0:
            raise Interrupted()

    def finite(self) -> bool:
        """Every weight (BatchNorm statistics included) is finite."""
        return all(bool(np.isfinite(np.asarray(w)).all()) for w in self.model.weights)


def prunable_weights(model, prunable_idx, weights) -> dict[str, np.ndarray]:
    """{path: array} of the prunable kernels, for the pruning functions."""
    return {model.weights[i].path: weights[i] for i in prunable_idx}


def kernels_of(model, prunable_idx) -> Kernels:
    """The prunable kernels as the pruning modes see them: paths, shapes, layers."""
    return Kernels(tuple(model.weights[i].path for i in prunable_idx),
                   tuple(tuple(model.weights[i].shape) for i in prunable_idx),
                   tuple(models.layer_of(model, prunable_idx)))


def build_for(s, data, seed: int):
    """The model of the settings `s` (config.Settings) for this dataset, and its prunable
    weight indices.

    Mixed precision computes in float16 (GPUs) or bfloat16 (CPUs with AVX-512 BF16 or AMX,
    and TPUs) and keeps float32 variables (and float32 masks).
    """
    precision = s.train.mixed_precision
    keras.mixed_precision.set_global_policy(f"mixed_{precision}" if precision else "float32")
    name, options = s.model
    model = models.build(name, data.input_shape, data.num_classes, options, seed)
    return model, models.prunable(model, list(s.exclude))
