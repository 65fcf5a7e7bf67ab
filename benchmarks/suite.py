"""Is the test suite faster? `pytest tests` at two commits, side by side in one run: each in a
clean checkout of its own (a git worktree sharing this checkout's environment, with
PYTHONPATH set so that every process, mpiexec's ranks too, imports that checkout's code),
in alternating order round by round so that a machine getting busier or quieter favours
neither. Prints each wall time and the ratio; asserts nothing.

Goal (issue 11 part 8): the suite in <= 60% of its time when the issue was filed.

Usage: python benchmarks/suite.py BASE [NEW] [--rounds 1] [--pytest "-x -q"]
       (NEW defaults to HEAD; commits as git names them)
"""
import argparse
import os
import re
import shlex
import statistics
import subprocess
import tempfile
import time

from harness import ROOT


def checkout(commit: str, where: str) -> str:
    path = os.path.join(where, commit.replace("/", "_"))
    subprocess.run(["git", "worktree", "add", "--detach", "-f", path, commit], cwd=ROOT,
                   check=True, capture_output=True)
    os.symlink(os.path.join(ROOT, ".venv"), os.path.join(path, ".venv"))
    return path


def suite(path: str, pytest_args: list[str]) -> tuple[float, str]:
    """(wall seconds, pytest's last line) of the whole suite in checkout `path`."""
    cmd = (". run/env.sh && TF_CPP_MIN_LOG_LEVEL=2 python3 -m pytest tests -p no:cacheprovider "
           + " ".join(map(shlex.quote, pytest_args)))
    t0 = time.time()
    proc = subprocess.run(["bash", "-c", cmd], cwd=path, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=path))
    wall = time.time() - t0
    last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    return wall, re.sub(r"=+", "", last).strip()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base")
    p.add_argument("new", nargs="?", default="HEAD")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--pytest", default="-q", help="pytest options, one string")
    args = p.parse_args()
    where = tempfile.mkdtemp(prefix="lth-suite-")
    commits = [args.base, args.new]
    paths = {c: checkout(c, where) for c in commits}
    walls = {c: [] for c in commits}
    try:
        for r in range(args.rounds):
            for c in (commits if r % 2 == 0 else commits[::-1]):
                wall, last = suite(paths[c], shlex.split(args.pytest))
                walls[c].append(wall)
                print(f"round {r + 1}  {c:>12}  {wall:7.1f} s  {last}", flush=True)
    finally:
        for path in paths.values():
            subprocess.run(["git", "worktree", "remove", "--force", path], cwd=ROOT,
                           capture_output=True)
    base, new = (statistics.median(walls[c]) for c in commits)
    print(f"\nsuite at {args.new} / at {args.base} = {new / base:.3f}  "
          f"({new:.0f} s / {base:.0f} s, median of {args.rounds})")


if __name__ == "__main__":
    main()
