"""A long-lived 2-rank job that runs `lth-mpi` commands for the tests, one after another, in
its own processes: each command is `cli.main(argv)` on both ranks, as `python -m mpi4py -m
lth_mpi` would run it, but the launch and the TensorFlow import (seconds per rank) are paid
once for the whole suite instead of once per search (tests/mpi_helpers.lth decides which
commands come here; see Pool there).

Rank 0 takes requests on a Unix socket (blocking there, so without using a core) while rank
1 waits in a sleeping barrier; both run the command and rank 0 replies with each rank's exit
code, stdout and stderr. A command that raises would leave the other rank in a collective,
so, as under `python -m mpi4py`, it prints the traceback and aborts the job; the client then
sees the job end and reports its output.

Usage: mpiexec -n 2 python -m mpi4py tests/mpi/pool.py SOCKET
"""
import contextlib
import importlib
import io
import os
import sys
import traceback
from multiprocessing.connection import Listener

sys.path[0] = os.getcwd()   # as under `python -m lth_mpi`: this checkout's modules, tests' too
os.environ.pop("LTH_OUTCOME", None)   # many searches, each judged by its test, not the launch
from mpi4py import MPI  # noqa: E402

from lth_mpi import cli  # noqa: E402
from lth_mpi.comm.world import abort, wait_quietly  # noqa: E402

world = MPI.COMM_WORLD
listener = Listener(sys.argv[1], "AF_UNIX") if world.Get_rank() == 0 else None
importlib.import_module("lth_mpi.search")   # TensorFlow, imported while the tests go on
conn = listener.accept() if listener else None

while True:
    request = conn.recv() if conn else None
    wait_quietly()
    argv = world.bcast(request)
    if argv is None:
        break
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(argv) or 0
            except SystemExit as exc:
                code = exc.code or 0
                if not isinstance(code, int):       # sys.exit("message")
                    print(code, file=sys.stderr)
                    code = 1
    except BaseException:      # noqa: BLE001  (the other rank may be inside a collective)
        sys.__stdout__.write(out.getvalue())
        sys.__stderr__.write(err.getvalue() + traceback.format_exc())
        abort(1)
    replies = world.gather((code, out.getvalue(), err.getvalue()))
    if conn:
        conn.send(replies)
