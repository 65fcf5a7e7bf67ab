"""Command line: `lth-mpi run CONFIG.yaml [--set k=v ...] [--output PATH] [--resume] [--dry-run]`
`lth-mpi status RESULTS.h5`, `lth-mpi export RESULTS.h5 CELL --format tflite
[--quantize float16|int8]` and `lth-mpi export RESULTS.h5 --format tensorboard DIR` (no MPI
needed).

Usage: mpiexec -n <P> python -m mpi4py -m lth_mpi run CONFIG.yaml
       srun -n <P> python -m mpi4py -m lth_mpi run CONFIG.yaml
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")   # keep TensorFlow's start-up chatter out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lth-mpi", description="Lottery-ticket search over MPI ranks.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run (or resume) a search")
    r.add_argument("config", help="YAML config (examples in run/configs/)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=3 (repeatable)")
    r.add_argument("--output", help="results HDF5 path (overrides the config's output)")
    r.add_argument("--resume", action="store_true",
                   help="continue an interrupted results file, skipping finished cells")
    r.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    s = sub.add_parser("status", help="how a search stands, from its results file (no MPI)")
    s.add_argument("results", help="results HDF5 file, running or finished")
    e = sub.add_parser("export", help="a cell's trained model as a TensorFlow Lite file, or "
                                      "every cell's curves for TensorBoard (no MPI)")
    e.add_argument("results", help="results HDF5 file (tflite: written with "
                                   "results.keep_weights)")
    e.add_argument("cell", help="tflite: the cell, e.g. m02_r0_none, or dense; tensorboard: "
                                "the directory to write")
    e.add_argument("--format", default="tflite", help="tflite | tensorboard")
    e.add_argument("--quantize", default="none", help="none | float16 | int8 (full integer)")
    e.add_argument("--output", help="file to write (default RESULTS-CELL[-QUANT].tflite)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.command == "status":
        from . import status
        return status.main(args.results)
    if args.command == "export":
        from . import export
        return export.main(args.results, args.cell, args.format, args.quantize, args.output)
    from . import config, outcome   # after argparse, so --help needs no MPI
    from .comm import world
    if world.rank() == 0:
        outcome.note("run")     # to the launch script, which judges the job's end by it
    literal = {"output": args.output} if args.output else {}   # a path, never YAML
    cfg, error = None, None
    try:
        cfg = config.load(args.config, args.set, world_size=world.size(), literal=literal)
    except config.ConfigError as exc:
        error = str(exc)
    error = world.agree(error)   # a file missing on one node fails every rank alike
    if error:
        world.fail(error)
    from . import search   # TensorFlow's import (seconds) only once the config is good
    code = search.run(cfg, resume=args.resume, dry_run=args.dry_run)
    if code == 0 and world.rank() == 0:
        outcome.note("done")
    return code


def console() -> None:
    """Entry point of the `lth-mpi` script: without `python -m mpi4py`, an exception on one
    rank would leave the others waiting in a collective, so abort the whole job instead."""
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        from lth_mpi.comm import world
        world.abort(1)
