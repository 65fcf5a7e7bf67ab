"""Record a fixed set of searches, or compare two recordings bit for bit.

A change meant to leave behaviour alone (a redesign, a refactor) is checked by recording the
set at the commit before it and at the commit after, then comparing: every dataset's bytes
and every attribute must be equal, except what depends on when and where a job ran (wall
times, heartbeats, pids, which group took a cell from the queue). Not a test: the set takes
about ten minutes on two cores.

Usage: python run/same_results.py record DIR      (the runs, with the code of this checkout)
       python run/same_results.py compare DIR_A DIR_B
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = "run/configs/demo.yaml"
TINY = "tests/configs/tiny_fashion.yaml"

# name -> (ranks, config, extra options, environment); a resume is two runs into one file
RUNS = {
    "demo_n1": (1, DEMO, ["--set", "parallel.group_size=1"], {}),
    "demo_n4": (4, DEMO, [], {}),
    "imp": (2, "run/configs/imp_lenet_fashion.yaml", ["--set", "prune.levels=6"], {}),
    "gradual": (2, "run/configs/gradual_lenet_fashion.yaml", [], {}),
    "replicates": (4, DEMO, ["--set", "seeds=[0,1]", "--set", "train.epochs=2",
                             "--set", "rewind.points=[0,1]"], {}),
    "resume": (2, TINY, [], {"LTH_FAULT": "exit:cell-curves:2"}),
}

# What depends on when, where and by which process a job ran, not on what it computed.
VOLATILE_ATTRS = {"created", "heartbeat", "job_started", "hosts", "ranks", "t_start", "t_end",
                  "seconds", "group", "t0"}
# Every run writes here first (the config, path included, is stored in the file), then moves.
SCRATCH = "/tmp/lth-same-results"
VOLATILE_DATASETS = {"epoch_seconds", "timings"}


def run(ranks: int, config: str, out: str, extra: list[str], env: dict) -> int:
    cmd = ["bash", "run/mpiexec.sh", "-n", str(ranks), "python3", "-m", "mpi4py", "-m",
           "lth_mpi", "run", config, "--output", out, *extra]
    print("same_results: " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, env={**os.environ, **env}).returncode


def record(where: str) -> int:
    os.makedirs(where, exist_ok=True)
    os.makedirs(SCRATCH, exist_ok=True)
    for name, (ranks, config, extra, env) in RUNS.items():
        out = os.path.join(SCRATCH, name + ".h5")
        if os.path.exists(out):
            os.remove(out)
        code = run(ranks, config, out, extra, env)
        if env:  # the injected fault stopped it; now the resume
            code = run(ranks, config, out, [*extra, "--resume"], {})
        if code != 0:
            print(f"same_results: error: {name} exited {code}", file=sys.stderr)
            return 2
        os.replace(out, os.path.join(where, name + ".h5"))
    return 0


def differences(a_path: str, b_path: str) -> list[str]:
    """Every object, attribute and byte that differs, as readable lines."""
    import h5py
    import numpy as np

    out: list[str] = []

    def attrs(where: str, a, b) -> None:
        for key in sorted(set(a.attrs) | set(b.attrs)):
            if key in VOLATILE_ATTRS:
                continue
            if key not in a.attrs or key not in b.attrs:
                out.append(f"{where}: attribute {key} only in one file")
                continue
            va, vb = np.asarray(a.attrs[key]), np.asarray(b.attrs[key])
            if va.shape != vb.shape or va.tobytes() != vb.tobytes():
                out.append(f"{where}: attribute {key}: {a.attrs[key]!r} != {b.attrs[key]!r}")

    def walk(where: str, a, b) -> None:
        attrs(where, a, b)
        if isinstance(a, h5py.Dataset):
            if a.dtype != b.dtype or a.shape != b.shape or a[()].tobytes() != b[()].tobytes():
                out.append(f"{where}: data differs")
            return
        for key in sorted(set(a) | set(b)):
            if key in VOLATILE_DATASETS:
                continue
            if key not in a or key not in b:
                out.append(f"{where}/{key}: only in one file")
                continue
            walk(f"{where}/{key}", a[key], b[key])

    with h5py.File(a_path, "r") as a, h5py.File(b_path, "r") as b:
        walk("", a, b)
    return out


def compare(a_dir: str, b_dir: str) -> int:
    bad = 0
    for name in RUNS:
        diff = differences(os.path.join(a_dir, name + ".h5"), os.path.join(b_dir, name + ".h5"))
        print(f"same_results: {name}: " + ("identical" if not diff else
                                            f"{len(diff)} differences"))
        for line in diff[:20]:
            print("    " + line)
        bad += bool(diff)
    return 1 if bad else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    sub.add_parser("record").add_argument("dir")
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    args = p.parse_args()
    return record(args.dir) if args.what == "record" else compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
