"""A user's own model, for `model: {name: custom, builder: "tests.custom_models:small_cnn"}`."""
import keras
from keras import layers


def small_cnn(input_shape, num_classes, filters=6):
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(filters, 3, activation="relu", name="c1")(inputs)
    x = layers.MaxPooling2D(name="p1")(x)
    x = layers.Flatten(name="flat")(x)
    x = layers.Dense(32, activation="relu", name="d1")(x)
    return keras.Model(inputs, layers.Dense(num_classes, name="out")(x), name="small_cnn")


def not_a_model(input_shape, num_classes):
    return "a string"
