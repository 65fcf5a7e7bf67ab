"""Model registry: builders looked up by name, every layer named so weights match across ranks.

A builder takes (input_shape, num_classes, **options) and returns a Keras model. The user's
own model joins the same way: `model: {name: custom, builder: "package.module:function",
...options}`, any function importable on every rank. Which weights are prunable is decided
here for all of them: kernels of dense and convolution layers (ndim >= 2), never biases or
BatchNorm parameters.
"""
from __future__ import annotations

import importlib
import inspect

from .keras_import import keras

layers = keras.layers

REGISTRY = {}


def register(name):
    def wrap(fn):
        REGISTRY[name] = fn
        return fn
    return wrap


def custom_builder(spec) -> callable:
    """The user's builder named "package.module:function" (importable on every rank):
    function(input_shape, num_classes, **options) -> keras.Model."""
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ValueError(f"model.builder: expected \"package.module:function\", got {spec!r}")
    module, function = spec.split(":")
    try:
        fn = getattr(importlib.import_module(module), function)
    except ImportError as exc:
        raise ValueError(f"model.builder: cannot import {module!r} ({exc})") from None
    except AttributeError:
        raise ValueError(f"model.builder: {module!r} has no {function!r}") from None
    if not callable(fn):
        raise ValueError(f"model.builder: {spec} is not callable")
    return fn


def check(name: str, options: dict) -> None:
    """Refuse an unknown model or builder option, naming the valid ones."""
    if name == "custom":
        fn = custom_builder(options.get("builder")) if "builder" in options else None
        if fn is None:
            raise ValueError("model.builder: a custom model needs builder: \"module:function\"")
        params = inspect.signature(fn).parameters
        if any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return
        valid = [p for p in list(params)[2:]]
        for key in options:
            if key != "builder" and key not in valid:
                raise ValueError(f"model.{key}: not an option of {options['builder']} "
                                 f"(valid: {', '.join(valid) or 'none'})")
        return
    if name not in REGISTRY:
        raise ValueError(f"model.name: unknown model {name!r} (valid: "
                         f"{', '.join(sorted(REGISTRY))}, or custom with a builder)")
    params = inspect.signature(REGISTRY[name]).parameters
    valid = [p for p in params if p not in ("input_shape", "num_classes")]
    for key in options:
        if key not in valid:
            raise ValueError(f"model.{key}: not an option of {name} (valid: {', '.join(valid) or 'none'})")


def build(name: str, input_shape: tuple, num_classes: int, options: dict | None = None,
          seed: int | None = None) -> keras.Model:
    """Build a registered model; the same seed gives the same initial weights."""
    options = dict(options or {})
    check(name, options)
    if seed is not None:
        keras.utils.set_random_seed(seed)
    fn = custom_builder(options.pop("builder")) if name == "custom" else REGISTRY[name]
    try:
        model = fn(input_shape, num_classes, **options)
        if not isinstance(model, keras.Model):
            raise TypeError(f"the builder returned {type(model).__name__}, not a keras.Model")
        return model
    except (ValueError, TypeError) as exc:   # a value the builder (or Keras) rejects
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if text.startswith("model."):
            raise ValueError(text) from None
        given = ", ".join(f"{k}={v!r}" for k, v in options.items()) or "no options"
        raise ValueError(f"model: {name} cannot be built with {given} ({text})") from None


def prunable(model: keras.Model, exclude: list[str] = ()) -> list[int]:
    """Indices into model.weights of the prunable kernels: trainable, ndim >= 2, and not in
    a layer named in `exclude`."""
    candidates = [i for i, var in enumerate(model.weights) if var.trainable and len(var.shape) >= 2]
    return [i for i, layer in zip(candidates, layer_of(model, candidates)) if layer not in exclude]


def layer_of(model: keras.Model, idx: list[int]) -> list[str]:
    """The name of the layer each of model.weights[idx] belongs to."""
    owner = {id(v): layer.name for layer in model.layers for v in layer.weights}
    return [owner[id(model.weights[i])] for i in idx]


def layer_names(model: keras.Model) -> list[str]:
    return [layer.name for layer in model.layers]


# --- Frankle & Carbin (2019) ----------------------------------------------------------------

@register("lenet_300_100")
def lenet_300_100(input_shape, num_classes):
    return keras.Sequential([
        keras.Input(input_shape), layers.Flatten(name="flatten"),
        layers.Dense(300, activation="relu", name="fc1"),
        layers.Dense(100, activation="relu", name="fc2"),
        layers.Dense(num_classes, name="out")], name="lenet_300_100")


def _conv_net(input_shape, num_classes, blocks, name):
    """Conv-2/4/6: pairs of 3x3 convs with max pooling, then FC 256-256 (VGG-like)."""
    model = keras.Sequential([keras.Input(input_shape)], name=name)
    for b, filters in enumerate(blocks):
        model.add(layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{2*b+1}"))
        model.add(layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{2*b+2}"))
        model.add(layers.MaxPooling2D(2, name=f"pool{b+1}"))
    model.add(layers.Flatten(name="flatten"))
    model.add(layers.Dense(256, activation="relu", name="fc1"))
    model.add(layers.Dense(256, activation="relu", name="fc2"))
    model.add(layers.Dense(num_classes, name="out"))
    return model


@register("conv2")
def conv2(input_shape, num_classes):
    return _conv_net(input_shape, num_classes, [64], "conv2")


@register("conv4")
def conv4(input_shape, num_classes):
    return _conv_net(input_shape, num_classes, [64, 128], "conv4")


@register("conv6")
def conv6(input_shape, num_classes):
    return _conv_net(input_shape, num_classes, [64, 128, 256], "conv6")


# --- ResNet for CIFAR (He et al. 2016, depth 6n+2) ------------------------------------------

def _conv_bn(x, filters, stride, name, relu=True):
    x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                      kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


@register("resnet")
def resnet(input_shape, num_classes, depth=20, width=16):
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"model.depth: ResNet depth must be 6n+2 and >= 8, got {depth}")
    n = (depth - 2) // 6
    inputs = keras.Input(input_shape)
    x = _conv_bn(inputs, width, 1, "stem")
    for stage in range(3):
        filters = width * 2 ** stage
        for block in range(n):
            stride = 2 if stage > 0 and block == 0 else 1
            name = f"s{stage+1}b{block+1}"
            y = _conv_bn(x, filters, stride, f"{name}_a")
            y = _conv_bn(y, filters, 1, f"{name}_b", relu=False)
            if stride != 1 or x.shape[-1] != filters:
                x = layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                                  name=f"{name}_short")(x)
            x = layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([x, y]))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, layers.Dense(num_classes, name="out")(x), name=f"resnet{depth}")


@register("resnet20")
def resnet20(input_shape, num_classes, width=16):
    return resnet(input_shape, num_classes, depth=20, width=width)


@register("resnet44")
def resnet44(input_shape, num_classes, width=16):
    return resnet(input_shape, num_classes, depth=44, width=width)


# --- MobileNetV2 (Sandler et al. 2018), any input size -------------------------------------

def _divisible(v, divisor=8):
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


@register("mobilenet_v2")
def mobilenet_v2(input_shape, num_classes, alpha=1.0, stem_stride=2):
    """Keras' MobileNetV2 layout, written out so inputs smaller than 32x32 work.

    stem_stride=1 keeps more resolution for 32x32 or 64x64 inputs (the seeds' ImageNet-64).
    """
    if not alpha > 0:
        raise ValueError(f"model.alpha: the width multiplier must be > 0, got {alpha}")
    # (expansion t, channels c, repeats n, first stride s), from the paper's Table 2
    spec = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
            (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(_divisible(32 * alpha), 3, strides=stem_stride, padding="same",
                      use_bias=False, name="stem_conv")(inputs)
    x = layers.ReLU(6.0, name="stem_relu")(layers.BatchNormalization(name="stem_bn")(x))
    block = 0
    for t, c, n, s in spec:
        out_ch = _divisible(c * alpha)
        for i in range(n):
            name = f"b{block}"
            y = x
            if t != 1:
                y = layers.Conv2D(x.shape[-1] * t, 1, use_bias=False, name=f"{name}_expand")(y)
                y = layers.ReLU(6.0, name=f"{name}_expand_relu")(
                    layers.BatchNormalization(name=f"{name}_expand_bn")(y))
            y = layers.DepthwiseConv2D(3, strides=s if i == 0 else 1, padding="same",
                                       use_bias=False, name=f"{name}_dw")(y)
            y = layers.ReLU(6.0, name=f"{name}_dw_relu")(
                layers.BatchNormalization(name=f"{name}_dw_bn")(y))
            y = layers.Conv2D(out_ch, 1, use_bias=False, name=f"{name}_project")(y)
            y = layers.BatchNormalization(name=f"{name}_project_bn")(y)
            if i > 0 and x.shape[-1] == out_ch:
                y = layers.Add(name=f"{name}_add")([x, y])
            x = y
            block += 1
    last = _divisible(1280 * alpha) if alpha > 1.0 else 1280
    x = layers.Conv2D(last, 1, use_bias=False, name="head_conv")(x)
    x = layers.ReLU(6.0, name="head_relu")(layers.BatchNormalization(name="head_bn")(x))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, layers.Dense(num_classes, name="out")(x), name="mobilenet_v2")
