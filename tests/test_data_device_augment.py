"""Tests of sam_jax.data.device_augment against numpy references and,
where TensorFlow is installed, against augment.py itself."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import AugmentSpec
from sam_jax.data import device_augment as da

# The registry's values.
SPECS = {
    'cifar10': AugmentSpec((32, 32, 3), (125.3, 123.0, 113.9),
                           (63.0, 62.1, 66.7), True, 4),
    'svhn': AugmentSpec((32, 32, 3), (111.6, 113.2, 120.6), (50.5, 51.3, 50.2),
                        False, 4),
    'fashion_mnist': AugmentSpec((28, 28, 1), (72.94,), (90.02,), True, 4),
    'digits': AugmentSpec((8, 8, 1), (80.0,), (90.0,), False, 1),
}


# Jitted once per shape: eager vmapped calls are several times slower.
augment_batch = jax.jit(da.augment_batch, static_argnums=(2, 3))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _batch_draws(keys, spec, augmentation):
    return jax.vmap(lambda k: da.augmentation_draws(k, spec, augmentation))(
        keys)


def batch_draws(keys, spec, augmentation):
    """augmentation_draws of each key, as numpy arrays."""
    return {k: np.asarray(v)
            for k, v in _batch_draws(keys, spec, augmentation).items()}


def random_images(spec, count, seed=0):
    return np.random.default_rng(seed).integers(
        0, 256, (count, *spec.image_shape), np.uint8)


def np_normalize(image, spec):
    return ((image.astype(np.float32) - np.array(spec.mean, np.float32))
            / np.array(spec.std, np.float32))


def np_crop(image, padding, row, col):
    height, width = image.shape[:2]
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)),
                    mode='reflect')
    return padded[row:row + height, col:col + width]


def np_cutout(image, size, centre_row, centre_col):
    """Pixel loop: zero (i, j) iff it lies in the (unclipped) square."""
    out = image.copy()
    top, left = centre_row - size // 2, centre_col - size // 2
    for i in range(image.shape[0]):
        for j in range(image.shape[1]):
            if top <= i < top + size and left <= j < left + size:
                out[i, j] = 0
    return out


def np_augment(image, draws, spec, augmentation):
    """augment.py's order: crop (+ flip) on uint8, normalise, cutout."""
    if augmentation != 'none':
        image = np_crop(image, spec.crop_padding, int(draws['crop_row']),
                        int(draws['crop_col']))
        if spec.flip and bool(draws['flip']):
            image = image[:, ::-1]
    image = np_normalize(image, spec)
    if augmentation == 'cutout':
        image = np_cutout(image, min(16, spec.image_shape[0] // 2),
                          int(draws['cutout_row']), int(draws['cutout_col']))
    return image


def chi_square(counts):
    expected = counts.sum() / counts.size
    return float(((counts - expected) ** 2 / expected).sum())


# ------------------------------------------------------------ the pieces


def test_normalize_matches_numpy():
    spec = SPECS['cifar10']
    images = random_images(spec, 4)
    np.testing.assert_allclose(
        jax.jit(da.preprocess_for_eval, static_argnums=1)(images, spec),
        np_normalize(images, spec), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('name', ['cifar10', 'fashion_mnist', 'digits'])
def test_reflect_pad_crop_every_offset(name):
    spec = SPECS[name]
    image = random_images(spec, 1)[0]
    padding = spec.crop_padding
    crop = jax.jit(da.reflect_pad_crop, static_argnums=1)
    for row in range(2 * padding + 1):
        for col in range(2 * padding + 1):
            np.testing.assert_array_equal(
                crop(image, padding, row, col),
                np_crop(image, padding, row, col))


def test_numpy_reflect_is_tf_reflect():
    tf = pytest.importorskip('tensorflow')
    image = random_images(SPECS['cifar10'], 1)[0]
    np.testing.assert_array_equal(
        tf.pad(image, [[4, 4], [4, 4], [0, 0]], mode='REFLECT').numpy(),
        np.pad(image, ((4, 4), (4, 4), (0, 0)), mode='reflect'))


def test_cutout_at_every_centre():
    for shape, size in (((32, 32, 3), 16), ((28, 28, 1), 14), ((8, 8, 1), 4),
                        ((7, 5, 2), 3)):
        image = np.random.default_rng(1).normal(size=shape).astype(np.float32)
        cut = jax.jit(da.cutout_at, static_argnums=1)
        for row in range(shape[0]):
            for col in range(shape[1]):
                np.testing.assert_array_equal(
                    cut(image, size, row, col),
                    np_cutout(image, size, row, col))


def test_cutout_size_as_augment_py():
    assert [da.cutout_size(s.image_shape) for s in SPECS.values()] == [
        16, 16, 14, 4]


def test_random_pieces_output_one_candidate():
    """Every output is exactly one numpy crop / flip / cutout of the input."""
    spec = SPECS['cifar10']
    image = random_images(spec, 1)[0]
    crops = {(r, c): np_crop(image, 4, r, c)
             for r in range(9) for c in range(9)}
    keys = jax.random.split(jax.random.key(3), 20)
    for key in keys:
        out = np.asarray(da.random_crop_with_reflect_padding(image, 4, key))
        assert sum(np.array_equal(out, crop) for crop in crops.values()) == 1
        flipped = np.asarray(da.random_flip_left_right(image, key))
        assert (np.array_equal(flipped, image)
                != np.array_equal(flipped, image[:, ::-1]))
        floats = np_normalize(image, spec)
        cut = np.asarray(da.cutout(floats, 16, key))
        matches = [(r, c) for r in range(32) for c in range(32)
                   if np.array_equal(cut, np_cutout_fast(floats, 16, r, c))]
        assert len(matches) == 1


def np_cutout_fast(image, size, centre_row, centre_col):
    out = image.copy()
    top, left = centre_row - size // 2, centre_col - size // 2
    out[max(top, 0):max(top + size, 0), max(left, 0):max(left + size, 0)] = 0
    return out


# ---------------------------------------------------- the composition


@pytest.mark.parametrize('name', list(SPECS))
@pytest.mark.parametrize('augmentation', da.AUGMENTATIONS)
def test_augment_batch_matches_numpy_given_draws(name, augmentation):
    spec = SPECS[name]
    images = random_images(spec, 12)
    keys = jax.random.split(jax.random.key(11), 12)
    out = augment_batch(images, keys, spec, augmentation)
    assert out.shape == images.shape and out.dtype == jnp.float32
    draws = batch_draws(keys, spec, augmentation)
    for i in range(len(images)):
        expected = np_augment(images[i], {k: v[i] for k, v in draws.items()},
                              spec, augmentation)
        np.testing.assert_allclose(out[i], expected, rtol=1e-6, atol=1e-6)


def test_draw_ranges_and_what_is_drawn():
    keys = jax.random.split(jax.random.key(5), 256)

    def draws(spec, augmentation):
        return batch_draws(keys, spec, augmentation)

    none = draws(SPECS['cifar10'], 'none')
    assert all((v == 0).all() for v in none.values())
    basic = draws(SPECS['cifar10'], 'basic')
    assert (basic['cutout_row'] == 0).all() and basic['flip'].any()
    cutout = draws(SPECS['cifar10'], 'cutout')
    # 'cutout' shares 'basic''s crop and flip (augment.py's sub-seed 0).
    for name in ('crop_row', 'crop_col', 'flip'):
        np.testing.assert_array_equal(cutout[name], basic[name])
    assert not draws(SPECS['svhn'], 'cutout')['flip'].any()
    digits = draws(SPECS['digits'], 'cutout')
    assert digits['crop_row'].min() == 0 and digits['crop_row'].max() == 2
    assert digits['cutout_col'].min() == 0 and digits['cutout_col'].max() == 7


def test_draws_are_uniform():
    spec = SPECS['cifar10']
    draws = batch_draws(jax.random.split(jax.random.key(0), 8100), spec,
                        'cutout')
    # Offsets uniform over [0, 2P] = 0..8: 9 bins, 8 degrees of freedom
    # (chi-square 30 has p < 2e-4); a missing end value gives ~900.
    for name in ('crop_row', 'crop_col'):
        assert draws[name].min() == 0 and draws[name].max() == 8
        assert chi_square(np.bincount(draws[name], minlength=9)) < 30
    # Row and column jointly uniform over the 81 offsets (80 dof).
    assert chi_square(np.bincount(draws['crop_row'] * 9 + draws['crop_col'],
                                  minlength=81)) < 140
    assert abs(draws['flip'].mean() - 0.5) < 0.025  # 4.5 sigma
    for name in ('cutout_row', 'cutout_col'):  # Over all 32 pixels (31 dof).
        counts = np.bincount(draws[name], minlength=32)
        assert counts.size == 32 and chi_square(counts) < 70


def test_cutout_differs_from_basic_only_in_the_square():
    spec = SPECS['fashion_mnist']
    images = random_images(spec, 16)
    keys = jax.random.split(jax.random.key(2), 16)
    basic = np.asarray(augment_batch(images, keys, spec, 'basic'))
    cutout = np.asarray(augment_batch(images, keys, spec, 'cutout'))
    draws = batch_draws(keys, spec, 'cutout')
    for i in range(16):
        np.testing.assert_array_equal(
            cutout[i], np_cutout(basic[i], 14, int(draws['cutout_row'][i]),
                                 int(draws['cutout_col'][i])))


def test_output_is_a_function_of_image_and_key_only():
    spec = SPECS['cifar10']
    images = random_images(spec, 8)
    keys = jax.random.split(jax.random.key(9), 8)
    out = np.asarray(augment_batch(images, keys, spec, 'cutout'))
    # Batch position and batch size do not matter.
    reversed_out = np.asarray(
        augment_batch(images[::-1], keys[::-1], spec, 'cutout'))
    np.testing.assert_array_equal(reversed_out[::-1], out)
    np.testing.assert_array_equal(
        augment_batch(images[3:4], keys[3:4], spec, 'cutout')[0], out[3])
    # Raw uint32 keys give the same result as the typed keys they hold.
    np.testing.assert_array_equal(
        augment_batch(images, jax.random.key_data(keys), spec, 'cutout'),
        out)
    # Other keys, other outputs.
    other = np.asarray(augment_batch(
        images, jax.random.split(jax.random.key(10), 8), spec, 'cutout'))
    assert not any(np.array_equal(a, b) for a, b in zip(out, other))


def test_unknown_augmentation():
    with pytest.raises(ValueError, match="'autoaugment' has no JAX version"):
        augment_batch(random_images(SPECS['digits'], 1),
                         jax.random.split(jax.random.key(0), 1),
                         SPECS['digits'], 'autoaugment')


# --------------------------------------------- augment.py as the reference


@pytest.mark.parametrize('name', ['cifar10', 'fashion_mnist'])
def test_augment_py_outputs_are_outputs_of_the_numpy_model(name):
    """Checks the numpy reference above models augment.py: each TF output
    is the reference's output for some crop / flip / cutout draw."""
    tf = pytest.importorskip('tensorflow')
    from sam_jax.data import augment, sources
    spec = sources.DATASETS[name]
    assert dataclasses.astuple(SPECS[name]) == (
        spec.image_shape, spec.mean, spec.std, spec.flip, spec.crop_padding)
    height = spec.image_shape[0]
    size = min(16, height // 2)
    image = random_images(spec, 1, seed=4)[0]
    candidates = {}
    for row in range(9):
        for col in range(9):
            for flip in (False, True):
                candidates[row, col, flip] = np_augment(
                    image, dict(crop_row=row, crop_col=col, flip=flip), spec,
                    'basic')
    for seed in range(6):
        tf_seed = tf.constant([seed, 3], tf.int32)
        basic = augment.augment_for_training(
            tf.constant(image), tf_seed, spec=spec,
            augmentation='basic').numpy()
        found = [k for k, v in candidates.items()
                 if np.allclose(basic, v, rtol=1e-6, atol=1e-6)]
        assert len(found) == 1
        cut = augment.augment_for_training(
            tf.constant(image), tf_seed, spec=spec,
            augmentation='cutout').numpy()
        centres = [(r, c) for r in range(height) for c in range(height)
                   if np.allclose(cut, np_cutout_fast(candidates[found[0]],
                                                      size, r, c),
                                  rtol=1e-6, atol=1e-6)]
        assert len(centres) == 1
