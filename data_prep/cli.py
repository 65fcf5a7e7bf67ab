"""Command line: convert a dataset into the training format, at any number of ranks.

Usage: python -m data_prep {mnist,fashion_mnist,cifar10,cifar100} SRC DST.h5
       mpiexec -n P python -m mpi4py -m data_prep imagenet SRC DST.h5 [--size 64]

Small sources are converted by rank 0 into one file (other ranks wait). An image tree is cut
into shards of --shard-size files, dealt to ranks round-robin; each rank writes its shards
into DST's folder `<DST stem>.shards/`, skipping shards already complete and verified, and
rank 0 then writes DST, the index over them. Any bad input gives one `data_prep: error:` line
on every rank and a non-zero exit: ranks share their errors before anyone acts on them.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from lth_mpi.comm import world
from lth_mpi.data import h5format

from . import cifar, idx, imagenet


class Parser(argparse.ArgumentParser):
    def error(self, message):
        """One line, as for every other error (argparse's usage text would repeat per rank)."""
        sys.stderr.write(f"data_prep: error: {message}\n")
        sys.stderr.flush()
        world.wait_quietly()      # every rank's line is out before the first exit aborts the job
        sys.exit(2)


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="data_prep", description="Convert datasets to lth-mpi's HDF5 training "
                                             "format (docs/data.md).")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, src in (("mnist", "directory of the four IDX files (.gz or raw)"),
                      ("fashion_mnist", "directory of the four IDX files (.gz or raw)"),
                      ("cifar10", "the binary or python release: its folder or .tar.gz"),
                      ("cifar100", "the binary or python release: its folder or .tar.gz")):
        s = sub.add_parser(name, help=f"convert {name}")
        s.add_argument("src", help=src)
        s.add_argument("dst", help="output HDF5 file (replaced if it exists)")
    s = sub.add_parser("imagenet", help="convert an image tree train/<class>/*, val/ (in "
                                        "parallel under mpiexec)")
    s.add_argument("src", help="folder with train/<class>/ and val/ (class folders, or flat "
                               "with a labels file)")
    s.add_argument("dst", help="output index file; shards go to <dst stem>.shards/")
    s.add_argument("--size", type=int, default=64, help="output side in pixels (default 64)")
    s.add_argument("--shard-size", type=int, default=5000,
                   help="source files per shard (default 5000); independent of the rank count")
    s.add_argument("--seed", type=int, default=0, help="seed of the training files' shuffle")
    s.add_argument("--val-labels", help=f"labels file for a flat val/: lines 'filename class' "
                                        f"(default SRC/{imagenet.LABELS_FILE})")
    return p


def fail(message: str) -> int:
    """Every rank (all know the error) writes its one line; the exit status."""
    return world.fail(message, prog="data_prep", leave=False)


def say(message: str) -> None:
    if world.rank() == 0:
        print(f"data_prep: {message}", flush=True)


def check_dst(dst: str) -> None:
    parent = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(parent):
        raise ValueError(f"{dst}: directory {parent} does not exist")
    if os.path.isdir(dst):
        raise ValueError(f"{dst}: is a directory; give the output file's path")


def convert_small(args) -> int:
    """Rank 0 converts into one file; every rank learns the outcome."""
    def work():
        check_dst(args.dst)
        if args.command in ("mnist", "fashion_mnist"):
            out = idx.convert(args.src, args.command)
        else:
            out = cifar.convert(args.src, args.command)
        h5format.write_file(args.dst, args.command, out["splits"], out["class_names"],
                            out["source"], out["sources"], extra_attrs=out.get("extra_attrs"))
        return {s: len(out["splits"][s]["labels"]) for s in h5format.SPLITS}

    counts, error = world.share(work)
    if error:
        return fail(error)
    say(f"{args.command}: {counts['train']} train + {counts['test']} test images "
               f"-> {args.dst}")
    return 0


def shard_folder(dst: str) -> str:
    stem = dst[:-3] if dst.endswith(".h5") else dst
    return stem + ".shards"


def convert_tree(args) -> int:
    t0 = time.time()
    folder = shard_folder(args.dst)

    def scan():
        check_dst(args.dst)
        if args.size < 1:
            raise ValueError(f"--size: must be >= 1, got {args.size}")
        if args.shard_size < 1:
            raise ValueError(f"--shard-size: must be >= 1, got {args.shard_size}")
        tree = imagenet.scan(args.src, args.val_labels)
        os.makedirs(folder, exist_ok=True)
        return tree

    tree, error = world.share(scan)
    if error:
        return fail(error)
    shards = imagenet.plan(tree, args.shard_size, args.seed)
    width = imagenet.path_width(tree)
    say(f"imagenet: {len(tree.train)} train + {len(tree.test)} val images "
               f"({tree.test_layout}), {len(tree.classes)} classes, {len(shards)} shards over "
               f"{world.size()} rank(s)")

    done = reused = 0
    error = None
    for shard in shards[world.rank()::world.size()]:
        path = os.path.join(folder, shard.name + ".h5")
        key = imagenet.plan_key(shard, args.size, width)
        try:
            if h5format.shard_is_complete(path, key):
                reused += 1
                continue
            t = time.time()
            arrays, attrs = imagenet.convert_shard(tree.root, shard, args.size, width)
            h5format.write_shard(path, arrays, attrs, key)
            done += len(shard.files)
            print(f"data_prep: [rank {world.rank()}] {shard.name}: {len(arrays['labels'])} "
                  f"images, {len(shard.files) - len(arrays['labels'])} skipped, "
                  f"{time.time() - t:.1f}s", flush=True)
        except (OSError, ValueError) as exc:
            error = f"{path}: {exc}"
            break
    error = world.agree(error)
    if error:
        return fail(error)
    done, reused = world.total(done), world.total(reused)

    def index():
        paths = {split: [os.path.join(folder, s.name + ".h5") for s in shards if s.split == split]
                 for split in h5format.SPLITS}
        sources, skipped = imagenet.summarize(paths)
        options = {"size": args.size, "shard_size": args.shard_size, "seed": args.seed,
                   "decoder": imagenet.DECODER, "test_layout": tree.test_layout}
        h5format.write_index(args.dst, paths, "imagenet", tree.classes, "image tree",
                             sources, skipped, options)
        return len(skipped)

    n_skipped, error = world.share(index)
    if error:
        return fail(error)
    seconds = time.time() - t0
    say(f"imagenet: {len(shards) - reused} shards written, {reused} reused, "
               f"{n_skipped} images skipped -> {args.dst}; {done} files converted in "
               f"{seconds:.1f}s ({done / max(seconds, 1e-9):.0f} files/s)")
    return 0


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.command == "imagenet":
        return convert_tree(args)
    return convert_small(args)
