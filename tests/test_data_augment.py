"""Tests of sam_jax.data.augment: the in-memory training augmentations against
numpy references, and the registered AutoAugment recipes."""

import numpy as np
import pytest
import tensorflow as tf

from helpers import eager_and_in_tf_data_over_seeds
from helpers import random_image
from helpers import reference_normalize
from helpers import seed
from sam_jax import data
from sam_jax.data import augment
from sam_jax.data import autoaugment as aa

CIFAR_SPEC = data.DATASETS['cifar10']
SVHN_SPEC = data.DATASETS['svhn_cropped']


def denormalize(image, spec):
    return np.round(image * np.array(spec.std) + np.array(spec.mean))


# ------------------------------------------------------ crop, flip, cutout


def test_normalize_matches_numpy_in_every_framework():
    """One normalisation (data/normalization.py) for TensorFlow tensors (the
    tf.data paths), JAX arrays (the device pipeline) and numpy arrays."""
    import jax.numpy as jnp
    image = np.random.default_rng(0).integers(0, 256, (4, 5, 3), np.uint8)
    spec = data.DATASETS['cifar10']
    from_tf = augment.normalize(tf.constant(image), spec.mean, spec.std).numpy()
    np.testing.assert_allclose(from_tf, reference_normalize(image, spec), rtol=1e-6)
    from_numpy = augment.normalize(image, spec.mean, spec.std)
    assert from_numpy.dtype == np.float32
    np.testing.assert_array_equal(from_numpy, from_tf)
    # XLA:CPU divides by a constant as a product with its reciprocal: one ulp.
    from_jax = np.asarray(augment.normalize(jnp.asarray(image), spec.mean, spec.std))
    assert from_jax.dtype == np.float32
    np.testing.assert_allclose(from_jax, from_tf, rtol=2.5e-7, atol=0)


def test_random_crop_is_window_of_reflect_padded_image():
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), np.uint8)
    padding = 2
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)),
                    mode='reflect')
    offsets_seen = set()
    for i in range(30):
        out = augment.random_crop_with_reflect_padding(
            tf.constant(image), padding, seed(i)).numpy()
        assert out.shape == image.shape
        matches = [(dy, dx) for dy in range(2 * padding + 1)
                   for dx in range(2 * padding + 1)
                   if np.array_equal(out, padded[dy:dy + 8, dx:dx + 8])]
        assert matches
        offsets_seen.update(matches)
    assert len(offsets_seen) > 3


def test_random_flip_is_identity_or_mirror():
    image = np.random.default_rng(0).integers(0, 256, (6, 6, 1), np.uint8)
    flipped_count = 0
    for i in range(30):
        out = augment.random_flip_left_right(tf.constant(image),
                                             seed(i)).numpy()
        is_mirror = np.array_equal(out, image[:, ::-1])
        assert is_mirror or np.array_equal(out, image)
        flipped_count += is_mirror
    assert 0 < flipped_count < 30


def test_cutout_zeroes_exactly_a_clipped_square():
    height = width = 8
    size = 4
    image = np.random.default_rng(0).uniform(1, 2, (height, width, 2))
    image = image.astype(np.float32)
    candidate_masks = []
    for centre_row in range(height):
        for centre_col in range(width):
            mask = np.zeros((height, width), bool)
            top, left = centre_row - size // 2, centre_col - size // 2
            mask[max(top, 0):max(top + size, 0),
                 max(left, 0):max(left + size, 0)] = True
            candidate_masks.append(mask)
    areas = set()
    for i in range(40):
        out = aa.cutout(tf.constant(image), size, seed(i)).numpy()
        zeroed = np.all(out == 0, axis=-1)
        assert any(np.array_equal(zeroed, m) for m in candidate_masks)
        assert np.all(out[zeroed] == 0)
        np.testing.assert_array_equal(out[~zeroed], image[~zeroed])
        areas.add(int(zeroed.sum()))
    assert size * size in areas and min(areas) < size * size


def test_augment_for_training_same_seed_same_output():
    spec = data.DATASETS['cifar10']
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)
    outputs = [augment.augment_for_training(
        tf.constant(image), seed(s), spec=spec, augmentation='cutout').numpy()
               for s in (1, 1, 2)]
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert not np.array_equal(outputs[0], outputs[2])
    assert outputs[0].dtype == np.float32
    assert outputs[0].shape == (32, 32, 3)
    none = augment.augment_for_training(
        tf.constant(image), seed(1), spec=spec, augmentation='none').numpy()
    np.testing.assert_allclose(none, reference_normalize(image, spec),
                               rtol=1e-6)
    with pytest.raises(ValueError, match='allowed: none, basic, cutout'):
        augment.augment_for_training(tf.constant(image), seed(1), spec=spec,
                                     augmentation='mixup')


# --------------------------------------------- registered augmentations


NEW_AUGMENTATIONS = ('autoaugment', 'autoaugment_cutout', 'autoaugment_only',
                     'autoaugment_small_image', 'randaugment')


def test_new_augmentations_are_registered_after_the_old_ones():
    names = list(data.TRAINING_AUGMENTATIONS)
    assert names[:3] == ['none', 'basic', 'cutout']
    assert set(NEW_AUGMENTATIONS) <= set(names)


@pytest.mark.parametrize('dataset', ['cifar10', 'svhn_cropped',
                                     'fashion_mnist', 'digits'])
def test_new_augmentations_in_tf_data(dataset):
    spec = data.DATASETS[dataset]
    image = random_image(spec.image_shape)
    # Every name eagerly; in tf.data (a trace costs ~1 s) a few.
    in_tf_data = {'cifar10': ('autoaugment', 'randaugment'),
                  'svhn_cropped': ('autoaugment_only',),
                  'fashion_mnist': ('autoaugment_cutout',),
                  'digits': ('autoaugment_small_image',)}[dataset]
    for name in NEW_AUGMENTATIONS:
        def augmented(x, s, name=name):
            return augment.augment_for_training(x, s, spec=spec,
                                                augmentation=name)
        if name in in_tf_data:
            outputs = eager_and_in_tf_data_over_seeds(augmented, image, 4)
        else:
            outputs = [augmented(image, seed(i)).numpy() for i in range(4)]
        assert outputs[0].shape == spec.image_shape
        assert outputs[0].dtype == np.float32
        assert len({o.tobytes() for o in outputs}) > 1


def test_autoaugment_recipe_is_policy_then_crop_and_flip():
    """'autoaugment' = crop/flip of 'autoaugment_only' (the official order)."""
    image = random_image((32, 32, 3))
    for spec in (CIFAR_SPEC, SVHN_SPEC):
        flips = 0
        for i in range(12):
            full = denormalize(augment.augment_for_training(
                image, seed(i), spec=spec, augmentation='autoaugment').numpy(),
                spec)
            policy_only = denormalize(augment.augment_for_training(
                image, seed(i), spec=spec,
                augmentation='autoaugment_only').numpy(), spec)
            padded = np.pad(policy_only, ((4, 4), (4, 4), (0, 0)),
                            mode='reflect')
            windows = [padded[dy:dy + 32, dx:dx + 32]
                       for dy in range(9) for dx in range(9)]
            if any(np.array_equal(full, w) for w in windows):
                continue
            assert spec.flip, 'a flip on SVHN'
            assert any(np.array_equal(full, w[:, ::-1]) for w in windows)
            flips += 1
        assert (flips > 0) == spec.flip
        with_cutout = augment.augment_for_training(
            image, seed(0), spec=spec, augmentation='autoaugment_cutout')
        without = augment.augment_for_training(
            image, seed(0), spec=spec, augmentation='autoaugment')
        changed = np.any(with_cutout.numpy() != without.numpy(), axis=-1)
        assert changed.any()
        assert np.all(with_cutout.numpy()[changed] == 0)


def test_autoaugment_policy_follows_the_spec():
    image = random_image((32, 32, 3))
    fold = tf.random.experimental.stateless_fold_in
    for spec, policy, other in ((SVHN_SPEC, 'svhn', 'cifar'),
                                (CIFAR_SPEC, 'cifar', 'svhn')):
        differs_from_other = False
        for i in range(8):
            got = augment.augment_for_training(
                image, seed(i), spec=spec, augmentation='autoaugment_only')
            for name, want_equal in ((policy, True), (other, None)):
                expected = augment.normalize(
                    aa.autoaugment(image, fold(seed(i), 2), policy=name),
                    spec.mean, spec.std)
                equal = np.array_equal(got.numpy(), expected.numpy())
                if want_equal:
                    assert equal
                else:
                    differs_from_other |= not equal
        assert differs_from_other
