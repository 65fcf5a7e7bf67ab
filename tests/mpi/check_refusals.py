"""Many refused inputs in one job: each case runs `lth-mpi run` in this process on every rank,
as a launch would, and records what it printed and the exit code it asked for.

One mpiexec pays the TensorFlow import once for all the cases, instead of once per case. A
case that aborted the job or hung would stop this script too, so the test still sees it.

Usage: mpiexec -n 2 python -m mpi4py tests/mpi/check_refusals.py CASES.json OUT.json
CASES.json: a list of argument lists for `lth-mpi`; OUT.json (rank 0): for each case, a list
per rank of {"code": exit code, "stderr": what it wrote}.
"""
import contextlib
import io
import json
import sys
import traceback

from mpi4py import MPI

from lth_mpi import cli

cases, out = json.load(open(sys.argv[1])), sys.argv[2]
found = []
for argv in cases:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exc:
            code = exc.code
        except Exception:        # noqa: BLE001  (a traceback is a failure the test reports)
            traceback.print_exc()
            code = "exception"
    found.append(MPI.COMM_WORLD.gather({"code": code, "stderr": err.getvalue()}, root=0))
    MPI.COMM_WORLD.Barrier()     # cases never overlap, whatever a rank did
if MPI.COMM_WORLD.Get_rank() == 0:
    with open(out, "w") as f:
        json.dump(found, f)
    print("refusals OK", len(found))
