"""Tests of sam_jax.data.imagenet_preprocessing: Inception crops, decoding
with a crop window, the evaluation centre crop (against numpy) and training
preprocessing of images of any size, eagerly and in tf.data."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from helpers import eager_and_in_tf_data
from helpers import encode
from helpers import random_image
from helpers import seed
from sam_jax import data
from sam_jax.data import imagenet_preprocessing as inet


def test_inception_crop_windows_lie_inside_the_image():
    rng = np.random.default_rng(0)
    areas, aspects = [], []
    for i in range(60):
        height, width = int(rng.integers(5, 300)), int(rng.integers(5, 300))
        window = inet.inception_crop_window(
            tf.constant([height, width, 3]), seed(i)).numpy()
        top, left, crop_height, crop_width = window
        assert top >= 0 and left >= 0 and crop_height > 0 and crop_width > 0
        assert top + crop_height <= height and left + crop_width <= width
        if (crop_height, crop_width) != (height, width) and min(height,
                                                                width) > 50:
            areas.append(crop_height * crop_width / (height * width))
            aspects.append(crop_width / crop_height)
    assert len(areas) > 30
    assert min(areas) >= 0.06 and max(areas) <= 1.0
    assert min(aspects) >= 0.7 and max(aspects) <= 1.4
    assert np.std(areas) > 0.1


@pytest.mark.parametrize('image_format', ['jpeg', 'png'])
def test_decode_and_crop_equals_decode_then_slice(image_format):
    image = random_image((37, 50, 3))
    image_bytes = encode(image, image_format)
    decoded = tf.io.decode_image(image_bytes, channels=3).numpy()
    np.testing.assert_array_equal(inet.decoded_shape(image_bytes).numpy(),
                                  [37, 50, 3])
    window = tf.constant([3, 7, 20, 30])
    np.testing.assert_array_equal(
        inet.decode_and_crop(image_bytes, window).numpy(),
        decoded[3:23, 7:37])


def test_eval_center_crop_matches_numpy():
    spec = dataclasses.replace(data.DATASETS['imagenet2012'],
                               image_shape=(32, 32, 3))
    image = random_image((64, 80, 3))
    image_bytes = encode(image, 'png')
    # side = 32 / (32 + 32) * 64 = 32, offsets ((64 - 32 + 1) // 2,
    # (80 - 32 + 1) // 2) = (16, 24); no resize is needed at this size.
    expected = (image[16:48, 24:56] - np.array(spec.mean)) / np.array(spec.std)
    got = eager_and_in_tf_data(
        lambda x: inet.preprocess_for_eval(x, spec=spec), image_bytes)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    # At 16 px: the same 0.875-style window (16 / 48 * 64 = 21 px), resized.
    crop = image[(64 - 21 + 1) // 2:][:21, (80 - 21 + 1) // 2:][:, :21]
    resized = tf.image.resize(crop.astype(np.float32), [16, 16],
                              method='bicubic').numpy()
    got = inet.preprocess_for_eval(image_bytes, spec=spec,
                                   image_size=16).numpy()
    np.testing.assert_allclose(
        got, (resized - np.array(spec.mean)) / np.array(spec.std),
        rtol=1e-5, atol=1e-4)


def test_training_preprocessing_of_images_of_any_size():
    spec = data.DATASETS['imagenet2012']
    images = [encode(random_image((5, 7, 3)), 'jpeg'),
              encode(random_image((40, 23, 3)), 'png'),
              encode(random_image((120, 90, 3)), 'jpeg'),
              encode(random_image((30, 20, 1)), 'png')]  # Grey.
    num_seeds = 3
    for augmentation in inet.STREAMING_AUGMENTATIONS:
        def preprocess(image_bytes, example_seed):
            return inet.preprocess_for_training(
                image_bytes, example_seed, spec=spec,
                augmentation=augmentation, image_size=24)
        eager = [[preprocess(image_bytes, seed(i)).numpy()
                  for i in range(num_seeds)] for image_bytes in images]
        mapped = tf.data.Dataset.from_tensor_slices(images).flat_map(
            lambda image_bytes: tf.data.Dataset.range(num_seeds).map(
                lambda i: preprocess(image_bytes, tf.stack([i, 11]))))
        np.testing.assert_array_equal(
            np.stack(list(mapped.as_numpy_iterator())),
            np.concatenate(eager))
        for image_bytes, outputs in zip(images, eager):
            assert outputs[0].shape == (24, 24, 3)
            assert outputs[0].dtype == np.float32
            if augmentation == 'none':
                np.testing.assert_array_equal(
                    outputs[0], inet.preprocess_for_eval(
                        image_bytes, spec=spec, image_size=24).numpy())
            elif inet.decoded_shape(image_bytes)[0] > 20:
                assert len({o.tobytes() for o in outputs}) > 1
    with pytest.raises(ValueError, match='allowed: none, basic'):
        inet.preprocess_for_training(image_bytes, seed(0), spec=spec,
                                     augmentation='cutout')
