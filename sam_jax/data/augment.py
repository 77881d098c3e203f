"""Training augmentations and evaluation preprocessing, as TensorFlow ops.

All randomness is stateless: every random op takes an explicit `seed` tensor
of shape [2] (int32 or int64), so an output is a pure function of
(image, seed). The input pipeline derives that seed from (run seed, example
position), which is what makes restarted runs see bit-identical batches.
"""

from collections.abc import Callable, Sequence

import tensorflow as tf

from sam_jax.data import autoaugment as autoaugment_lib
from sam_jax.data.normalization import normalize, preprocess_for_eval  # noqa: F401
from sam_jax.data.specs import DatasetSpec

# DeVries & Taylor (2017) cut a 16x16 square out of 32x32 CIFAR images.
_CUTOUT_SIZE = 16


def random_crop_with_reflect_padding(image: tf.Tensor, padding: int,
                                     seed: tf.Tensor) -> tf.Tensor:
    """Reflect-pads by `padding` on each side, then crops back to H x W.

    Args:
        image: [H, W, C] tensor with static shape; padding must be < H and < W.
        padding: pixels added on each side (the crop moves by up to this).
        seed: [2] int32/int64 stateless seed.

    Returns:
        A [H, W, C] window of the padded image.
    """
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]],
                    mode='REFLECT')
    cropped = tf.image.stateless_random_crop(padded, size=tf.shape(image),
                                             seed=seed)
    return tf.ensure_shape(cropped, image.shape)


def random_flip_left_right(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Mirrors a [H, W, C] image horizontally with probability 1/2."""
    return tf.image.stateless_random_flip_left_right(image, seed=seed)


def _crop_and_flip(image: tf.Tensor, seed: tf.Tensor,
                   spec: DatasetSpec) -> tf.Tensor:
    crop_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=2))
    image = random_crop_with_reflect_padding(image, spec.crop_padding,
                                             crop_seed)
    if spec.flip:
        image = random_flip_left_right(image, flip_seed)
    return image


def _augment_none(image, seed, spec):
    del seed
    return normalize(image, spec.mean, spec.std)


def _augment_basic(image, seed, spec):
    # The first sub-seed feeds crop+flip in every augmentation that has them,
    # so 'cutout' differs from 'basic' only by the square.
    basic_seed = tf.random.experimental.stateless_fold_in(seed, 0)
    image = _crop_and_flip(image, basic_seed, spec)
    return normalize(image, spec.mean, spec.std)


def _augment_cutout(image, seed, spec):
    image = _augment_basic(image, seed, spec)
    cutout_seed = tf.random.experimental.stateless_fold_in(seed, 1)
    # Scaled down for small images (8x8 digits get a 4x4 square).
    size = min(_CUTOUT_SIZE, spec.image_shape[0] // 2)
    return autoaugment_lib.cutout(image, size, cutout_seed)


def _autoaugment_policy(image, seed, spec, constants):
    # Sub-seed 2: crop+flip (0) and cutout (1) draw as in 'basic'/'cutout'.
    policy_seed = tf.random.experimental.stateless_fold_in(seed, 2)
    return autoaugment_lib.autoaugment(
        image, policy_seed, policy=spec.autoaugment_policy,
        constants=constants)


def _augment_autoaugment(image, seed, spec):
    # The official SAM recipe (dataset_source.py `_apply_image_augmentations`
    # with 'autoaugment'): the policy on the uint8 image, then crop + flip,
    # then normalisation.
    image = _autoaugment_policy(image, seed, spec,
                                autoaugment_lib.AUTOAUGMENT_CONSTANTS)
    return _augment_basic(image, seed, spec)


def _augment_autoaugment_cutout(image, seed, spec):
    image = _augment_autoaugment(image, seed, spec)
    cutout_seed = tf.random.experimental.stateless_fold_in(seed, 1)
    size = min(_CUTOUT_SIZE, spec.image_shape[0] // 2)
    return autoaugment_lib.cutout(image, size, cutout_seed)


def _augment_autoaugment_only(image, seed, spec):
    # The official 'aa-only', which its flags recommend for SVHN.
    image = _autoaugment_policy(image, seed, spec,
                                autoaugment_lib.AUTOAUGMENT_CONSTANTS)
    return normalize(image, spec.mean, spec.std)


def _augment_autoaugment_small_image(image, seed, spec):
    image = _autoaugment_policy(
        image, seed, spec, autoaugment_lib.AUTOAUGMENT_SMALL_IMAGE_CONSTANTS)
    return _augment_basic(image, seed, spec)


def _augment_randaugment(image, seed, spec, num_layers=2, magnitude=9):
    policy_seed = tf.random.experimental.stateless_fold_in(seed, 2)
    image = autoaugment_lib.randaugment(image, policy_seed, num_layers=num_layers,
                                        magnitude=magnitude)
    return _augment_basic(image, seed, spec)


# Name -> fn(uint8 image [H, W, C], seed [2], spec) -> normalised float32
# image. The 'autoaugment*' names use spec.autoaugment_policy (SVHN's policy
# for svhn_cropped, CIFAR-10's otherwise).
TRAINING_AUGMENTATIONS: dict[
    str, Callable[[tf.Tensor, tf.Tensor, DatasetSpec], tf.Tensor]] = {
        'none': _augment_none,
        'basic': _augment_basic,
        'cutout': _augment_cutout,
        'autoaugment': _augment_autoaugment,
        'autoaugment_cutout': _augment_autoaugment_cutout,
        'autoaugment_only': _augment_autoaugment_only,
        'autoaugment_small_image': _augment_autoaugment_small_image,
        'randaugment': _augment_randaugment,
    }


def augment_for_training(image: tf.Tensor, seed: tf.Tensor, *,
                         spec: DatasetSpec, augmentation: str,
                         randaugment_num_layers: int = 2,
                         randaugment_magnitude: float = 9) -> tf.Tensor:
    """Augments and normalises one training image.

    Args:
        image: uint8 [H, W, C] image with static shape.
        seed: [2] int32/int64 stateless seed; the output is a pure function of
            (image, seed).
        spec: the data set (normalisation statistics, flip, crop padding).
        augmentation: a key of TRAINING_AUGMENTATIONS: 'none' (normalise
            only), 'basic' (reflect-pad crop + flip where valid), 'cutout'
            (basic + cutout of min(16, H // 2) pixels), 'autoaugment' (the
            spec's AutoAugment policy, then basic: the official SAM
            recipe), 'autoaugment_cutout' (autoaugment + cutout),
            'autoaugment_only' (the policy alone, the official 'aa-only'
            for SVHN), 'autoaugment_small_image' (autoaugment with the
            AutoAugment paper's CIFAR ranges: translation <= 10 px, cutout
            side <= 20 px), 'randaugment' (RandAugment, N and M below,
            then basic).
        randaugment_num_layers: N of 'randaugment' (config.randaugment).
        randaugment_magnitude: M of 'randaugment'.

    Returns:
        float32 [H, W, C] normalised image.
    """
    if augmentation not in TRAINING_AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augmentation!r}; allowed: "
                         f"{', '.join(TRAINING_AUGMENTATIONS)}")
    if augmentation == 'randaugment':
        return _augment_randaugment(image, seed, spec, randaugment_num_layers,
                                    randaugment_magnitude)
    return TRAINING_AUGMENTATIONS[augmentation](image, seed, spec)


def resize(images: tf.Tensor, image_size: int | None) -> tf.Tensor:
    """Bicubic resize of [..., H, W, C] float32 images to image_size x
    image_size (None or their own size: unchanged). Not clipped: bicubic
    overshoot is kept, as in the official code. The one TensorFlow resize of
    the tf.data paths (the device pipeline's is device_inputs.resize)."""
    if image_size is None or tuple(images.shape[-3:-1]) == (image_size, image_size):
        return images
    return tf.image.resize(images, [image_size, image_size], method='bicubic')
