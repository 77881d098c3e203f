"""The in-memory training augmentations in pure JAX (jittable, vmappable).

The JAX twin of `augment.py` for 'none', 'basic' and 'cutout', so that the
whole input pipeline of the small data sets can run on the accelerator.
Same semantics and order of operations as `augment.augment_for_training`:

- 'none': normalise.
- 'basic': reflect-pad by spec.crop_padding and crop a uniformly placed
  H x W window (of the uint8 image), flip left-right with probability 1/2
  where spec.flip allows, then normalise.
- 'cutout': 'basic', then zero a min(16, H // 2) square of the normalised
  image (so the square holds the data set mean), centre uniform over all
  pixels, clipped at the borders.

The random draws are not TensorFlow's (different generators), so outputs
match augment.py in distribution, not bit for bit. Randomness is a pure
function of the key: `augmentation_draws` returns every draw an image gets,
and `apply_augmentation` is deterministic given them.

`spec` is anything with the `sources.DatasetSpec` attributes image_shape,
mean, std, flip and crop_padding (this module does not import sources.py,
which imports TensorFlow).
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from sam_jax.data.normalization import normalize, preprocess_for_eval  # noqa: F401

AUGMENTATIONS = ('none', 'basic', 'cutout')
# DeVries & Taylor (2017) cut a 16x16 square out of 32x32 CIFAR images;
# augment.py scales it to H // 2 for smaller images.
_CUTOUT_SIZE = 16
# Sub-key of the image key per augmentation stage (as augment.py's sub-seeds
# 0 and 1), so 'cutout' differs from 'basic' only by the square.
_BASIC_STREAM = 0
_CUTOUT_STREAM = 1


def cutout_size(image_shape: Sequence[int]) -> int:
    """Side of the cutout square: min(16, H // 2), as augment.py."""
    return min(_CUTOUT_SIZE, image_shape[0] // 2)


def reflect_pad_crop(image: jax.Array, padding: int, row: jax.Array,
                     col: jax.Array) -> jax.Array:
    """The H x W window at (row, col) of the image reflect-padded by `padding`.

    Reflect as tf.pad 'REFLECT' / numpy 'reflect' (the edge pixel is not
    repeated); row and col lie in [0, 2 * padding].
    """
    if padding == 0:
        return image
    height, width, channels = image.shape
    padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)),
                     mode='reflect')
    return jax.lax.dynamic_slice(padded, (row, col, 0),
                                 (height, width, channels))


def flip_left_right(image: jax.Array, flip: jax.Array) -> jax.Array:
    """The image mirrored along its width where `flip` (a bool scalar)."""
    return jnp.where(flip, image[:, ::-1, :], image)


def cutout_at(image: jax.Array, size: int, centre_row: jax.Array,
              centre_col: jax.Array) -> jax.Array:
    """Zeroes rows [c_r - size//2, c_r - size//2 + size) x the same in cols.

    Indices outside the image are simply absent (the square is clipped).
    """
    height, width = image.shape[0], image.shape[1]
    top = centre_row - size // 2
    left = centre_col - size // 2
    rows = jnp.arange(height)[:, None]
    cols = jnp.arange(width)[None, :]
    inside = ((rows >= top) & (rows < top + size)
              & (cols >= left) & (cols < left + size))
    return jnp.where(inside[:, :, None], jnp.zeros_like(image), image)


def _draw_crop_offsets(key, padding):
    row_key, col_key = jax.random.split(key)
    # randint's maxval is exclusive: offsets are uniform over [0, 2P].
    return (jax.random.randint(row_key, (), 0, 2 * padding + 1),
            jax.random.randint(col_key, (), 0, 2 * padding + 1))


def _draw_cutout_centre(key, height, width):
    row_key, col_key = jax.random.split(key)
    return (jax.random.randint(row_key, (), 0, height),
            jax.random.randint(col_key, (), 0, width))


def random_crop_with_reflect_padding(image: jax.Array, padding: int,
                                     key: jax.Array) -> jax.Array:
    """`reflect_pad_crop` at offsets uniform over [0, 2 * padding]^2."""
    return reflect_pad_crop(image, padding, *_draw_crop_offsets(key, padding))


def random_flip_left_right(image: jax.Array, key: jax.Array) -> jax.Array:
    """Mirrors a [H, W, C] image horizontally with probability 1/2."""
    return flip_left_right(image, jax.random.bernoulli(key))


def cutout(image: jax.Array, size: int, key: jax.Array) -> jax.Array:
    """`cutout_at` a centre uniform over all H x W pixels."""
    return cutout_at(image, size,
                     *_draw_cutout_centre(key, image.shape[0], image.shape[1]))


def _check_augmentation(augmentation):
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f'augmentation {augmentation!r} has no JAX version; '
                         f'allowed: {", ".join(AUGMENTATIONS)} (the others '
                         f'run in augment.py, on tf.data)')


def augmentation_draws(key: jax.Array, spec, augmentation: str
                       ) -> dict[str, jax.Array]:
    """Every random draw `augment_image(image, key, ...)` makes.

    Returns:
        int32 scalars: 'crop_row', 'crop_col' in [0, 2 * spec.crop_padding]
        (0 for 'none'), 'cutout_row' in [0, H), 'cutout_col' in [0, W) (0
        unless 'cutout'); bool 'flip' (False unless 'basic'/'cutout' with
        spec.flip).
    """
    _check_augmentation(augmentation)
    zero = jnp.zeros((), jnp.int32)
    draws = dict(crop_row=zero, crop_col=zero, flip=jnp.zeros((), bool),
                 cutout_row=zero, cutout_col=zero)
    if augmentation == 'none':
        return draws
    crop_key, flip_key = jax.random.split(
        jax.random.fold_in(key, _BASIC_STREAM))
    if spec.crop_padding:
        draws['crop_row'], draws['crop_col'] = _draw_crop_offsets(
            crop_key, spec.crop_padding)
    if spec.flip:
        draws['flip'] = jax.random.bernoulli(flip_key)
    if augmentation == 'cutout':
        draws['cutout_row'], draws['cutout_col'] = _draw_cutout_centre(
            jax.random.fold_in(key, _CUTOUT_STREAM), spec.image_shape[0],
            spec.image_shape[1])
    return draws


def apply_augmentation(image: jax.Array, draws: dict[str, jax.Array], spec,
                       augmentation: str) -> jax.Array:
    """Deterministic part of `augment_image`, given its draws.

    Args:
        image: uint8 [H, W, C].
        draws: as returned by `augmentation_draws`.
        spec: the data set (mean, std, flip, crop_padding, image_shape).
        augmentation: 'none', 'basic' or 'cutout'.

    Returns:
        float32 [H, W, C], normalised.
    """
    _check_augmentation(augmentation)
    if augmentation != 'none':
        # Crop and flip on uint8: moves 1 byte per pixel instead of 4.
        image = reflect_pad_crop(image, spec.crop_padding, draws['crop_row'],
                                 draws['crop_col'])
        if spec.flip:
            image = flip_left_right(image, draws['flip'])
    image = normalize(image, spec.mean, spec.std)
    if augmentation == 'cutout':
        image = cutout_at(image, cutout_size(spec.image_shape),
                          draws['cutout_row'], draws['cutout_col'])
    return image


def augment_image(image: jax.Array, key: jax.Array, *, spec,
                  augmentation: str) -> jax.Array:
    """Augments and normalises one uint8 [H, W, C] image; pure in the key."""
    return apply_augmentation(image, augmentation_draws(key, spec,
                                                        augmentation),
                              spec, augmentation)


def augment_batch(images: jax.Array, keys: jax.Array, spec,
                  augmentation: str) -> jax.Array:
    """`augment_image` of each image with its own key.

    Args:
        images: uint8 [B, H, W, C].
        keys: [B] typed keys (jax.random.key) or [B, 2] uint32 raw keys.
        spec: the data set; static under jit (DatasetSpec is hashable).
        augmentation: 'none', 'basic' or 'cutout'; static under jit.

    Returns:
        float32 [B, H, W, C].
    """
    return jax.vmap(lambda image, key: augment_image(
        image, key, spec=spec, augmentation=augmentation))(images, keys)
