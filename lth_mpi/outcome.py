"""A lost rank is never a success: the launcher's exit status, checked against the results file.

A batch system reports what the launcher returns, and a launcher can return 0 for a job that
lost a rank (Debian 13's MPICH 4.2 Hydra does, about one run in four). So every launch in
run/ goes through `python3 -m lth_mpi.outcome LAUNCHER ARGS...`: rank 0 notes, in the file
LTH_OUTCOME names, that a search ran, the results file it opened and `done` once the search
returned 0; when the launcher exits 0, the notes and that file's status decide. The truth is
the file: a search whose file is not `complete` did not succeed, whatever the launcher says.
A non-zero status from the launcher is passed on as it is (the ranks already said why).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile

ENV = "LTH_OUTCOME"
SI_KERNEL = 0x80    # siginfo code of a signal the kernel sent (a terminal's ^C to its group)
FORWARD = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def note(line: str) -> None:
    """Rank 0's note to the launch that started it (nothing when not started by one)."""
    path = os.environ.get(ENV)
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def judge(lines: list[str], code: int, status_of) -> tuple[int, str | None]:
    """(exit status, error line or None) of a launch, from rank 0's notes and the
    launcher's status; status_of(path) reads a results file's status."""
    if code != 0 or "run" not in lines:
        return code, None                     # failed already, or not a search: as it is
    block = lines[len(lines) - lines[::-1].index("run"):]    # the last search's notes
    output = next((l[len("results "):] for l in reversed(block) if l.startswith("results ")),
                  None)
    if output is None:                        # a dry run writes no results file
        if "done" in block:
            return 0, None
        return 1, ("the launcher exited 0, but the search never finished on rank 0: "
                   "a rank was lost or killed")
    try:
        status = status_of(output)
    except (OSError, KeyError, ValueError) as exc:
        status = f"unreadable ({exc})"
    if status == "complete":
        return 0, None
    return 1, (f"the launcher exited 0, but {output} is {status}, not complete: a rank was lost "
               "or killed; `lth-mpi status` says more, and --resume continues it")


def status_of(path: str) -> str:
    from . import results
    return results.while_running(lambda f: str(f.attrs.get("status", "unknown")), path)


def run(argv: list[str]) -> int:
    """Run the launcher with LTH_OUTCOME set, pass signals on, and judge its end. Signals
    the kernel sent to the whole process group (^C) reached the launcher already and are
    not sent twice; those sent to this process alone (kill, scancel, Slurm) are."""
    folder = os.environ.get("LTH_OUTCOME_DIR") or os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".launch")
    os.makedirs(folder, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix="launch-", suffix=".notes", dir=folder)
    os.close(fd)
    try:
        try:
            child = subprocess.Popen(argv, env=dict(os.environ, **{ENV: path}))
        except OSError as exc:
            sys.stderr.write(f"lth-mpi: error: cannot start {argv[0]}: {exc.strerror}\n")
            return 127
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARD)
        while child.poll() is None:
            info = signal.sigtimedwait(FORWARD, 0.2)
            if info is not None and info.si_code != SI_KERNEL:
                child.send_signal(info.si_signo)
        code = child.returncode if child.returncode >= 0 else 128 - child.returncode
        with open(path) as f:
            lines = f.read().splitlines()
    finally:
        os.unlink(path)
    code, error = judge(lines, code, status_of)
    if error:
        sys.stderr.write(f"lth-mpi: error: {error}\n")
    return code


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python3 -m lth_mpi.outcome LAUNCHER [ARGS...]")
    sys.exit(run(sys.argv[1:]))
