"""ImageNet-style preprocessing of encoded images of any size.

For ImageNet and the finetuning data sets, whose images are stored encoded
(JPEG, sometimes PNG) and differ in size. Follows the official SAM code
(sam_jax/datasets/dataset_source_imagenet.py, from the flax ImageNet example):

- training: Inception crop (a random box covering 8%-100% of the image area
  with aspect ratio 3/4-4/3, `tf.image.sample_distorted_bounding_box` with
  min_object_covered=0.1 and 10 attempts; if the box is the whole image, the
  evaluation centre crop instead), bicubic resize to image_size, optionally
  RandAugment / AutoAugment, random horizontal flip, normalisation;
- evaluation: centre crop of image_size / (image_size + 32) of the shorter
  side (0.875 at 224), bicubic resize to image_size, normalisation.

JPEGs are decoded only inside the crop window (`decode_and_crop_jpeg`).
Every random choice is stateless, from an explicit seed of shape [2].
"""

import tensorflow as tf

from sam_jax.data import autoaugment as autoaugment_lib
from sam_jax.data.augment import resize as resize_images
from sam_jax.data.normalization import normalize
from sam_jax.data.specs import DatasetSpec
# The training augmentations this module implements for encoded images.
from sam_jax.data.specs import STREAMING_AUGMENTATIONS

# Per-channel ImageNet statistics in 0..255 units (official SAM code).
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
# Evaluation crops image_size / (image_size + CROP_PADDING) of the shorter
# side: 224 / 256 = 0.875.
CROP_PADDING = 32



def decoded_shape(image_bytes: tf.Tensor) -> tf.Tensor:
    """[height, width, 3] of an encoded image; a JPEG's from its header."""
    height_width = tf.cond(
        tf.io.is_jpeg(image_bytes),
        lambda: tf.image.extract_jpeg_shape(image_bytes)[:2],
        lambda: tf.shape(tf.io.decode_image(
            image_bytes, channels=3, expand_animations=False))[:2])
    return tf.concat([height_width, [3]], axis=0)


def decode_and_crop(image_bytes: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
    """Decodes the [offset_y, offset_x, height, width] window as uint8 RGB."""
    def crop_jpeg():
        return tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)

    def crop_other():
        image = tf.io.decode_image(image_bytes, channels=3,
                                   expand_animations=False)
        return tf.image.crop_to_bounding_box(image, window[0], window[1],
                                             window[2], window[3])

    return tf.cond(tf.io.is_jpeg(image_bytes), crop_jpeg, crop_other)


def inception_crop_window(image_shape: tf.Tensor, seed: tf.Tensor, *,
                          area_range=(0.08, 1.0),
                          aspect_ratio_range=(3.0 / 4.0, 4.0 / 3.0),
                          max_attempts: int = 10) -> tf.Tensor:
    """A random [offset_y, offset_x, height, width] box inside the image.

    Its area is a fraction `area_range` of the image and width / height lies
    in `aspect_ratio_range`; after `max_attempts` failures it is the whole
    image.
    """
    whole_image = tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4])
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        image_shape, bounding_boxes=whole_image, seed=seed,
        min_object_covered=0.1, aspect_ratio_range=aspect_ratio_range,
        area_range=area_range, max_attempts=max_attempts,
        use_image_if_no_bounding_boxes=True)
    return tf.stack([begin[0], begin[1], size[0], size[1]])


def center_crop_window(image_shape: tf.Tensor, image_size: int,
                       crop_padding: int = CROP_PADDING) -> tf.Tensor:
    """[offset_y, offset_x, side, side] of the evaluation centre crop.

    side = int(image_size / (image_size + crop_padding) * min(height,
    width)); odd margins put the extra pixel above / left.
    """
    height, width = image_shape[0], image_shape[1]
    side = tf.cast(
        (image_size / (image_size + crop_padding))
        * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
    offset_y = (height - side + 1) // 2
    offset_x = (width - side + 1) // 2
    return tf.stack([offset_y, offset_x, side, side])


def resize(image: tf.Tensor, image_size: int) -> tf.Tensor:
    """Bicubic resize to image_size x image_size, float32 in ~0..255.

    Not clipped: bicubic overshoot is kept, as in the official code.
    """
    resized = resize_images(tf.cast(image, tf.float32), image_size)
    return tf.ensure_shape(resized, [image_size, image_size, 3])


def decode_and_center_crop(image_bytes: tf.Tensor, image_size: int,
                           crop_padding: int = CROP_PADDING) -> tf.Tensor:
    """Evaluation crop, resized: float32 [image_size, image_size, 3]."""
    window = center_crop_window(decoded_shape(image_bytes), image_size,
                                crop_padding)
    return resize(decode_and_crop(image_bytes, window), image_size)


def decode_and_inception_crop(image_bytes: tf.Tensor, seed: tf.Tensor,
                              image_size: int) -> tf.Tensor:
    """Inception crop, resized: float32 [image_size, image_size, 3].

    When the sampled box is the whole image (every attempt failed, or it was
    drawn), takes the evaluation centre crop, as the official code does.
    """
    shape = decoded_shape(image_bytes)
    window = inception_crop_window(shape, seed)
    is_whole_image = (window[2] == shape[0]) & (window[3] == shape[1])
    window = tf.where(is_whole_image, center_crop_window(shape, image_size),
                      window)
    return resize(decode_and_crop(image_bytes, window), image_size)


def _to_uint8(image: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.clip_by_value(image, 0.0, 255.0), tf.uint8)


@tf.autograph.experimental.do_not_convert
def preprocess_for_training(image_bytes: tf.Tensor, seed: tf.Tensor, *,
                            spec: DatasetSpec, augmentation: str,
                            image_size: int | None = None,
                            randaugment_num_layers: int = 2,
                            randaugment_magnitude: float = 9) -> tf.Tensor:
    """Decodes, augments and normalises one encoded training image.

    Args:
        image_bytes: scalar string, an encoded (JPEG/PNG) image of any size.
        seed: [2] int32/int64 stateless seed; the output is a pure function
            of (image_bytes, seed).
        spec: the data set (mean, std, flip, AutoAugment policy).
        augmentation: one of STREAMING_AUGMENTATIONS: 'none' (evaluation
            crop, nothing random), 'basic' (Inception crop + flip),
            'autoaugment' (Inception crop + AutoAugment with
            spec.autoaugment_policy + flip), 'randaugment' (Inception crop +
            RandAugment(N, M) + flip, the official ImageNet recipe).
        image_size: output side; None means spec.image_shape[0].
        randaugment_num_layers: N of RandAugment.
        randaugment_magnitude: M of RandAugment.

    Returns:
        float32 [image_size, image_size, 3] normalised image.
    """
    if augmentation not in STREAMING_AUGMENTATIONS:
        raise ValueError(
            f'augmentation {augmentation!r} is not available for streamed '
            f'data sets; allowed: {", ".join(STREAMING_AUGMENTATIONS)}')
    image_size = image_size or spec.image_shape[0]
    if augmentation == 'none':
        image = decode_and_center_crop(image_bytes, image_size)
        return normalize(image, spec.mean, spec.std)
    crop_seed, augment_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=3))
    image = decode_and_inception_crop(image_bytes, crop_seed, image_size)
    if augmentation == 'randaugment':
        image = tf.cast(autoaugment_lib.randaugment(
            _to_uint8(image), augment_seed,
            num_layers=randaugment_num_layers,
            magnitude=randaugment_magnitude), tf.float32)
    elif augmentation == 'autoaugment':
        image = tf.cast(autoaugment_lib.autoaugment(
            _to_uint8(image), augment_seed, policy=spec.autoaugment_policy),
            tf.float32)
    if spec.flip:
        image = tf.image.stateless_random_flip_left_right(image,
                                                          seed=flip_seed)
    return normalize(image, spec.mean, spec.std)


@tf.autograph.experimental.do_not_convert
def preprocess_for_eval(image_bytes: tf.Tensor, *, spec: DatasetSpec,
                        image_size: int | None = None) -> tf.Tensor:
    """Centre crop, resize and normalise: float32 [S, S, 3]; not random."""
    image_size = image_size or spec.image_shape[0]
    image = decode_and_center_crop(image_bytes, image_size)
    return normalize(image, spec.mean, spec.std)
