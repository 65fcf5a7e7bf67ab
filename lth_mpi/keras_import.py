"""Keras and TensorFlow, imported without matplotlib and without TensorFlow's start-up chatter.

Keras imports matplotlib.pyplot at its own import, for an image-gallery helper this program
never calls: 0.5-0.9 s of every rank's start-up here, and hundreds of files read by every
rank from a cluster's shared filesystem. matplotlib is hidden while Keras imports (Keras
then sets that helper's `plt` to None) and importable again afterwards, for the analysis.

TensorFlow 2.19 and later log at load time, before TF_CPP_MIN_LOG_LEVEL is read (absl's
"before absl::InitializeLog()" messages: oneDNN and CPU-feature notices, four lines per rank
per start). What the C++ side writes to stderr during the import is held and written back
without the INFO (level >= 1) and WARNING (level >= 2) lines that TF_CPP_MIN_LOG_LEVEL asks
to hide, so a job's errors stay one line per rank. Everything else passes through.
"""
import os
import re
import sys
import tempfile

# absl's log line prefix, by severity: I0000 00:00:1796293107.510344   27752 port.cc:153] ...
_LOG_LINE = re.compile(rb"^([IWEF])\d{4} \d\d:\d\d:[\d.]+ +\d+ [^\]]+\] ")
_PREAMBLE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
# the second line of the CPU-feature INFO message
_CONTINUED = b"To enable the following instructions:"


def filter_chatter(text: bytes, level: int) -> bytes:
    """text without the log lines below `level` (TF_CPP_MIN_LOG_LEVEL: 1 hides INFO, 2 hides
    WARNING too) and absl's preamble before them."""
    hidden = {b"I"} if level == 1 else {b"I", b"W"} if level >= 2 else set()
    kept, dropping = [], False
    for line in text.splitlines(keepends=True):
        m = _LOG_LINE.match(line)
        if m:
            dropping = m.group(1) in hidden
        elif not (dropping and line.startswith(_CONTINUED)):
            dropping = False
        if hidden and line.rstrip() == _PREAMBLE:
            continue
        if not dropping:
            kept.append(line)
    return b"".join(kept)


def _import():
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")
    level = int(level) if level.isdigit() else 0
    hidden = "matplotlib" not in sys.modules
    if hidden:
        sys.modules["matplotlib"] = None      # `import matplotlib...` now raises ImportError
    held, saved = tempfile.TemporaryFile(), os.dup(2)
    sys.stderr.flush()
    os.dup2(held.fileno(), 2)
    try:
        import keras
        import tensorflow as tf
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        held.seek(0)
        out = filter_chatter(held.read(), level)
        held.close()
        if out:
            sys.stderr.write(out.decode(errors="replace"))
            sys.stderr.flush()
        if hidden and sys.modules.get("matplotlib", 0) is None:
            del sys.modules["matplotlib"]
    return keras, tf


keras, tf = _import()

__all__ = ["keras", "tf"]
