"""One model per cell at any group size, for a BatchNorm network (ResNet-8, real Fashion-MNIST).

Run on 2 ranks: a group of 2 trains one cell without and with synchronized BatchNorm and must
end every epoch with bit-identical weights and moving statistics on both ranks, through
Horovod (the grid's groups) and through mpi4py (the data-parallel dense phase); then groups
of one train the same cell (G = 1, with and without sync, and with sync on batches whose
examples are reversed, the summation-order reference), rank 0 two of them and rank 1 one.
Curves are written to OUT.npz for the test to compare.

Usage: mpiexec -n 2 python -m mpi4py tests/mpi/check_batchnorm.py OUT.npz
"""
import hashlib
import sys

import numpy as np
from mpi4py import MPI

from lth_mpi import config, data, pruning, seeds, training
from lth_mpi.comm import reducers
from lth_mpi.comm.world import split, wait_quietly

out = sys.argv[1]
world = MPI.COMM_WORLD
assert world.Get_size() == 2


def cfg_for(sync, group_size):
    return config.load(raw={
        "model": {"name": "resnet", "width": 8, "depth": 8}, "prune": {"sparsities": [0.5]},
        "dataset": {"name": "fashion_mnist", "train_examples": 2048, "test_examples": 1000,
                    "validation_examples": 1000},
        "train": {"epochs": 2, "batch_size": 128, "optimizer": "sgd", "learning_rate": 0.005,
                  "sync_batchnorm": sync, "xla": False},
        "parallel": {"group_size": group_size}})


def digest(trainer):
    w = trainer.weights()
    return hashlib.sha256(b"".join(a.tobytes() for a in w)).hexdigest()


class Reversed:
    """The same global batches with their examples in reverse order: one rank, the same
    arithmetic but for the order of summation (the reference for the tolerance)."""

    def __init__(self, d):
        self.d = d

    def __getattr__(self, name):
        return getattr(self.d, name)

    def train_batches(self, *args):
        return ((x[::-1], y[::-1]) for x, y in self.d.train_batches(*args))


def train(cfg, shard, group, check=None, reverse=False):
    d = data.load(cfg["dataset"], shard)
    d = Reversed(d) if reverse else d
    model, idx = training.build_for(config.resolve(cfg), d, seed=3)
    trainer = training.Trainer(model, d, config.resolve(cfg).train, idx, group)
    start = [np.asarray(w) for w in model.get_weights()]
    masks = list(pruning.magnitude_masks(training.prunable_weights(model, idx, start), 0.5).values())
    trainer.load(start, masks)
    hist = trainer.fit(2, seeds.derive(0, seeds.CELL, 0), on_epoch=check and (lambda e: check(trainer)))
    return hist, trainer


layout = split(2)
training.configure(layout, 1)
group = reducers.init_horovod(layout)
found = {}
for sync in (False, True):
    checked = []

    def check(trainer):
        mine = digest(trainer)
        both = world.allgather(mine)
        assert both[0] == both[1], f"sync={sync}: ranks differ after an epoch"
        stats = np.concatenate([np.asarray(v).ravel() for v in trainer.statistics])
        assert np.all(np.isfinite(stats)) and np.ptp(stats) > 0
        checked.append(mine)
    hist, trainer = train(cfg_for(sync, 2), (layout.group_rank, 2), group, check)
    assert len(checked) == 2 and len(trainer.statistics) == 2 * 7, len(trainer.statistics)
    found[f"g2_sync{int(sync)}"] = hist["test_accuracy"]
    found[f"g2_sync{int(sync)}_loss"] = hist["train_loss"]
    found[f"g2_sync{int(sync)}_weights"] = np.concatenate([w.ravel() for w in trainer.weights()])

# the data-parallel dense phase: the world as one group, through mpi4py instead of Horovod
world_group = reducers.mpi_reducers(layout.world)
for sync in (False, True):
    checked = []

    def check(trainer):
        both = world.allgather(digest(trainer))
        assert both[0] == both[1], f"world sync={sync}: ranks differ after an epoch"
        checked.append(both[0])
    hist, trainer = train(cfg_for(sync, 2), (layout.rank, 2), world_group, check)
    assert len(checked) == 2
    found[f"world_sync{int(sync)}_weights"] = np.concatenate([w.ravel() for w in trainer.weights()])

# groups of one, side by side (rank 0 two runs, rank 1 one: a cell's numbers do not depend on
# the rank that trains it)
alone = {}
for name, sync, reverse in ([("g1_sync1", True, False), ("g1rev_sync1", True, True)]
                            if layout.rank == 0 else [("g1_sync0", False, False)]):
    hist, trainer = train(cfg_for(sync, 1), (0, 1), None, reverse=reverse)
    alone[name] = hist["test_accuracy"]
    alone[f"{name}_loss"] = hist["train_loss"]
    alone[f"{name}_weights"] = np.concatenate([w.ravel() for w in trainer.weights()])
wait_quietly()          # rank 1 finishes first: it must not spin in the gather
for part in world.gather(alone) or []:   # None on rank 1
    found.update(part)
if layout.rank == 0:
    np.savez(out, **found)
    print("batchnorm OK", {k: v for k, v in found.items() if "weights" not in k})
