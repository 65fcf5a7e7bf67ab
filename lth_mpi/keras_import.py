"""Keras and TensorFlow, imported without matplotlib.

Keras imports matplotlib.pyplot at its own import, for an image-gallery helper this program
never calls: 0.5-0.9 s of every rank's start-up here, and hundreds of files read by every
rank from a cluster's shared filesystem. matplotlib is hidden while Keras imports (Keras
then sets that helper's `plt` to None) and importable again afterwards, for the analysis.
"""
import sys

_hidden = "matplotlib" not in sys.modules
if _hidden:
    sys.modules["matplotlib"] = None      # `import matplotlib...` now raises ImportError
try:
    import keras  # noqa: E402
    import tensorflow as tf  # noqa: E402
finally:
    if _hidden and sys.modules.get("matplotlib", 0) is None:
        del sys.modules["matplotlib"]

__all__ = ["keras", "tf"]
