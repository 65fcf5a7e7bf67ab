"""The grid and its assignment: every cell exactly once, at any number of groups."""
import dataclasses

import pytest

from lth_mpi import config, plan


def settings(**sections):
    """Resolved settings of a config of LeNet with these sections."""
    raw = {"model": {"name": "lenet_300_100"}, "prune": {"sparsities": [0.5]},
           "train": {"epochs": 10}, **sections}
    return config.resolve(config.load(raw=raw))


@pytest.mark.parametrize("by", ["masks", "cells"])
@pytest.mark.parametrize("groups", [1, 2, 3, 4, 7, 20])
def test_every_cell_once(by, groups):
    grid = plan.cells(5, 3, ["random_reinit"])
    assert len(grid) == 5 * 3 + 5
    parts = plan.assign(grid, groups, by)
    assert len(parts) == groups
    ids = sorted(c.id for part in parts for c in part)
    assert ids == list(range(len(grid)))
    if by == "masks":   # the design card: a group runs all rewinds of its masks
        for part in parts:
            for c in part:
                assert all(d in part for d in grid if d.mask == c.mask)


def test_names_unique_and_readable():
    grid = plan.cells(12, 2, ["random_reinit"])
    names = [c.name for c in grid]
    assert len(set(names)) == len(names)
    assert names[0] == "m00_r0_none" and names[-1] == "m11_init_random_reinit"


def test_describe_counts_trainings():
    s = settings(prune={"sparsities": [0.5, 0.8, 0.9]},
                 rewind={"points": [0, 1], "unit": "epoch", "retrain": "remaining"},
                 controls=[], parallel={"group_size": 2, "assign": "masks", "dense": "rank0"},
                 train={"epochs": 2}, output="results/run #1.h5")
    text = plan.describe(s, 4, [0.5, 0.8, 0.9], done={"m00_r0_none"})
    assert "= 6 cells" in text and "output: results/run #1.h5" in text
    assert "m00_r1_none: sparsity 0.5, rewind epoch 1, trains epochs 2-2" in text
    assert "group 0 (ranks 0-1): 3 trainings (1 already done)" in text
    assert "group 1 (ranks 2-3): 2 trainings" in text and "dense phase on rank 0" in text
    s = dataclasses.replace(s, dense_parallel=True)
    assert "dense phase data-parallel on all 4 ranks" in plan.describe(s, 4, [0.5, 0.8, 0.9])
    # a stability pair is two trainings
    s = settings(prune={"sparsities": [0.5]}, controls=["stability"],
                 parallel={"group_size": 1, "assign": "cells"})
    text = plan.describe(s, 1, [0.5], done={"m00_r0_none"})
    assert "group 0 (ranks 0-0): 2 trainings (1 already done)" in text
    dynamic = plan.describe(dataclasses.replace(s, assign="dynamic"), 1, [0.5])
    assert "1 groups take 2 tasks from a shared queue as they free up, longest first: " \
        "3 trainings" in dynamic


def test_a_ticket_rewound_to_k_trains_the_remaining_iterations():
    s = settings(rewind={"points": [0, 3, 7], "unit": "iteration", "retrain": "remaining"})
    grid = plan.cells(1, 3, ["random_reinit"])
    assert [plan.start_iteration(c, s, 10) for c in grid] == [0, 3, 7, 0]   # control: all
    s = dataclasses.replace(s, unit="epoch")
    assert [plan.start_iteration(c, s, 10) for c in grid] == [0, 30, 70, 0]
    s = dataclasses.replace(s, remaining=False)
    assert [plan.start_iteration(c, s, 10) for c in grid] == [0, 0, 0, 0]


def test_random_mask_controls_follow_every_rewind():
    grid = plan.cells(2, 3, ["random_reinit", "random_mask"])
    names = [c.name for c in grid]
    assert names[:6] == ["m00_r0_none", "m00_r1_none", "m00_r2_none",
                         "m01_r0_none", "m01_r1_none", "m01_r2_none"]
    assert names[6:8] == ["m00_init_random_reinit", "m01_init_random_reinit"]
    assert names[8:] == [f"m0{m}_r{r}_random_mask" for m in range(2) for r in range(3)]
    s = settings(rewind={"points": [0, 1, 2], "unit": "epoch", "retrain": "remaining"})
    assert plan.start_iteration(grid[9], s, 10) == 10      # m00_r1_random_mask: like the ticket
    assert plan.start_iteration(grid[6], s, 10) == 0       # reinit: all of training


def test_the_queue_hands_out_the_longest_work_first():
    sections = dict(rewind={"points": [0, 2, 1], "unit": "epoch", "retrain": "remaining"},
                    controls=["random_reinit"], train={"epochs": 3},
                    parallel={"group_size": 1, "assign": "dynamic", "dense": "rank0"},
                    output="r.h5")
    s = settings(prune={"sparsities": [0.5, 0.9], "mode": "oneshot"}, **sections)
    grid = plan.grid(s)
    order = plan.queue(grid, s, steps_per_epoch=10)
    lengths = [sum(plan.length(c, s, 10) for c in t) for t in order]
    assert lengths == sorted(lengths, reverse=True) and lengths[0] == 30 and lengths[-1] == 10
    assert sorted(c.id for t in order for c in t) == [c.id for c in grid]   # each once
    assert all(len(t) == 1 for t in order) and plan.assignment(s) == "dynamic"
    done = {"m00_r0_none", "m01_r2_none"}
    left = [c.name for t in plan.queue(grid, s, 10, done) for c in t]
    assert not done & set(left) and len(left) == len(grid) - 2
    # iterative pruning: a task is a whole chain's unfinished levels, in order
    s = settings(prune={"mode": "iterative", "levels": 2, "rate": 0.2}, **sections)
    grid = plan.grid(s)
    chains = plan.queue(plan.passes(grid, s)[0][0], s, 10, {"m00_r0_none"})
    assert [len(t) for t in chains][0] == 2 and all(
        [c.mask for c in t] == sorted(c.mask for c in t) for t in chains)
    assert chains[-1][0].rewind == 1 and len(chains[-1]) == 2   # shortest chain last
    assert plan.assignment(dataclasses.replace(s, assign="masks")) == "chains"
    text = plan.describe(s, 2, [0.2, 0.36], steps_per_epoch=10)
    assert "2 groups take 3 tasks from a shared queue as they free up, longest first" in text
    # then random_reinit, one per (level, rewind point), each cell its own task
    later = text[text.index("then, once the first pass has pruned their masks"):]
    assert "2 groups take 6 tasks" in later and "mask of the epoch 2 ticket" in later
