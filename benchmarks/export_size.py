"""How small a ticket ships: TFLite size raw and gzipped, and accuracy in the interpreter, for
the dense float32 network and the kept ticket nearest a sparsity as float32, float16 and int8,
all exported from one results file in one run (prints, asserts nothing).

The goal (issue 10): at 90% sparsity the int8 ticket, gzipped, is at most 1/10 of the dense
float32 model, with test accuracy within 0.5 points of the unquantized ticket.

Usage: python benchmarks/export_size.py [RESULTS.h5] [--sparsity 0.9]
Without a file it first runs the demo search with results.keep_weights: best
(run/configs/demo.yaml through run/mpiexec.sh on 2 ranks, a few minutes on 2 cores).
"""
import argparse
import os
import subprocess
import tempfile

from harness import ROOT, search_command

from lth_mpi import export, results


def run_demo(out: str) -> None:
    cmd = search_command(2, "run/configs/demo.yaml", out, "--set", "results.keep_weights=best")
    print("benchmark: " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="?", help="results file written with keep_weights")
    p.add_argument("--sparsity", type=float, default=0.9)
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="lth-export-")
    path = args.results or os.path.join(tmp, "demo.h5")
    if not args.results:
        run_demo(path)
    with_weights = [c for c in results.read_cells(path)
                    if c["name"] in kept_names(path) and c["control"] == "none"]
    if not with_weights:
        raise SystemExit(f"{path}: no cell has kept weights (results.keep_weights: best|all)")
    cell = min(with_weights, key=lambda c: abs(c["sparsity_realized"] - args.sparsity))
    rows = [export.export(path, "dense", "none", os.path.join(tmp, "dense.tflite"))]
    for q in export.QUANTIZE:
        rows.append(export.export(path, cell["name"], q, os.path.join(tmp, f"ticket-{q}.tflite")))
    dense, ticket, int8 = rows[0], rows[1], rows[-1]
    print(f"\n{path}: ticket {cell['name']} at {100 * cell['sparsity_realized']:.1f}% sparsity")
    print(f"{'model':<28}{'KiB':>9}{'gzipped KiB':>13}{'TFLite acc':>12}{'own acc':>9}")
    for r, label in zip(rows, ["dense float32"] + [f"ticket {q if q != 'none' else 'float32'}"
                                                   for q in export.QUANTIZE]):
        print(f"{label:<28}{r['bytes'] / 1024:>9.1f}{r['gzipped'] / 1024:>13.1f}"
              f"{100 * r['tflite_accuracy']:>11.2f}%{100 * r['cell_accuracy']:>8.2f}%")
    print(f"int8 ticket gzipped / dense float32: {int8['gzipped'] / dense['bytes']:.3f} of its "
          f"file, {int8['gzipped'] / dense['gzipped']:.3f} of it gzipped (goal <= 0.1)")
    print(f"int8 ticket accuracy - float32 ticket: "
          f"{100 * (int8['tflite_accuracy'] - ticket['tflite_accuracy']):+.2f} points in TFLite, "
          f"{100 * (int8['tflite_accuracy'] - cell['final_test_accuracy']):+.2f} against the "
          f"cell's own (goal within 0.5)")


def kept_names(path: str) -> set:
    import h5py
    with h5py.File(path, "r", locking=False) as f:
        return {n for n, g in f["cells"].items() if "weights" in g}


if __name__ == "__main__":
    main()
