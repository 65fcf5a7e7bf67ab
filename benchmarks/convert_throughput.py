"""Conversion throughput of the image-tree converter at 1 and 2 ranks (prints, asserts nothing).

A synthetic ImageNet-style tree is generated once in /tmp: JPEGs of ImageNet's typical sizes
(about 500 x 375, smooth content plus texture, quality 90), in class folders, with a val/
in class folders. Each rank count converts it from scratch to --size with mpiexec; the wall
time of the whole job (start-up, scan, decode, write, index) gives images/s.

Usage: python benchmarks/convert_throughput.py [--images 2000] [--ranks 1 2] [--size 64]
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
from PIL import Image

from harness import ROOT
TREE = "/tmp/lth_bench_tree"


def make_tree(n: int, classes: int = 50) -> None:
    stamp = os.path.join(TREE, f".complete-{n}")
    if os.path.exists(stamp):
        return
    shutil.rmtree(TREE, ignore_errors=True)
    rng = np.random.default_rng(0)
    for i in range(n + n // 10):
        split, k = ("train", i) if i < n else ("val", i - n)
        cls = f"n{k % classes:08d}"
        folder = os.path.join(TREE, split, cls)
        os.makedirs(folder, exist_ok=True)
        w, h = int(rng.integers(400, 600)), int(rng.integers(300, 450))
        coarse = rng.integers(0, 256, (h // 25 + 1, w // 25 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR)
        texture = rng.integers(0, 24, (h, w, 3), dtype=np.uint8)
        Image.fromarray(np.asarray(img) + texture).save(
            os.path.join(folder, f"{cls}_{k:06d}.JPEG"), quality=90)
    open(stamp, "w").close()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2000, help="training images (val: +10%%)")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--size", type=int, default=64)
    args = p.parse_args()
    t = time.perf_counter()
    make_tree(args.images)
    files = sum(len(f) for _, _, f in os.walk(TREE)) - 1
    mb = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(TREE) for f in fs) / 1e6
    print(f"tree: {files} JPEGs, {mb:.0f} MB in {TREE} (ready in {time.perf_counter() - t:.0f}s); "
          f"{os.cpu_count()} CPUs")
    for n in args.ranks:
        out = f"/tmp/lth_bench_convert_{n}"
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        t = time.perf_counter()
        proc = subprocess.run(["bash", os.path.join(ROOT, "run", "mpiexec.sh"), "-n", str(n),
                               sys.executable, "-m", "mpi4py", "-m", "data_prep", "imagenet",
                               TREE, f"{out}/imagenet.h5", "--size", str(args.size),
                               "--shard-size", "250"],
                              capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t
        if proc.returncode:
            print(f"{n} rank(s): failed\n{proc.stderr}")
            continue
        summary = proc.stdout.strip().splitlines()[-1]
        decoded = int(re.search(r"(\d+) files converted", summary).group(1))
        print(f"{n} rank(s): {decoded} images in {wall:.1f}s wall = {decoded / wall:.0f} images/s "
              f"({decoded / wall / n:.0f} per rank)  [{summary.split('; ')[-1]}]")


if __name__ == "__main__":
    main()
