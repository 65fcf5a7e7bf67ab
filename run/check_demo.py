"""Rerun the README's demo and compare the table it prints with the README's, digit by digit.

The README shows the demo's final accuracy table; it is a measured result, and the code (or
TensorFlow) can move it. This reruns exactly what `run/demo.sh` runs (4 ranks, the demo
config, into a temporary file), reads the table from the file the run wrote, and compares
its lines with the README's "The demo" block. Exit 0 if they agree, 1 with both tables and
the differing lines if not, 2 if the run itself fails. Not a test: a demo run takes minutes.

Usage: python run/check_demo.py [--np 4] [--readme README.md]
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROW = re.compile(r"^\s*(dense test accuracy:|sparsity\s+remain|\d\.\d{3}\s+\d)")


def readme_table(path: str) -> list[str]:
    """The table lines of the first code block under '## The demo'."""
    text = open(path).read()
    start = text.index("## The demo")
    block = text[text.index("```", start) + 3:]
    block = block[:block.index("```")]
    rows = [line.rstrip() for line in block.splitlines() if ROW.match(line)]
    if not rows:
        raise SystemExit(f"check_demo: error: no demo table in {path}'s '## The demo' block")
    return rows


def demo_table(np_: int, out: str) -> list[str]:
    """Run the demo into `out`; its table, as lth-mpi prints it at the end."""
    cmd = ["bash", os.path.join(ROOT, "run", "mpiexec.sh"), "-n", str(np_), sys.executable,
           "-m", "mpi4py", "-m", "lth_mpi", "run", os.path.join(ROOT, "run", "configs",
                                                               "demo.yaml"), "--output", out]
    print("check_demo: " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-2000:])
        raise SystemExit(2)
    sys.path.insert(0, ROOT)
    from lth_mpi import results
    return [line.rstrip() for line in results.accuracy_table(out).splitlines()
            if ROW.match(line)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--np", type=int, default=4, help="ranks, as run/demo.sh (default 4)")
    p.add_argument("--readme", default=os.path.join(ROOT, "README.md"))
    args = p.parse_args()
    want = readme_table(args.readme)
    with tempfile.TemporaryDirectory() as tmp:
        got = demo_table(args.np, os.path.join(tmp, "demo.h5"))
    if got == want:
        print("check_demo: the demo prints the README's table:\n" + "\n".join(got))
        return 0
    print("check_demo: the demo's table differs from the README's")
    print("README:\n" + "\n".join(want) + "\nthis run:\n" + "\n".join(got))
    for a, b in zip(want, got):
        if a != b:
            print(f"  README: {a}\n  run:    {b}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
