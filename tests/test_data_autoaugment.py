"""Tests of sam_jax.data.autoaugment: the pixel ops against PIL's ImageOps and
numpy, the paper's policies and level maps, AutoAugment and RandAugment."""

import numpy as np
from PIL import Image
from PIL import ImageOps
import pytest

from helpers import eager_and_in_tf_data
from helpers import eager_and_in_tf_data_over_seeds
from helpers import random_image
from helpers import seed
from sam_jax.data import autoaugment as aa


def pil_reference(pil_op, image):
    """A PIL ImageOps op applied to a uint8 [H, W, 1 or 3] array."""
    if image.shape[-1] == 1:
        return np.asarray(pil_op(Image.fromarray(image[..., 0])))[..., None]
    return np.asarray(pil_op(Image.fromarray(image)))


# ------------------------------------------------ AutoAugment pixel ops


@pytest.mark.parametrize('channels', [1, 3])
def test_invert_solarize_posterize_match_pil(channels):
    image = random_image((9, 10, channels))
    np.testing.assert_array_equal(
        eager_and_in_tf_data(aa.invert, image), 255 - image)
    for threshold in (0, 1, 77, 128, 255, 256):
        got = eager_and_in_tf_data(lambda x: aa.solarize(x, threshold), image)
        np.testing.assert_array_equal(
            got, pil_reference(lambda i: ImageOps.solarize(i, threshold),
                               image))
    for bits in range(1, 9):
        got = eager_and_in_tf_data(lambda x: aa.posterize(x, bits), image)
        np.testing.assert_array_equal(
            got, pil_reference(lambda i: ImageOps.posterize(i, bits), image))
        kept_bits_mask = (0xFF << (8 - bits)) & 0xFF
        np.testing.assert_array_equal(got, image & kept_bits_mask)


@pytest.mark.parametrize('channels', [1, 3])
def test_equalize_and_autocontrast_match_pil(channels):
    image = random_image((16, 12, channels))
    # Narrow ranges, so that autocontrast and equalize change something.
    image = (image // 4 + 40).astype(np.uint8)
    np.testing.assert_array_equal(eager_and_in_tf_data(aa.equalize, image),
                                  pil_reference(ImageOps.equalize, image))
    stretched = eager_and_in_tf_data(aa.autocontrast, image)
    expected = pil_reference(ImageOps.autocontrast, image)
    # PIL computes the linear map in double precision, TF in float32.
    assert np.abs(stretched.astype(int) - expected.astype(int)).max() <= 1
    # float32, as in the reference: the top can land on 254.
    assert stretched.min() == 0 and stretched.max() >= 254
    constant = np.full((4, 4, channels), 9, np.uint8)
    np.testing.assert_array_equal(aa.autocontrast(constant).numpy(), constant)
    np.testing.assert_array_equal(aa.equalize(constant).numpy(), constant)


def test_equalize_on_a_known_histogram():
    # 1,024 pixels, 256 each at 0, 64, 128, 255: PIL's step is
    # (1024 - 256) // 255 = 3 and level v maps to (1 + #pixels below v) // 3.
    values = np.repeat(np.array([0, 64, 128, 255], np.uint8), 256)
    image = np.random.default_rng(0).permutation(values).reshape(32, 32, 1)
    expected = {0: 0, 64: 257 // 3, 128: 513 // 3, 255: 255}  # 769 // 3 > 255.
    got = eager_and_in_tf_data(aa.equalize, image)
    for value, mapped in expected.items():
        assert np.all(got[image == value] == mapped)


def test_solarize_add_brightness_contrast_against_numpy():
    image = random_image((8, 8, 3))
    pixels = image.astype(np.int32)
    np.testing.assert_array_equal(
        eager_and_in_tf_data(lambda x: aa.solarize_add(x, 40), image),
        np.where(pixels < 128, np.clip(pixels + 40, 0, 255), pixels))
    for factor in (0.0, 0.37, 1.0, 1.72):
        np.testing.assert_array_equal(
            eager_and_in_tf_data(lambda x: aa.brightness(x, factor), image),
            np.clip(np.float32(factor) * pixels.astype(np.float32), 0,
                    255).astype(np.uint8))
        # The reference's grey level: 64 pixels / 256 = 0.25 -> 0.
        grey = np.float32(0)
        np.testing.assert_array_equal(
            eager_and_in_tf_data(lambda x: aa.contrast(x, factor), image),
            np.clip(grey + np.float32(factor) * (pixels - grey), 0,
                    255).astype(np.uint8))
    grey_image = random_image((6, 6, 1))
    for factor in (0.1, 1.9):
        np.testing.assert_array_equal(aa.color(grey_image, factor).numpy(),
                                      grey_image)


def test_sharpness_identities():
    image = random_image((7, 9, 3))
    np.testing.assert_array_equal(
        eager_and_in_tf_data(lambda x: aa.sharpness(x, 1.0), image), image)
    constant = np.full((6, 6, 3), 200, np.uint8)
    np.testing.assert_array_equal(aa.sharpness(constant, 0.1).numpy(),
                                  constant)
    smoothed = aa.sharpness(image, 0.0).numpy()
    # The border is kept; the interior is the 3x3 (1,1,1;1,5,1;1,1,1)/13 mean.
    np.testing.assert_array_equal(smoothed[0], image[0])
    np.testing.assert_array_equal(smoothed[:, -1], image[:, -1])
    kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]]) / 13.0
    interior = np.zeros((5, 7, 3))
    for dy in range(3):
        for dx in range(3):
            interior += kernel[dy, dx] * image[dy:dy + 5, dx:dx + 7]
    assert np.abs(smoothed[1:-1, 1:-1] - np.floor(interior)).max() <= 1


def test_geometric_ops_against_numpy():
    image = random_image((7, 7, 3))
    for op in (aa.rotate, aa.translate_x, aa.translate_y, aa.shear_x,
               aa.shear_y):
        np.testing.assert_array_equal(
            eager_and_in_tf_data(lambda x: op(x, 0.0), image), image)
    np.testing.assert_array_equal(
        eager_and_in_tf_data(lambda x: aa.rotate(x, 90.0), image),
        np.rot90(image, 1))
    np.testing.assert_array_equal(aa.rotate(image, 180.0).numpy(),
                                  image[::-1, ::-1])
    grey = np.full_like(image, 128)
    shifted = grey.copy()
    shifted[:, :4] = image[:, 3:]
    np.testing.assert_array_equal(
        eager_and_in_tf_data(lambda x: aa.translate_x(x, 3.0), image), shifted)
    shifted = grey.copy()
    shifted[2:] = image[:-2]
    np.testing.assert_array_equal(aa.translate_y(image, -2.0).numpy(), shifted)
    sheared_x, sheared_y = grey.copy(), grey.copy()
    for y in range(7):
        for x in range(7):
            if x + y < 7:
                sheared_x[y, x] = image[y, x + y]
                sheared_y[y, x] = image[y + x, x]
    np.testing.assert_array_equal(aa.shear_x(image, 1.0).numpy(), sheared_x)
    np.testing.assert_array_equal(aa.shear_y(image, 1.0).numpy(), sheared_y)
    # Translating a 32 px image by the AutoAugment level-9 225 px leaves grey.
    np.testing.assert_array_equal(aa.translate_y(image, 225.0).numpy(), grey)


def test_autoaugment_cutout_op_is_a_clipped_grey_square():
    image = random_image((10, 10, 3)) // 2  # No pixel is 128 by chance.
    pad = 3
    sizes = set()
    outputs = eager_and_in_tf_data_over_seeds(
        lambda x, s: aa.cutout(x, 2 * pad, s, 128), image, 25)
    for out in outputs:
        grey = np.all(out == 128, axis=-1)
        rows, cols = np.nonzero(grey)
        assert grey.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
        assert np.ptp(rows) + 1 <= 2 * pad and np.ptp(cols) + 1 <= 2 * pad
        np.testing.assert_array_equal(out[~grey], image[~grey])
        sizes.add(int(grey.sum()))
    assert 36 in sizes and min(sizes) < 36


# ------------------------------------------------ policies and RandAugment


def test_policies_are_the_papers():
    assert len(aa.CIFAR_POLICY) == 95 and len(aa.SVHN_POLICY) == 25
    assert len(aa.IMAGENET_POLICY) == 25
    for policy in aa.POLICIES.values():
        for sub_policy in policy:
            assert len(sub_policy) == 2
            for name, probability, level in sub_policy:
                assert name in aa.RANDAUGMENT_OPS
                assert 0.0 <= probability <= 1.0 and level in range(11)
    assert aa.SVHN_POLICY[0] == (('ShearX', 0.9, 4), ('Invert', 0.2, 3))
    assert aa.CIFAR_POLICY[0] == (('Invert', 0.1, 7), ('Contrast', 0.2, 6))


def test_level_to_argument_maps_of_the_reference():
    auto, rand = aa.AUTOAUGMENT_CONSTANTS, aa.RANDAUGMENT_CONSTANTS
    cases = [('Posterize', 7, auto, 2), ('Posterize', 3, auto, 1),
             ('Solarize', 5, auto, 128), ('Solarize', 3, auto, 76),
             ('SolarizeAdd', 7, auto, 77), ('Rotate', 8, auto, 24.0),
             ('ShearX', 5, auto, 0.15), ('Color', 9, auto, 1.72),
             ('TranslateY', 9, auto, 225.0), ('TranslateX', 9, rand, 90.0),
             ('Cutout', 4, auto, 40), ('Cutout', 9, rand, 36),
             ('Invert', 9, auto, 0.0)]
    for name, level, constants, expected in cases:
        assert aa.op_argument(name, level, constants) == pytest.approx(
            expected)
    small = aa.AUTOAUGMENT_SMALL_IMAGE_CONSTANTS
    assert aa.op_argument('TranslateX', 9, small) == pytest.approx(9.0)
    assert aa.op_argument('Cutout', 9, small) == 9  # Side 18 px.


@pytest.mark.parametrize('policy,shape', [('cifar', (32, 32, 3)),
                                          ('svhn', (32, 32, 3)),
                                          ('imagenet', (20, 24, 3)),
                                          ('cifar', (28, 28, 1))])
def test_autoaugment_shape_dtype_and_seeding(policy, shape):
    # A narrow range, so that AutoContrast, Equalize, ... change it.
    image = (random_image(shape) // 2 + 40).astype(np.uint8)
    outputs = eager_and_in_tf_data_over_seeds(
        lambda x, s: aa.autoaugment(x, s, policy=policy), image, 30)
    assert all(o.shape == shape and o.dtype == np.uint8 for o in outputs)
    again = aa.autoaugment(image, seed(3), policy=policy).numpy()
    np.testing.assert_array_equal(again, outputs[3])
    assert len({o.tobytes() for o in outputs}) > 8
    with pytest.raises(ValueError, match='allowed: cifar, svhn, imagenet'):
        aa.autoaugment(image, seed(0), policy='mnist')


def test_randaugment_shape_seeding_and_layers():
    image = random_image((24, 24, 3))
    outputs = eager_and_in_tf_data_over_seeds(
        lambda x, s: aa.randaugment(x, s, num_layers=2, magnitude=9), image,
        10)
    assert all(o.shape == image.shape and o.dtype == np.uint8
               for o in outputs)
    np.testing.assert_array_equal(aa.randaugment(image, seed(4)).numpy(),
                                  outputs[4])
    assert len({o.tobytes() for o in outputs}) > 5
    np.testing.assert_array_equal(
        aa.randaugment(image, seed(1), num_layers=0).numpy(), image)
    stronger = [aa.randaugment(image, seed(i), magnitude=3).numpy()
                for i in range(10)]
    assert any(not np.array_equal(a, b) for a, b in zip(outputs, stronger))
