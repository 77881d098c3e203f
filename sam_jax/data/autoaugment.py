"""AutoAugment (Cubuk et al. 2019) and RandAugment (Cubuk et al. 2020), in TF.

Follows the TensorFlow implementation that the official SAM code uses
(google-research/sam autoaugment/, forked from tensorflow/tpu
models/official/efficientnet/autoaugment.py): the same CIFAR-10, SVHN and
ImageNet policies, level-to-argument maps, magnitude constants and op
semantics, so augmented images follow the distribution the paper trained on.

Differences from that code, none of which changes the distribution:
- every random choice (sub-policy, whether an op fires, sign of a rotation,
  shear or translation, cutout position) is stateless, drawn from an explicit
  seed of shape [2], so the output is a pure function of (image, seed);
- ops accept 1-channel images (Fashion-MNIST, digits) as well as RGB;
- geometric ops fill uncovered pixels with 128 through the transform op's
  fill value instead of an extra alpha channel (equal with nearest sampling).

Quirks of the reference kept on purpose (they shaped the paper's numbers):
- magnitudes are ImageNet-scaled for every data set: AutoAugment translates
  by up to 250 px and cuts out squares of side up to 200 px, RandAugment
  100 px and 80 px. On 32x32 images any translation of 32 px or more leaves
  a uniform grey image. `AUTOAUGMENT_SMALL_IMAGE_CONSTANTS` gives the ranges
  of the AutoAugment paper's own CIFAR code instead.
- Contrast blends towards the grey level num_pixels / 256 (the reference sums
  the histogram counts where PIL takes the mean intensity).
- Posterize at level l keeps int(4 l / 10) bits, and 0 bits acts as 1
  because TensorFlow clamps a uint8 shift of 8 to 7.
"""

import dataclasses
import math

import tensorflow as tf

# Autograph would re-parse every op each time a tf.data map is traced
# (seconds); the code has no Python control flow on tensors to convert.
_NOT_AUTOGRAPHED = tf.autograph.experimental.do_not_convert

# Levels in the policies run from 0 to this value.
_MAX_LEVEL = 10.0
# Grey that geometric ops and cutout fill uncovered pixels with.
_FILL_VALUE = 128


@dataclasses.dataclass(frozen=True)
class MagnitudeConstants:
    """Pixel ranges of the ops whose strength is a length.

    Attributes:
        translate_const: TranslateX/Y move by level / 10 * translate_const px.
        cutout_const: Cutout squares have side 2 * int(level / 10 *
            cutout_const) px.
    """

    translate_const: float
    cutout_const: float


# google-research/sam autoaugment.py `distort_image_with_autoaugment`.
AUTOAUGMENT_CONSTANTS = MagnitudeConstants(translate_const=250.0,
                                           cutout_const=100.0)
# google-research/sam autoaugment.py `distort_image_with_randaugment`.
RANDAUGMENT_CONSTANTS = MagnitudeConstants(translate_const=100.0,
                                           cutout_const=40.0)
# The AutoAugment paper's CIFAR/SVHN code (augmentation_transforms.py):
# translation up to 10 px and cutout side up to 20 px at level 10.
AUTOAUGMENT_SMALL_IMAGE_CONSTANTS = MagnitudeConstants(translate_const=10.0,
                                                       cutout_const=10.0)

# Each sub-policy is two (op name, probability, level) applied in order.
CIFAR_POLICY = (
    (('Invert', 0.1, 7), ('Contrast', 0.2, 6)),
    (('Rotate', 0.7, 2), ('TranslateX', 0.3, 9)),
    (('Sharpness', 0.8, 1), ('Sharpness', 0.9, 3)),
    (('ShearY', 0.5, 8), ('TranslateY', 0.7, 9)),
    (('AutoContrast', 0.5, 8), ('Equalize', 0.9, 2)),
    (('Solarize', 0.4, 5), ('AutoContrast', 0.9, 3)),
    (('TranslateY', 0.9, 9), ('TranslateY', 0.7, 9)),
    (('AutoContrast', 0.9, 2), ('Solarize', 0.8, 3)),
    (('Equalize', 0.8, 8), ('Invert', 0.1, 3)),
    (('TranslateY', 0.7, 9), ('AutoContrast', 0.9, 1)),
    (('Solarize', 0.4, 5), ('AutoContrast', 0.0, 2)),
    (('TranslateY', 0.7, 9), ('TranslateY', 0.7, 9)),
    (('AutoContrast', 0.9, 0), ('Solarize', 0.4, 3)),
    (('Equalize', 0.7, 5), ('Invert', 0.1, 3)),
    (('TranslateY', 0.7, 9), ('TranslateY', 0.7, 9)),
    (('Solarize', 0.4, 5), ('AutoContrast', 0.9, 1)),
    (('TranslateY', 0.8, 9), ('TranslateY', 0.9, 9)),
    (('AutoContrast', 0.8, 0), ('TranslateY', 0.7, 9)),
    (('TranslateY', 0.2, 7), ('Color', 0.9, 6)),
    (('Equalize', 0.7, 6), ('Color', 0.4, 9)),
    (('ShearY', 0.2, 7), ('Posterize', 0.3, 7)),
    (('Color', 0.4, 3), ('Brightness', 0.6, 7)),
    (('Sharpness', 0.3, 9), ('Brightness', 0.7, 9)),
    (('Equalize', 0.6, 5), ('Equalize', 0.5, 1)),
    (('Contrast', 0.6, 7), ('Sharpness', 0.6, 5)),
    (('Brightness', 0.3, 7), ('AutoContrast', 0.5, 8)),
    (('AutoContrast', 0.9, 4), ('AutoContrast', 0.5, 6)),
    (('Solarize', 0.3, 5), ('Equalize', 0.6, 5)),
    (('TranslateY', 0.2, 4), ('Sharpness', 0.3, 3)),
    (('Brightness', 0.0, 8), ('Color', 0.8, 8)),
    (('Solarize', 0.2, 6), ('Color', 0.8, 6)),
    (('Solarize', 0.2, 6), ('AutoContrast', 0.8, 1)),
    (('Solarize', 0.4, 1), ('Equalize', 0.6, 5)),
    (('Brightness', 0.0, 0), ('Solarize', 0.5, 2)),
    (('AutoContrast', 0.9, 5), ('Brightness', 0.5, 3)),
    (('Contrast', 0.7, 5), ('Brightness', 0.0, 2)),
    (('Solarize', 0.2, 8), ('Solarize', 0.1, 5)),
    (('Contrast', 0.5, 1), ('TranslateY', 0.2, 9)),
    (('AutoContrast', 0.6, 5), ('TranslateY', 0.0, 9)),
    (('AutoContrast', 0.9, 4), ('Equalize', 0.8, 4)),
    (('Brightness', 0.0, 7), ('Equalize', 0.4, 7)),
    (('Solarize', 0.2, 5), ('Equalize', 0.7, 5)),
    (('Equalize', 0.6, 8), ('Color', 0.6, 2)),
    (('Color', 0.3, 7), ('Color', 0.2, 4)),
    (('AutoContrast', 0.5, 2), ('Solarize', 0.7, 2)),
    (('AutoContrast', 0.2, 0), ('Equalize', 0.1, 0)),
    (('ShearY', 0.6, 5), ('Equalize', 0.6, 5)),
    (('Brightness', 0.9, 3), ('AutoContrast', 0.4, 1)),
    (('Equalize', 0.8, 8), ('Equalize', 0.7, 7)),
    (('Equalize', 0.7, 7), ('Solarize', 0.5, 0)),
    (('Equalize', 0.8, 4), ('TranslateY', 0.8, 9)),
    (('TranslateY', 0.8, 9), ('TranslateY', 0.6, 9)),
    (('TranslateY', 0.9, 0), ('TranslateY', 0.5, 9)),
    (('AutoContrast', 0.5, 3), ('Solarize', 0.3, 4)),
    (('Solarize', 0.5, 3), ('Equalize', 0.4, 4)),
    (('Color', 0.7, 7), ('TranslateX', 0.5, 8)),
    (('Equalize', 0.3, 7), ('AutoContrast', 0.4, 8)),
    (('TranslateY', 0.4, 3), ('Sharpness', 0.2, 6)),
    (('Brightness', 0.9, 6), ('Color', 0.2, 8)),
    (('Solarize', 0.5, 2), ('Invert', 0.0, 3)),
    (('AutoContrast', 0.1, 5), ('Brightness', 0.0, 0)),
    (('Cutout', 0.2, 4), ('Equalize', 0.1, 1)),
    (('Equalize', 0.7, 7), ('AutoContrast', 0.6, 4)),
    (('Color', 0.1, 8), ('ShearY', 0.2, 3)),
    (('ShearY', 0.4, 2), ('Rotate', 0.7, 0)),
    (('ShearY', 0.1, 3), ('AutoContrast', 0.9, 5)),
    (('TranslateY', 0.3, 6), ('Cutout', 0.3, 3)),
    (('Equalize', 0.5, 0), ('Solarize', 0.6, 6)),
    (('AutoContrast', 0.3, 5), ('Rotate', 0.2, 7)),
    (('Equalize', 0.8, 2), ('Invert', 0.4, 0)),
    (('Equalize', 0.9, 5), ('Color', 0.7, 0)),
    (('Equalize', 0.1, 1), ('ShearY', 0.1, 3)),
    (('AutoContrast', 0.7, 3), ('Equalize', 0.7, 0)),
    (('Brightness', 0.5, 1), ('Contrast', 0.1, 7)),
    (('Contrast', 0.1, 4), ('Solarize', 0.6, 5)),
    (('Solarize', 0.2, 3), ('ShearX', 0.0, 0)),
    (('TranslateX', 0.3, 0), ('TranslateX', 0.6, 0)),
    (('Equalize', 0.5, 9), ('TranslateY', 0.6, 7)),
    (('ShearX', 0.1, 0), ('Sharpness', 0.5, 1)),
    (('Equalize', 0.8, 6), ('Invert', 0.3, 6)),
    (('AutoContrast', 0.3, 9), ('Cutout', 0.5, 3)),
    (('ShearX', 0.4, 4), ('AutoContrast', 0.9, 2)),
    (('ShearX', 0.0, 3), ('Posterize', 0.0, 3)),
    (('Solarize', 0.4, 3), ('Color', 0.2, 4)),
    (('Equalize', 0.1, 4), ('Equalize', 0.7, 6)),
    (('Equalize', 0.3, 8), ('AutoContrast', 0.4, 3)),
    (('Solarize', 0.6, 4), ('AutoContrast', 0.7, 6)),
    (('AutoContrast', 0.2, 9), ('Brightness', 0.4, 8)),
    (('Equalize', 0.1, 0), ('Equalize', 0.0, 6)),
    (('Equalize', 0.8, 4), ('Equalize', 0.0, 4)),
    (('Equalize', 0.5, 5), ('AutoContrast', 0.1, 2)),
    (('Solarize', 0.5, 5), ('AutoContrast', 0.9, 5)),
    (('AutoContrast', 0.6, 1), ('AutoContrast', 0.7, 8)),
    (('Equalize', 0.2, 0), ('AutoContrast', 0.1, 2)),
    (('Equalize', 0.6, 9), ('Equalize', 0.4, 4)),
)

SVHN_POLICY = (
    (('ShearX', 0.9, 4), ('Invert', 0.2, 3)),
    (('ShearY', 0.9, 8), ('Invert', 0.7, 5)),
    (('Equalize', 0.6, 5), ('Solarize', 0.6, 6)),
    (('Invert', 0.9, 3), ('Equalize', 0.6, 3)),
    (('Equalize', 0.6, 1), ('Rotate', 0.9, 3)),
    (('ShearX', 0.9, 4), ('AutoContrast', 0.8, 3)),
    (('ShearY', 0.9, 8), ('Invert', 0.4, 5)),
    (('ShearY', 0.9, 5), ('Solarize', 0.2, 6)),
    (('Invert', 0.9, 6), ('AutoContrast', 0.8, 1)),
    (('Equalize', 0.6, 3), ('Rotate', 0.9, 3)),
    (('ShearX', 0.9, 4), ('Solarize', 0.3, 3)),
    (('ShearY', 0.8, 8), ('Invert', 0.7, 4)),
    (('Equalize', 0.9, 5), ('TranslateY', 0.6, 6)),
    (('Invert', 0.9, 4), ('Equalize', 0.6, 7)),
    (('Contrast', 0.3, 3), ('Rotate', 0.8, 4)),
    (('Invert', 0.8, 5), ('TranslateY', 0.0, 2)),
    (('ShearY', 0.7, 6), ('Solarize', 0.4, 8)),
    (('Invert', 0.6, 4), ('Rotate', 0.8, 4)),
    (('ShearY', 0.3, 7), ('TranslateX', 0.9, 3)),
    (('ShearX', 0.1, 6), ('Invert', 0.6, 5)),
    (('Solarize', 0.7, 2), ('TranslateY', 0.6, 7)),
    (('ShearY', 0.8, 4), ('Invert', 0.8, 8)),
    (('ShearX', 0.7, 9), ('TranslateY', 0.8, 3)),
    (('ShearY', 0.8, 5), ('AutoContrast', 0.7, 3)),
    (('ShearX', 0.7, 2), ('Invert', 0.1, 5)),
)

IMAGENET_POLICY = (
    (('Equalize', 0.8, 1), ('ShearY', 0.8, 4)),
    (('Color', 0.4, 9), ('Equalize', 0.6, 3)),
    (('Color', 0.4, 1), ('Rotate', 0.6, 8)),
    (('Solarize', 0.8, 3), ('Equalize', 0.4, 7)),
    (('Solarize', 0.4, 2), ('Solarize', 0.6, 2)),
    (('Color', 0.2, 0), ('Equalize', 0.8, 8)),
    (('Equalize', 0.4, 8), ('SolarizeAdd', 0.8, 3)),
    (('ShearX', 0.2, 9), ('Rotate', 0.6, 8)),
    (('Color', 0.6, 1), ('Equalize', 1.0, 2)),
    (('Invert', 0.4, 9), ('Rotate', 0.6, 0)),
    (('Equalize', 1.0, 9), ('ShearY', 0.6, 3)),
    (('Color', 0.4, 7), ('Equalize', 0.6, 0)),
    (('Posterize', 0.4, 6), ('AutoContrast', 0.4, 7)),
    (('Solarize', 0.6, 8), ('Color', 0.6, 9)),
    (('Solarize', 0.2, 4), ('Rotate', 0.8, 9)),
    (('Rotate', 1.0, 7), ('TranslateY', 0.8, 9)),
    (('ShearX', 0.0, 0), ('Solarize', 0.8, 4)),
    (('ShearY', 0.8, 0), ('Color', 0.6, 4)),
    (('Color', 1.0, 0), ('Rotate', 0.6, 2)),
    (('Equalize', 0.8, 4), ('Equalize', 0.0, 8)),
    (('Equalize', 1.0, 4), ('AutoContrast', 0.6, 2)),
    (('ShearY', 0.4, 7), ('SolarizeAdd', 0.6, 7)),
    (('Posterize', 0.8, 2), ('Solarize', 0.6, 10)),
    (('Solarize', 0.6, 8), ('Equalize', 0.6, 1)),
    (('Color', 0.8, 6), ('Rotate', 0.4, 5)),
)

POLICIES = {
    'cifar': CIFAR_POLICY,
    'svhn': SVHN_POLICY,
    'imagenet': IMAGENET_POLICY,
}

# RandAugment draws uniformly from these ops (order as in the reference).
RANDAUGMENT_OPS = (
    'AutoContrast', 'Equalize', 'Invert', 'Rotate', 'Posterize', 'Solarize',
    'Color', 'Contrast', 'Brightness', 'Sharpness', 'ShearX', 'ShearY',
    'TranslateX', 'TranslateY', 'Cutout', 'SolarizeAdd')


# ------------------------------------------------------------ pixel ops
# All take and return uint8 [H, W, C] images, C = 1 or 3.


def blend(image1: tf.Tensor, image2: tf.Tensor, factor) -> tf.Tensor:
    """image1 + factor * (image2 - image1), clipped to 0..255, truncated.

    factor 0 gives image1, 1 gives image2, above 1 extrapolates (as PIL's
    ImageEnhance does).
    """
    image1 = tf.cast(image1, tf.float32)
    image2 = tf.cast(image2, tf.float32)
    blended = image1 + factor * (image2 - image1)
    return tf.cast(tf.clip_by_value(blended, 0.0, 255.0), tf.uint8)


def _grayscale(image: tf.Tensor) -> tf.Tensor:
    """Luma replicated over the channels; a 1-channel image is its own."""
    if image.shape[-1] == 1:
        return image
    return tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))


def invert(image: tf.Tensor) -> tf.Tensor:
    """255 - image."""
    return 255 - image


def solarize(image: tf.Tensor, threshold: int) -> tf.Tensor:
    """Inverts the pixels at or above `threshold` (256 leaves all)."""
    below = tf.cast(image, tf.int32) < threshold
    return tf.where(below, image, 255 - image)


def solarize_add(image: tf.Tensor, addition: int,
                 threshold: int = 128) -> tf.Tensor:
    """Adds `addition` (clipped to 0..255) to the pixels below `threshold`."""
    added = tf.clip_by_value(tf.cast(image, tf.int32) + addition, 0, 255)
    below = tf.cast(image, tf.int32) < threshold
    return tf.where(below, tf.cast(added, tf.uint8), image)


def posterize(image: tf.Tensor, bits: int) -> tf.Tensor:
    """Keeps the `bits` most significant bits of each pixel (1 <= bits <= 8).

    Shifts right then left as the reference does; TensorFlow clamps a shift
    of 8 to 7, so bits=0 keeps 1 bit there too.
    """
    shift = tf.cast(8 - bits, tf.uint8)
    return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def autocontrast(image: tf.Tensor) -> tf.Tensor:
    """Stretches each channel linearly so its min is 0 and its max 255."""
    pixels = tf.cast(image, tf.float32)
    low = tf.reduce_min(pixels, axis=[0, 1])
    high = tf.reduce_max(pixels, axis=[0, 1])
    scale = 255.0 / tf.where(high > low, high - low, 1.0)
    offset = -low * scale
    stretched = tf.cast(
        tf.clip_by_value(pixels * scale + offset, 0.0, 255.0), tf.uint8)
    # A constant channel is left as it is.
    return tf.where(high > low, stretched, image)


def _equalize_channel(channel: tf.Tensor) -> tf.Tensor:
    """PIL's ImageOps.equalize of one uint8 [H, W] channel."""
    values = tf.cast(channel, tf.int32)
    histogram = tf.math.bincount(tf.reshape(values, [-1]), minlength=256,
                                 maxlength=256, dtype=tf.int32)
    nonzero_counts = tf.boolean_mask(histogram, histogram > 0)
    # PIL leaves out the last occupied bin when spreading the others.
    step = (tf.reduce_sum(nonzero_counts) - nonzero_counts[-1]) // 255

    def equalized():
        lookup = (tf.cumsum(histogram) + step // 2) // step
        lookup = tf.clip_by_value(tf.concat([[0], lookup[:-1]], 0), 0, 255)
        return tf.cast(tf.gather(lookup, values), tf.uint8)

    return tf.cond(tf.equal(step, 0), lambda: channel, equalized)


def equalize(image: tf.Tensor) -> tf.Tensor:
    """Histogram equalisation of each channel, as PIL's ImageOps.equalize."""
    channels = [_equalize_channel(image[:, :, c])
                for c in range(image.shape[-1])]
    return tf.stack(channels, axis=-1)


def color(image: tf.Tensor, factor: float) -> tf.Tensor:
    """PIL Color: blends from the grey image (0) to the image (1)."""
    return blend(_grayscale(image), image, factor)


def contrast(image: tf.Tensor, factor: float) -> tf.Tensor:
    """Contrast as in the reference: blends from a constant grey image.

    The grey level is min(num_pixels / 256, 255), truncated: the reference
    divides the sum of the histogram counts, not the mean intensity (PIL),
    by 256. Kept so that augmented images match the paper's.
    """
    num_pixels = tf.cast(tf.shape(image)[0] * tf.shape(image)[1], tf.float32)
    grey_level = tf.cast(tf.clip_by_value(num_pixels / 256.0, 0.0, 255.0),
                         tf.uint8)
    return blend(tf.fill(tf.shape(image), grey_level), image, factor)


def brightness(image: tf.Tensor, factor: float) -> tf.Tensor:
    """PIL Brightness: blends from black (0) to the image (1)."""
    return blend(tf.zeros_like(image), image, factor)


def sharpness(image: tf.Tensor, factor: float) -> tf.Tensor:
    """PIL Sharpness: blends from a smoothed image (0) to the image (1).

    The smoothing is PIL's SMOOTH 3x3 kernel; border pixels stay unsmoothed.
    """
    channels = image.shape[-1]
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    kernel = tf.tile(kernel[:, :, tf.newaxis, tf.newaxis], [1, 1, channels, 1])
    smoothed = tf.nn.depthwise_conv2d(
        tf.cast(image, tf.float32)[tf.newaxis], kernel, strides=[1, 1, 1, 1],
        padding='VALID')[0]
    smoothed = tf.cast(tf.clip_by_value(smoothed, 0.0, 255.0), tf.uint8)
    border = [[1, 1], [1, 1], [0, 0]]
    interior = tf.pad(tf.ones_like(smoothed), border) > 0
    degenerate = tf.where(interior, tf.pad(smoothed, border), image)
    return blend(degenerate, image, factor)


def _projective_transform(image: tf.Tensor, transform) -> tf.Tensor:
    """Samples image at transform(output pixel), nearest, grey outside.

    `transform` = [a0, a1, a2, b0, b1, b2, 0, 0] maps output (x, y) to input
    (a0 x + a1 y + a2, b0 x + b1 y + b2), as tfa.image.transform.
    """
    transform = tf.reshape(tf.cast(tf.stack(transform), tf.float32), [1, 8])
    transformed = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[tf.newaxis], transforms=transform,
        output_shape=tf.shape(image)[:2], fill_value=float(_FILL_VALUE),
        interpolation='NEAREST', fill_mode='CONSTANT')
    return transformed[0]


def rotate(image: tf.Tensor, degrees) -> tf.Tensor:
    """Rotates counter-clockwise by `degrees` about the image centre."""
    radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    cos, sin = tf.cos(radians), tf.sin(radians)
    x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2.0
    y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2.0
    return _projective_transform(
        image, [cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0])


def translate_x(image: tf.Tensor, pixels) -> tf.Tensor:
    """Output pixel (x, y) = input (x + pixels, y): content moves left."""
    pixels = tf.cast(pixels, tf.float32)
    return _projective_transform(
        image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0, 0.0, 0.0])


def translate_y(image: tf.Tensor, pixels) -> tf.Tensor:
    """Output pixel (x, y) = input (x, y + pixels): content moves up."""
    pixels = tf.cast(pixels, tf.float32)
    return _projective_transform(
        image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels, 0.0, 0.0])


def shear_x(image: tf.Tensor, level) -> tf.Tensor:
    """Output pixel (x, y) = input (x + level * y, y)."""
    level = tf.cast(level, tf.float32)
    return _projective_transform(
        image, [1.0, level, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def shear_y(image: tf.Tensor, level) -> tf.Tensor:
    """Output pixel (x, y) = input (x, level * x + y)."""
    level = tf.cast(level, tf.float32)
    return _projective_transform(
        image, [1.0, 0.0, 0.0, level, 1.0, 0.0, 0.0, 0.0])


def cutout(image: tf.Tensor, size, seed: tf.Tensor, fill=0) -> tf.Tensor:
    """Sets a `size` x `size` square of the image to `fill`.

    The square's centre is uniform over all pixels, so near a border the
    square is clipped (as in DeVries & Taylor 2017): rows
    [centre - size // 2, centre - size // 2 + size), and likewise columns,
    intersected with the image. The basic pipeline's cutout zeroes a square of
    the normalised image (0 is the data set mean, as in the official SAM
    code); AutoAugment's Cutout op fills a 2 * level square of the uint8
    image with grey 128.

    Args:
        image: [H, W, C] tensor.
        size: side of the square, in pixels (an int or an int32 tensor).
        seed: [2] int32/int64 stateless seed.
        fill: the value of the square's pixels.
    """
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    row_seed, col_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=2))
    centre_row = tf.random.stateless_uniform(
        [], seed=row_seed, maxval=height, dtype=tf.int32)
    centre_col = tf.random.stateless_uniform(
        [], seed=col_seed, maxval=width, dtype=tf.int32)
    top = centre_row - size // 2
    left = centre_col - size // 2
    rows = tf.range(height)[:, tf.newaxis]
    cols = tf.range(width)[tf.newaxis, :]
    inside = ((rows >= top) & (rows < top + size)
              & (cols >= left) & (cols < left + size))
    filled = tf.fill(tf.shape(image), tf.constant(fill, image.dtype))
    return tf.where(inside[:, :, tf.newaxis], filled, image)


# ----------------------------------------------------- levels and policies


def _random_sign(value, seed: tf.Tensor) -> tf.Tensor:
    """+value or -value with probability 1/2 each."""
    negate = tf.random.stateless_uniform([], seed=seed) < 0.5
    return tf.where(negate, -value, value)


def op_argument(name: str, level: float,
                constants: MagnitudeConstants) -> float:
    """The reference's argument of op `name` at `level` (0..10).

    Computed in Python, as the reference does, so that int() truncations
    match it exactly. Rotate, Shear and Translate get a random sign later.
    """
    fraction = level / _MAX_LEVEL
    if name in ('AutoContrast', 'Equalize', 'Invert'):
        return 0.0
    if name == 'Rotate':
        return fraction * 30.0
    if name == 'Posterize':
        return float(int(fraction * 4))
    if name == 'Solarize':
        return float(int(fraction * 256))
    if name == 'SolarizeAdd':
        return float(int(fraction * 110))
    if name in ('Color', 'Contrast', 'Brightness', 'Sharpness'):
        return fraction * 1.8 + 0.1
    if name in ('ShearX', 'ShearY'):
        return fraction * 0.3
    if name in ('TranslateX', 'TranslateY'):
        return fraction * constants.translate_const
    if name == 'Cutout':
        return float(int(fraction * constants.cutout_const))
    raise ValueError(f'unknown augmentation op {name!r}; allowed: '
                     f'{", ".join(RANDAUGMENT_OPS)}')


# Op name -> fn(image, argument float32 scalar, seed [2]) -> image.
_OPS = {
    'AutoContrast': lambda image, argument, seed: autocontrast(image),
    'Equalize': lambda image, argument, seed: equalize(image),
    'Invert': lambda image, argument, seed: invert(image),
    'Rotate': lambda image, argument, seed: rotate(
        image, _random_sign(argument, seed)),
    'Posterize': lambda image, argument, seed: posterize(
        image, tf.cast(argument, tf.int32)),
    'Solarize': lambda image, argument, seed: solarize(
        image, tf.cast(argument, tf.int32)),
    'SolarizeAdd': lambda image, argument, seed: solarize_add(
        image, tf.cast(argument, tf.int32)),
    'Color': lambda image, argument, seed: color(image, argument),
    'Contrast': lambda image, argument, seed: contrast(image, argument),
    'Brightness': lambda image, argument, seed: brightness(image, argument),
    'Sharpness': lambda image, argument, seed: sharpness(image, argument),
    'ShearX': lambda image, argument, seed: shear_x(
        image, _random_sign(argument, seed)),
    'ShearY': lambda image, argument, seed: shear_y(
        image, _random_sign(argument, seed)),
    'TranslateX': lambda image, argument, seed: translate_x(
        image, _random_sign(argument, seed)),
    'TranslateY': lambda image, argument, seed: translate_y(
        image, _random_sign(argument, seed)),
    'Cutout': lambda image, argument, seed: cutout(
        image, 2 * tf.cast(argument, tf.int32), seed, _FILL_VALUE),
}


@_NOT_AUTOGRAPHED
def apply_op(image: tf.Tensor, name: str, level: float, seed: tf.Tensor,
             constants: MagnitudeConstants) -> tf.Tensor:
    """Applies op `name` at strength `level` (0..10), as the reference maps it.

    Args:
        image: uint8 [H, W, C].
        name: an op name of RANDAUGMENT_OPS, e.g. 'Rotate'.
        level: strength; the op's argument is `op_argument(name, level)`,
            e.g. Rotate by level / 10 * 30 degrees.
        seed: [2] stateless seed for the op's sign or position.
        constants: pixel ranges of TranslateX/Y and Cutout.

    Returns:
        uint8 image of the same shape.
    """
    argument = tf.constant(op_argument(name, level, constants), tf.float32)
    return _OPS[name](image, argument, seed)


def _apply_op_by_index(image, op_index, argument, seed):
    """Applies RANDAUGMENT_OPS[op_index]; one graph branch per op type."""
    branches = [
        (lambda name=name: _OPS[name](image, argument, seed))
        for name in RANDAUGMENT_OPS]
    return tf.ensure_shape(tf.switch_case(op_index, branches), image.shape)


def _policy_tables(policy: str, constants: MagnitudeConstants):
    """(op index, probability, argument) tables [num_sub_policies, 2]."""
    sub_policies = POLICIES[policy]
    op_indices = [[RANDAUGMENT_OPS.index(name) for name, _, _ in sub_policy]
                  for sub_policy in sub_policies]
    probabilities = [[probability for _, probability, _ in sub_policy]
                     for sub_policy in sub_policies]
    arguments = [[op_argument(name, level, constants)
                  for name, _, level in sub_policy]
                 for sub_policy in sub_policies]
    return (tf.constant(op_indices, tf.int32),
            tf.constant(probabilities, tf.float32),
            tf.constant(arguments, tf.float32))


@_NOT_AUTOGRAPHED
def autoaugment(image: tf.Tensor, seed: tf.Tensor, policy: str = 'cifar',
                constants: MagnitudeConstants = AUTOAUGMENT_CONSTANTS
                ) -> tf.Tensor:
    """Applies one uniformly drawn sub-policy of an AutoAugment policy.

    Each of the sub-policy's two ops fires with its probability, in order.

    Args:
        image: uint8 [H, W, C] image, C = 1 or 3.
        seed: [2] int32/int64 stateless seed; the output is a pure function
            of (image, seed).
        policy: 'cifar' (the CIFAR-10 policy, 95 sub-policies), 'svhn' or
            'imagenet'.
        constants: pixel ranges of Translate and Cutout; the default is the
            official SAM code's (ImageNet-scaled) choice.

    Returns:
        uint8 image of the same shape.
    """
    if policy not in POLICIES:
        raise ValueError(f'unknown AutoAugment policy {policy!r}; allowed: '
                         f'{", ".join(POLICIES)}')
    op_indices, probabilities, arguments = _policy_tables(policy, constants)
    seeds = tf.random.experimental.stateless_split(seed, num=5)
    chosen = tf.random.stateless_uniform(
        [], seed=seeds[0], maxval=len(POLICIES[policy]), dtype=tf.int32)

    def apply_slot(slot, image):
        coin_seed, op_seed = seeds[1 + 2 * slot], seeds[2 + 2 * slot]
        fires = (tf.random.stateless_uniform([], seed=coin_seed)
                 < probabilities[chosen, slot])
        image = tf.cond(
            fires,
            lambda: _apply_op_by_index(image, op_indices[chosen, slot],
                                       arguments[chosen, slot], op_seed),
            lambda: image)
        return slot + 1, image

    # A loop, not two copies: the graph holds each op once.
    _, image = tf.while_loop(lambda slot, _: slot < 2, apply_slot,
                             [tf.constant(0), image])
    return image


@_NOT_AUTOGRAPHED
def randaugment(image: tf.Tensor, seed: tf.Tensor, num_layers: int = 2,
                magnitude: float = 9,
                constants: MagnitudeConstants = RANDAUGMENT_CONSTANTS
                ) -> tf.Tensor:
    """Applies `num_layers` ops drawn uniformly from RANDAUGMENT_OPS.

    Every drawn op is applied (the reference draws a probability but never
    uses it) at the shared `magnitude`. The defaults N=2, M=9 are the official
    SAM code's ImageNet flags (randaug_num_layers, randaug_magnitude).

    Args:
        image: uint8 [H, W, C] image, C = 1 or 3.
        seed: [2] int32/int64 stateless seed.
        num_layers: N, ops applied in sequence.
        magnitude: M, level of every op (0..10 in the policies' units;
            larger values extrapolate).
        constants: pixel ranges of Translate and Cutout.

    Returns:
        uint8 image of the same shape.
    """
    arguments = tf.constant([op_argument(name, float(magnitude), constants)
                             for name in RANDAUGMENT_OPS], tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, num=2 * num_layers)

    def apply_layer(layer, image):
        chosen = tf.random.stateless_uniform(
            [], seed=seeds[2 * layer], maxval=len(RANDAUGMENT_OPS),
            dtype=tf.int32)
        image = _apply_op_by_index(image, chosen, arguments[chosen],
                                   seeds[2 * layer + 1])
        return layer + 1, image

    # A loop, not N copies: the graph holds each op once.
    _, image = tf.while_loop(lambda layer, _: layer < num_layers, apply_layer,
                             [tf.constant(0), image])
    return image
