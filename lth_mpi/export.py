"""A ticket as a file to ship: TensorFlow Lite, optionally quantized, checked in the interpreter.

`lth-mpi export RESULTS.h5 CELL --format tflite [--quantize float16|int8]` rebuilds the cell's
model from the file (config, weight shapes, the trained weights kept by
results.keep_weights), folds the input normalization into the model so that it takes raw
pixels, converts it, and reports the file's size raw and gzipped and its test accuracy run in
the TFLite interpreter next to the cell's own. No MPI: a plain process.
"""
from __future__ import annotations

import gzip
import json
import os
import tempfile

import numpy as np

QUANTIZE = ("none", "float16", "int8")
REPRESENTATIVE = 512     # training examples that calibrate int8 activation ranges


class ExportError(ValueError):
    """A one-line reason the export cannot be done."""


def read(path: str, name: str):
    """(config, weight shapes, flat trained weights, the cell's final test accuracy and
    realized sparsity; the dense network's for name "dense")."""
    from . import config as config_mod
    from . import results
    if not os.path.exists(path):
        raise ExportError(f"{path}: no such file")
    try:
        def get(f):
            cfg = config_mod.yaml.safe_load(f.attrs["config"])
            if not results.dense_complete(f):
                raise ExportError(f"{path}: the dense phase has not finished; nothing to export")
            shapes = [tuple(s) for s in json.loads(f["weights"].attrs["shapes"])]
            flat = results.read_weights(f, name)
            if results.is_dense_name(name):   # dense, or a replicate's dense_s<k>
                return (cfg, shapes, flat,
                        float(results.dense_of(f, name)["test_accuracy"][-1]), 0.0)
            a = f["cells"][name].attrs
            return (cfg, shapes, flat, float(a["final_test_accuracy"]),
                    float(a["sparsity_realized"]))
        return results.while_running(get, path)
    except results.NotAResultsFile as exc:
        raise ExportError(str(exc)) from None
    except ExportError:
        raise
    except ValueError as exc:
        raise ExportError(f"{path}: {exc}") from None


def build(cfg: dict, shapes, flat, dataset):
    """The trained Keras model, with the weights the search kept."""
    from . import models, training
    options = {k: v for k, v in cfg["model"].items() if k != "name"}
    model = models.build(cfg["model"]["name"], dataset.input_shape, dataset.num_classes,
                         options, cfg["seed"])
    model.set_weights(training.unflatten(np.asarray(flat, np.float32), shapes))
    return model


def convert(model, dataset, quantize: str = "none") -> bytes:
    """TFLite flatbuffer of raw pixels (float32 0..255; uint8 for int8) -> logits.

    float16: weights stored as float16. int8: full-integer post-training quantization,
    activations calibrated on REPRESENTATIVE training examples; every op int8, raw uint8
    pixels in (scale 1), int8 logits out."""
    import keras
    import tensorflow as tf
    # raw pixels in: (x - 255 mean) / (255 std) is the trainer's (x / 255 - mean) / std
    pixels = keras.Input(dataset.input_shape)
    scaled = keras.layers.Normalization(mean=255.0 * np.asarray(dataset.mean),
                                        variance=(255.0 * np.asarray(dataset.std)) ** 2)(pixels)
    wrapped = keras.Model(pixels, model(scaled))
    with tempfile.TemporaryDirectory() as tmp:      # Keras's SavedModel export freezes the
        wrapped.export(tmp, format="tf_saved_model", verbose=False)   # weights for TFLite
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        return _convert(converter, dataset, quantize)


def _convert(converter, dataset, quantize):
    import tensorflow as tf
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        sample = next(iter(dataset.train_batches(0, 1, calibration_size(dataset))))[0]

        def representative():
            for i in range(0, len(sample), 32):
                yield [sample[i:i + 32].astype(np.float32)]
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.int8
    return converter.convert()


def calibration_size(dataset) -> int:
    """int8's calibration sample: REPRESENTATIVE training examples, or all there are."""
    return min(REPRESENTATIVE, dataset.train_total)


def accuracy(blob: bytes, dataset, batch: int = 500) -> float:
    """Test accuracy of the flatbuffer in the TFLite interpreter."""
    import warnings
    import tensorflow as tf
    with warnings.catch_warnings():     # tf.lite.Interpreter's notice that LiteRT exists
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(model_content=blob)
    inp = interpreter.get_input_details()[0]
    correct = total = 0
    size = None
    for x, y in dataset.test_batches(batch):
        if size != len(x):
            interpreter.resize_tensor_input(inp["index"], [len(x), *dataset.input_shape])
            interpreter.allocate_tensors()
            size = len(x)
        if inp["dtype"] == np.float32:
            x = x.astype(np.float32)
        else:    # int8: quantized as the converter calibrated the input, not assumed scale 1
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        correct += int((np.argmax(out, -1) == y).sum())    # argmax: scale > 0, no dequantize
        total += len(y)
    return correct / total


def gzipped_size(blob: bytes) -> int:
    return len(gzip.compress(blob, compresslevel=9, mtime=0))


def export(path: str, name: str, quantize: str = "none", output: str | None = None) -> dict:
    """Write the TFLite file; returns what it measured (sizes in bytes, accuracies 0..1)."""
    from . import data
    if quantize not in QUANTIZE:
        raise ExportError(f"--quantize: {quantize!r} is not one of {', '.join(QUANTIZE)}")
    cfg, shapes, flat, own, sparsity = read(path, name)
    try:
        dataset = data.load(cfg["dataset"])
    except (ValueError, OSError) as exc:
        raise ExportError(f"dataset: {exc}") from None
    model = build(cfg, shapes, flat, dataset)
    blob = convert(model, dataset, quantize)
    suffix = "" if quantize == "none" else f"-{quantize}"
    output = output or f"{os.path.splitext(path)[0]}-{name}{suffix}.tflite"
    with open(output, "wb") as fh:
        fh.write(blob)
    return {"output": output, "cell": name, "quantize": quantize, "bytes": len(blob),
            "gzipped": gzipped_size(blob), "tflite_accuracy": accuracy(blob, dataset),
            "cell_accuracy": own, "sparsity": sparsity,
            "calibrated_on": calibration_size(dataset) if quantize == "int8" else 0}


def describe(r: dict) -> str:
    return (f"{r['output']}: {r['cell']} ({100 * (1 - r['sparsity']):.3g}% of weights), "
            f"{r['quantize'] if r['quantize'] != 'none' else 'float32'}: "
            f"{r['bytes'] / 1024:.1f} KiB, gzipped {r['gzipped'] / 1024:.1f} KiB; "
            f"test accuracy in TFLite {100 * r['tflite_accuracy']:.2f}% "
            f"(the cell's own {100 * r['cell_accuracy']:.2f}%)"
            + (f"; int8 calibrated on only {r['calibrated_on']} training examples"
               if 0 < r["calibrated_on"] < REPRESENTATIVE else ""))


def main(path: str, name: str, fmt: str, quantize: str, output: str | None) -> int:
    """tflite: `name` is the cell; tensorboard: the directory every cell's curves go to."""
    import sys
    from . import tensorboard_export
    if fmt not in ("tflite", "tensorboard"):
        sys.stderr.write(f"lth-mpi: error: --format: {fmt!r} is not one of tflite, "
                         "tensorboard\n")
        return 2
    if fmt == "tensorboard" and (quantize != "none" or output):
        sys.stderr.write("lth-mpi: error: --format tensorboard: --quantize and --output are "
                         "tflite's; give the directory after the results file\n")
        return 2
    try:
        if fmt == "tensorboard":
            n = tensorboard_export.write(path, name)
            print(f"{name}: {n} runs (dense and every finished cell) from {path}; "
                  f"tensorboard --logdir {name}", flush=True)
        else:
            print(describe(export(path, name, quantize, output)), flush=True)
    except (ExportError, tensorboard_export.NotExported) as exc:
        sys.stderr.write(f"lth-mpi: error: {exc}\n")
        return 2
    return 0
