"""(image - mean) / std per channel: the one normalisation of every input
path, for numpy, JAX and TensorFlow tensors alike (the same float32
arithmetic on the same float32 constants: TensorFlow's result equals numpy's
to the bit; XLA:CPU divides by a constant as a product with its reciprocal,
one ulp away, as the device pipeline always did)."""

from collections.abc import Sequence

import numpy as np


def as_float32(image):
    """numpy and JAX arrays by astype; TensorFlow tensors (which have none,
    symbolic ones in a tf.data map included) by tf.cast."""
    if hasattr(image, "astype"):
        return image.astype(np.float32)
    import tensorflow as tf  # only a TensorFlow tensor gets here
    return tf.cast(image, tf.float32)


def normalize(image, mean: Sequence[float], std: Sequence[float]):
    """(image - mean) / std per channel (last axis), as float32.

    Args:
        image: uint8 (or any numeric) [..., C] in 0..255: numpy, JAX or TF.
        mean: C per-channel means in 0..255 units.
        std: C per-channel standard deviations in 0..255 units.
    """
    return ((as_float32(image) - np.asarray(mean, np.float32))
            / np.asarray(std, np.float32))


def preprocess_for_eval(images, spec):
    """Normalises uint8 images [..., H, W, C] to float32; nothing random."""
    return normalize(images, spec.mean, spec.std)
