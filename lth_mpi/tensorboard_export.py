"""Every cell's curves as TensorBoard scalars: `lth-mpi export RESULTS.h5 --format tensorboard
DIR`. TensorFlow's own summary writer, no new dependency.

One run per cell (DIR/<cell name>) and per dense network (DIR/dense, DIR/dense_s<k> for
replicates), each with the per-epoch curves of the results file (train_loss, test_loss,
test_accuracy, val_loss, val_accuracy; NaN where the file has NaN: no validation split, a
diverged epoch) at the step of the iteration the epoch ended on, counted from the start of
training like rewind points. A running search's file exports what it holds so far.
"""
from __future__ import annotations

import os

from . import results

SCALARS = ("train_loss", "test_loss", "test_accuracy", "val_loss", "val_accuracy")


class NotExported(ValueError):
    """A one-line reason the curves cannot be exported."""


def runs(got: results.Contents) -> dict[str, dict]:
    """{run name: curves} of a results file's dense networks and finished cells."""
    dense = ["dense"] if len(got.dense_runs) == 1 else \
        [f"dense_s{k}" for k in range(len(got.dense_runs))]
    out = dict(zip(dense, got.dense_runs))
    out.update({c["name"]: c for c in got.cells})
    return out


def write(path: str, directory: str) -> int:
    """Write the runs under `directory`; how many were written. NotExported in one line."""
    from .keras_import import tf
    try:
        got = results.read(path)
    except results.NotAResultsFile as exc:
        raise NotExported(str(exc)) from None
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise NotExported(f"{directory}: exists and is not a directory")
    written, meta = runs(got), scalar_metadata()
    for name, curves in written.items():
        writer = tf.summary.create_file_writer(os.path.join(directory, name))
        with writer.as_default():
            for i, step in enumerate(curves["iteration"]):
                for key in SCALARS:
                    tf.summary.write(key, tf.constant(curves[key][i], tf.float32),
                                     step=int(step), metadata=meta)
        writer.close()
    return len(written)


def scalar_metadata():
    """What marks a summary as a scalar for TensorBoard's scalars plugin (what its own
    tf.summary.scalar writes; that function needs the tensorboard package, this does not)."""
    from tensorflow.core.framework import summary_pb2
    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
        data_class=summary_pb2.DATA_CLASS_SCALAR)
