"""Command line: `python -m analysis report RESULTS.h5 --out DIR` and
`python -m analysis scaling RESULTS_P1.h5 RESULTS_P2.h5 ... [--out DIR]`.

Problems with the input are one line `analysis: error: ...` and exit code 2, no traceback.
"""
from __future__ import annotations

import argparse
import os
import sys

from . import AnalysisError


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="analysis",
                                description="Figures and tables from lth-mpi results files.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("report", help="figures and a summary of one results file")
    r.add_argument("results", help="results HDF5 file (finished or interrupted)")
    r.add_argument("--out", help="output directory (default: <results name>_report)")
    r.add_argument("--tolerance", type=float, default=None,
                   help="winning tickets: accuracy at most this far below the dense network's, "
                        "as a fraction (default 0.01 = 1 point; with seeds, the dense "
                        "networks' sd over the seeds)")
    r.add_argument("--metric", choices=("final", "best"), default="final",
                   help="accuracy after the last epoch (final) or at the early-stop point (best)")
    r.add_argument("--format", choices=("md", "html"), default="md", help="summary format")
    r.add_argument("--sparsities", type=_floats,
                   help="learning curves at these sparsities, e.g. 0.5,0.9 (default: up to 3)")
    r.add_argument("--window", type=int,
                   help="dense band over its last WINDOW epochs (default: last half, >= 2)")
    r.add_argument("--job", type=int, help="timeline of this job of a resumed file (default: last)")
    r.add_argument("--group-efficiency", type=float, default=1.0,
                   help="data-parallel efficiency assumed for a cluster group (projection)")
    r.add_argument("--mixed-batchnorm", action="store_true",
                   help="report a file whose dense net and cells took BatchNorm statistics "
                        "over different batches (refused otherwise), marked as such")
    s = sub.add_parser("scaling", help="strong scaling: runs of one config at several P")
    s.add_argument("results", nargs="+", help="finished results files, one per P")
    s.add_argument("--out", default=".", help="directory for scaling.png and scaling.txt")
    s.add_argument("--group-efficiency", type=float, default=1.0,
                   help="data-parallel efficiency assumed for a cluster group (projection)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.group_efficiency <= 0:
            raise AnalysisError(f"--group-efficiency: must be > 0, got {args.group_efficiency}")
        if args.command == "report":
            from .report import report
            out_dir = args.out or os.path.splitext(os.path.basename(args.results))[0] + "_report"
            out = report(args.results, out_dir, args.tolerance, args.metric, args.format,
                         args.sparsities, args.window, args.job, args.group_efficiency,
                         args.mixed_batchnorm)
            res = out["results"]
            print(f"analysis: {len(res.runs)} of {len(res.expected)} cells finished"
                  + (f", {len(out['missing'])} missing" if out["missing"] else ""))
            if out["winners"]:
                w = out["winners"][0]
                print(f"analysis: winning ticket {w['name']}: {100 * (1 - w['sparsity']):.3g}% "
                      f"of weights, {args.metric} accuracy "
                      f"{100 * w[args.metric + '_test_accuracy']:.2f}%")
            if "utilization" in out:
                print(f"analysis: utilization {100 * out['utilization']:.1f}% (grid "
                      f"{100 * out['grid_utilization']:.1f}%), serial fraction "
                      f"{100 * out['serial']['total'] / out['wall']:.1f}%")
            print(f"analysis: wrote {out['summary']} and {len(out['figures'])} figures")
        else:
            from .scaling import study
            out = study(args.results, args.out, args.group_efficiency)
            sys.stdout.write(out["text"])
            print(f"analysis: wrote {out['figure']} and "
                  f"{os.path.join(args.out, 'scaling.txt')}")
    except AnalysisError as exc:
        sys.stderr.write(f"analysis: error: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
