"""A group (its gradients averaged by Horovod or by mpi4py) trains to identical weights on
every rank, and pruned weights stay exactly zero after many Adam steps.

Usage: mpiexec -n <p> python -m mpi4py tests/mpi/check_data_parallel.py [GROUP_SIZE [horovod|mpi]]
"""
import hashlib
import sys

import numpy as np
from mpi4py import MPI

from lth_mpi import config, data, pruning, training
from lth_mpi.comm import reducers
from lth_mpi.comm.world import split

world = MPI.COMM_WORLD
group_size = int(sys.argv[1]) if len(sys.argv) > 1 else 2
way = sys.argv[2] if len(sys.argv) > 2 else "horovod"
cfg = config.load(raw={"model": {"name": "lenet_300_100"}, "prune": {"sparsities": [0.9]},
                       "dataset": {"name": "synthetic", "train_examples": 1024, "test_examples": 256},
                       "train": {"epochs": 3, "batch_size": 32, "optimizer": "adam",
                                 "learning_rate": 0.01},
                       "parallel": {"group_size": group_size}}, world_size=world.Get_size())
layout = split(group_size)
reducers.choose(layout, way, training.configure(layout, None))
shard = data.load(cfg["dataset"], (layout.group_rank, group_size))
model, idx = training.build_for(config.resolve(cfg), shard, seed=layout.rank)   # deliberately different inits
group = reducers.group_reducers(layout)
assert layout.allreduce == way, layout.allreduce
trainer = training.Trainer(model, shard, config.resolve(cfg).train, idx, group)

start = [np.asarray(w) for w in model.get_weights()]
flat = group.broadcast(np.concatenate([w.ravel() for w in start]).astype(np.float32))
shapes = [w.shape for w in start]
offsets = np.cumsum([0] + [w.size for w in start])
start = [flat[offsets[i]:offsets[i + 1]].reshape(shapes[i]) for i in range(len(shapes))]
kernels = training.prunable_weights(model, idx, start)
masks = list(pruning.magnitude_masks(kernels, 0.9).values())
trainer.load(start, masks)
hist = trainer.fit(3, seed=100 + layout.group)       # 96 Adam steps; one seed per group
steps = int(trainer.optimizer.iterations.numpy())
assert steps == 3 * (1024 // 32), steps

final = trainer.weights()
for i, m in zip(idx, masks):
    assert np.all(final[i][~m] == 0.0), "a pruned weight regrew"
    assert np.count_nonzero(final[i][m] != start[i][m]) > 0.9 * m.sum(), "kept weights did not train"
digest = hashlib.sha256(b"".join(w.tobytes() for w in final)).hexdigest()
in_group = layout.group_comm.allgather(digest)
assert len(set(in_group)) == 1, f"group {layout.group} diverged: {in_group}"
assert hist["test_accuracy"][-1] > 0.5, hist["test_accuracy"]
# metrics are allreduced: every rank of a group reports the same numbers
assert len(set(layout.group_comm.allgather(float(hist["test_accuracy"][-1])))) == 1
if world.Get_rank() == 0:
    print(f"data parallel OK: {world.Get_size()} ranks, groups of {group_size}, {steps} steps, "
          f"acc {hist['test_accuracy'][-1]:.3f}")
