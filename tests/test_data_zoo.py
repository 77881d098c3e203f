"""Tests of AutoAugment, ImageNet preprocessing, streaming and image folders.

References are independent where possible: PIL's ImageOps for the pixel
ops, numpy for crops, shifts and closed forms, example identities (labels or
exact images) for the coverage of the streamed pipelines.
"""

import dataclasses
import os

from etils import epath
import numpy as np
from PIL import Image
from PIL import ImageOps
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from sam_jax import data
from sam_jax.data import augment
from sam_jax.data import autoaugment as aa
from sam_jax.data import image_folder
from sam_jax.data import imagenet_preprocessing as inet
from sam_jax.data import streaming

CIFAR_SPEC = data.DATASETS['cifar10']
SVHN_SPEC = data.DATASETS['svhn_cropped']


def seed(i):
    return tf.constant([i, 11], tf.int64)


def random_image(shape, key=0):
    return np.random.default_rng(key).integers(0, 256, shape, np.uint8)


def eager_and_in_tf_data(fn, image):
    """fn(image) eagerly and inside a Dataset.map; asserts they agree."""
    eager = fn(tf.constant(image)).numpy()
    mapped = next(iter(tf.data.Dataset.from_tensors(image).map(fn))).numpy()
    np.testing.assert_array_equal(eager, mapped)
    return eager


def eager_and_in_tf_data_over_seeds(fn, image, num_seeds):
    """[fn(image, seed(i)) for i < num_seeds], eagerly and in one
    Dataset.map (one trace); asserts they agree."""
    eager = [fn(tf.constant(image), seed(i)).numpy() for i in range(num_seeds)]
    mapped = tf.data.Dataset.range(num_seeds).map(
        lambda i: fn(tf.constant(image), tf.stack([i, 11])))
    for got, want in zip(mapped.as_numpy_iterator(), eager):
        np.testing.assert_array_equal(got, want)
    return eager


def pil_reference(pil_op, image):
    """A PIL ImageOps op applied to a uint8 [H, W, 1 or 3] array."""
    if image.shape[-1] == 1:
        return np.asarray(pil_op(Image.fromarray(image[..., 0])))[..., None]
    return np.asarray(pil_op(Image.fromarray(image)))


def denormalize(image, spec):
    return np.round(image * np.array(spec.std) + np.array(spec.mean))


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
        lambda x, s: aa.cutout(x, pad, s), image, 25)
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


# ------------------------------------------------ ImageNet preprocessing


def encode(image, image_format):
    if image_format == 'jpeg':
        return tf.io.encode_jpeg(image, quality=95).numpy()
    return tf.io.encode_png(image).numpy()


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


# ------------------------------------------------------- streaming: mock


MOCK_EXAMPLES = 24
IMAGENET_SPEC = data.DATASETS['imagenet2012']


def mock_train_batches(**kwargs):
    settings = dict(spec=IMAGENET_SPEC, augmentation='basic',
                    global_batch_size=4, seed=0, start_step=0, num_steps=14,
                    image_size=16, shuffle_window=8, num_chunks=3)
    settings.update(kwargs)
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        return list(data.streaming_train_dataset(
            'imagenet2012', 'train', **settings).as_numpy_iterator())


@pytest.fixture(scope='module')
def mock_batches_from_start():
    # 24 examples / batch 4: 6 steps per epoch; 14 steps span 3 epochs.
    return mock_train_batches()


@pytest.mark.parametrize('start_step', [5, 6, 13])
def test_streaming_resume_reproduces_batches_bit_for_bit(
        mock_batches_from_start, start_step):
    from_start = mock_batches_from_start
    resumed = mock_train_batches(start_step=start_step)
    assert len(from_start) == 14 and len(resumed) == 14 - start_step
    for got, want in zip(resumed, from_start[start_step:]):
        assert got['image'].shape == (4, 16, 16, 3)
        assert got['image'].dtype == np.float32
        assert got['label'].dtype == np.int32
        np.testing.assert_array_equal(got['label'], want['label'])
        np.testing.assert_array_equal(got['image'], want['image'])


def test_streaming_seed_changes_order_and_augmentation(
        mock_batches_from_start):
    other_seed = mock_train_batches(seed=1, num_steps=6)
    first = mock_batches_from_start
    assert not np.array_equal(other_seed[0]['image'], first[0]['image'])
    assert not np.array_equal(
        np.concatenate([b['label'] for b in other_seed]),
        np.concatenate([b['label'] for b in first[:6]]))


def test_streaming_epoch_covers_each_mock_example_once():
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        source = streaming.open_source('imagenet2012', IMAGENET_SPEC)
        references = [
            inet.preprocess_for_eval(record['image'], spec=IMAGENET_SPEC,
                                     image_size=16).numpy()
            for record in source.read('train')]
    assert len({r.tobytes() for r in references}) == MOCK_EXAMPLES

    def example_ids(batches):
        return [next(i for i, r in enumerate(references)
                     if np.array_equal(image, r))
                for batch in batches for image in batch['image']]

    batches = mock_train_batches(augmentation='none', num_steps=12,
                                 global_batch_size=4)
    first_epoch, second_epoch = example_ids(batches[:6]), example_ids(
        batches[6:])
    assert sorted(first_epoch) == list(range(MOCK_EXAMPLES))
    assert sorted(second_epoch) == list(range(MOCK_EXAMPLES))
    assert first_epoch != second_epoch


def mock_eval_batches(**kwargs):
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        return list(data.streaming_eval_batches(
            'imagenet2012', 'validation', spec=IMAGENET_SPEC, image_size=16,
            **kwargs))


@pytest.mark.parametrize('global_batch_size', [5, 24, 32])
def test_streaming_eval_covers_each_example_once_with_padding(
        global_batch_size):
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        source = streaming.open_source('imagenet2012', IMAGENET_SPEC)
        records = list(source.read('validation').as_numpy_iterator())
    batches = mock_eval_batches(global_batch_size=global_batch_size)
    assert len(batches) == data.num_eval_batches(MOCK_EXAMPLES,
                                                 global_batch_size)
    mask = np.concatenate([b['mask'] for b in batches])
    assert mask.dtype == np.float32 and mask.sum() == MOCK_EXAMPLES
    assert np.all(mask[:MOCK_EXAMPLES] == 1)
    labels = np.concatenate([b['label'] for b in batches])
    np.testing.assert_array_equal(labels[:MOCK_EXAMPLES],
                                  [r['label'] for r in records])
    images = np.concatenate([b['image'] for b in batches])
    assert images.shape[1:] == (16, 16, 3)
    assert np.all(images[MOCK_EXAMPLES:] == 0)
    np.testing.assert_array_equal(
        images[7], inet.preprocess_for_eval(
            records[7]['image'], spec=IMAGENET_SPEC, image_size=16).numpy())


def test_streaming_eval_host_slices_concatenate_to_global_batches():
    # 24 examples in batches of 10: the last global batch holds 4, all on
    # host 0 (host 1's slice is pure padding).
    global_batches = mock_eval_batches(global_batch_size=10)
    hosts = [mock_eval_batches(global_batch_size=10, process_index=k,
                               process_count=2) for k in range(2)]
    assert [len(h) for h in hosts] == [3, 3]
    assert hosts[1][2]['mask'].sum() == 0
    for step, want in enumerate(global_batches):
        for key in ('image', 'label', 'mask'):
            got = np.concatenate([host[step][key] for host in hosts])
            np.testing.assert_array_equal(got, want[key])


def test_streaming_rejects_in_memory_only_augmentations():
    with pytest.raises(ValueError, match='not available for streamed'):
        data.streaming_train_dataset(
            'imagenet2012', 'train', spec=IMAGENET_SPEC, augmentation='cutout',
            global_batch_size=4, seed=0, start_step=0, num_steps=1)


# ----------------------------------------- streaming: a prepared builder

NUM_TRAIN = 40
NUM_TEST = 13


class ZooTestImages(tfds.core.GeneratorBasedBuilder):
    """JPEGs of various sizes; label = position, to identify examples."""

    VERSION = tfds.core.Version('1.0.0')

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(__file__)

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                'image': tfds.features.Image(encoding_format='jpeg'),
                'label': tfds.features.ClassLabel(num_classes=NUM_TRAIN),
                # Not read by the pipeline (PartialDecoding skips it).
                'file_name': tfds.features.Text(),
            }),
            disable_shuffling=True)

    def _split_generators(self, dl_manager):
        del dl_manager
        return {'train': self._generate_examples(NUM_TRAIN, 0),
                'test': self._generate_examples(NUM_TEST, 1000)}

    def _generate_examples(self, count, key):
        rng = np.random.default_rng(key)
        for i in range(count):
            shape = (int(rng.integers(8, 40)), int(rng.integers(8, 40)), 3)
            yield i, {'image': rng.integers(0, 256, shape, np.uint8),
                      'label': i, 'file_name': f'{key + i}.jpg'}


ZOO_SPEC = dataclasses.replace(IMAGENET_SPEC, tfds_name='zoo_test_images',
                               num_classes=NUM_TRAIN, image_shape=(16, 16, 3))


@pytest.fixture(scope='module')
def zoo_builder(tmp_path_factory):
    builder = ZooTestImages(data_dir=str(tmp_path_factory.mktemp('zoo')))
    builder.download_and_prepare()
    return builder


def zoo_batches(builder, **kwargs):
    settings = dict(spec=ZOO_SPEC, augmentation='basic', global_batch_size=8,
                    seed=0, start_step=0, num_steps=10, shuffle_window=16,
                    num_chunks=4)
    settings.update(kwargs)
    return list(data.streaming_train_dataset(
        builder, 'train', **settings).as_numpy_iterator())


def test_streaming_hosts_read_disjoint_shares_each_once(zoo_builder):
    # 40 examples, 2 hosts of 20, 4 per host per step: 5 steps per epoch.
    assert data.split_size(zoo_builder, 'train', spec=ZOO_SPEC) == NUM_TRAIN
    for host in range(2):
        batches = zoo_batches(zoo_builder, process_index=host,
                              process_count=2)
        assert len(batches) == 10
        assert batches[0]['image'].shape == (4, 16, 16, 3)
        epochs = [np.concatenate([b['label'] for b in batches[e * 5:
                                                              (e + 1) * 5]])
                  for e in range(2)]
        share = list(range(host * 20, (host + 1) * 20))
        assert sorted(epochs[0]) == share and sorted(epochs[1]) == share
        assert not np.array_equal(epochs[0], epochs[1])


def test_streaming_chunk_order_changes_per_epoch(zoo_builder):
    # Window 1 = no record shuffle: the order is the chunk interleave alone.
    batches = zoo_batches(zoo_builder, shuffle_window=1, num_chunks=4,
                          global_batch_size=10, num_steps=8)
    epochs = [np.concatenate([b['label'] for b in batches[e * 4:
                                                          (e + 1) * 4]])
              for e in range(2)]
    for labels in epochs:
        assert sorted(labels) == list(range(NUM_TRAIN))
        # Each chunk of 10 consecutive examples is read in order.
        for chunk in range(4):
            in_chunk = labels[(labels >= chunk * 10)
                              & (labels < (chunk + 1) * 10)]
            assert np.all(np.diff(in_chunk) == 1)
    assert not np.array_equal(epochs[0], epochs[1])


HOST_1_RANDAUGMENT = dict(augmentation='randaugment', process_index=1,
                          process_count=2)


@pytest.fixture(scope='module')
def zoo_host_1_from_start(zoo_builder):
    return zoo_batches(zoo_builder, **HOST_1_RANDAUGMENT)


@pytest.mark.parametrize('start_step', [4, 7])
def test_streaming_multi_host_resume_bit_for_bit(zoo_builder,
                                                 zoo_host_1_from_start,
                                                 start_step):
    # 5 steps per epoch: step 4 ends epoch 0, step 7 is inside epoch 1.
    resumed = zoo_batches(zoo_builder, start_step=start_step,
                          **HOST_1_RANDAUGMENT)
    assert len(resumed) == 10 - start_step
    for got, want in zip(resumed, zoo_host_1_from_start[start_step:]):
        np.testing.assert_array_equal(got['label'], want['label'])
        np.testing.assert_array_equal(got['image'], want['image'])


def test_streaming_validation_split_slices(zoo_builder):
    train, held_out = data.train_and_eval_splits(ZOO_SPEC, True)
    assert data.split_size(zoo_builder, train, spec=ZOO_SPEC) == 36
    batches = list(data.streaming_eval_batches(
        zoo_builder, held_out, spec=ZOO_SPEC, global_batch_size=3))
    labels = np.concatenate([b['label'] for b in batches])
    mask = np.concatenate([b['mask'] for b in batches])
    np.testing.assert_array_equal(labels[mask == 1], range(36, 40))


# ---------------------------------------------------------- image folders


def write_image_folder(root):
    """trainval: 7 images over 3 classes, test: 4; PNG and JPEG mixed."""
    rng = np.random.default_rng(0)
    layout = {'trainval': {'b747': 3, 'a320': 2, 'dc3': 2},
              'test': {'b747': 1, 'a320': 2, 'dc3': 1}}
    for split, classes in layout.items():
        for class_name, count in classes.items():
            os.makedirs(os.path.join(root, split, class_name))
            for i in range(count):
                shape = (int(rng.integers(10, 50)), int(rng.integers(10, 50)),
                         3)
                image_format = 'png' if i % 2 else 'jpeg'
                extension = {'png': 'png', 'jpeg': 'jpg'}[image_format]
                path = os.path.join(root, split, class_name,
                                    f'{i}.{extension}')
                with open(path, 'wb') as f:
                    f.write(encode(random_image(shape, i), image_format))
    with open(os.path.join(root, 'trainval', 'README.txt'), 'w') as f:
        f.write('not a class folder')


FOLDER_SPEC = dataclasses.replace(data.DATASETS['fgvc_aircraft'],
                                  num_classes=3, image_shape=(16, 16, 3))


def test_image_folder_source(tmp_path):
    write_image_folder(str(tmp_path / 'fgvc_aircraft'))
    source = data.open_image_folder('fgvc_aircraft', FOLDER_SPEC,
                                    str(tmp_path))
    assert source.class_names == ('a320', 'b747', 'dc3')
    assert source.num_examples('trainval') == 7
    assert source.num_examples('test') == 4
    assert source.num_examples('trainval[:50%]+test') == 8
    records = list(source.read('trainval').as_numpy_iterator())
    paths = source.files['trainval'][0]
    for path, record in zip(paths, records):
        class_name = os.path.basename(os.path.dirname(path))
        assert record['label'] == source.class_names.index(class_name)
        with open(path, 'rb') as f:
            assert record['image'] == f.read()
    assert sorted(np.bincount([r['label'] for r in records])) == [2, 2, 3]
    batches = list(data.streaming_eval_batches(
        source, 'test', spec=FOLDER_SPEC, global_batch_size=3))
    assert len(batches) == 2 and batches[0]['image'].shape == (3, 16, 16, 3)
    assert np.concatenate([b['mask'] for b in batches]).sum() == 4
    train = list(data.streaming_train_dataset(
        source, 'trainval', spec=FOLDER_SPEC, augmentation='basic',
        global_batch_size=7, seed=0, start_step=0,
        num_steps=2).as_numpy_iterator())
    for batch in train:
        assert sorted(batch['label']) == [0, 0, 1, 1, 1, 2, 2]


def test_missing_image_folder_error_is_one_line(tmp_path):
    with pytest.raises(data.DatasetUnavailableError) as error:
        streaming.open_source('birdsnap', data.DATASETS['birdsnap'],
                              str(tmp_path))
    message = str(error.value)
    assert '\n' not in message
    assert "'birdsnap'" in message and '<split>/<class>/<image>' in message
    assert '--config.data_dir' in message and 'train, test' in message
    with pytest.raises(data.DatasetUnavailableError):
        data.streaming_train_dataset(
            'fgvc_aircraft', 'trainval', spec=data.DATASETS['fgvc_aircraft'],
            augmentation='basic', global_batch_size=2, seed=0, start_step=0,
            num_steps=1, data_dir=str(tmp_path))


# ------------------------------------------------------------- registry


STREAMED = ('birdsnap', 'fgvc_aircraft', 'food101', 'imagenet2012',
            'oxford_flowers102', 'oxford_iiit_pet', 'stanford_cars')


def test_streamed_specs():
    for name in STREAMED:
        spec = data.DATASETS[name]
        assert not spec.in_memory and spec.image_shape == (224, 224, 3)
        assert spec.mean == inet.IMAGENET_MEAN and spec.flip
    for name in ('cifar10', 'cifar100', 'svhn_cropped', 'fashion_mnist',
                 'digits'):
        assert data.DATASETS[name].in_memory
    assert SVHN_SPEC.autoaugment_policy == 'svhn'
    assert CIFAR_SPEC.autoaugment_policy == 'cifar'
    assert data.DATASETS['oxford_flowers102'].train_split == 'train+validation'
    assert data.DATASETS['stanford_cars'].tfds_name == 'cars196'
    assert data.DATASETS['food101'].test_split == 'validation'


def test_unknown_dataset_error_names_every_dataset():
    with pytest.raises(ValueError) as error:
        data.get_spec('foo')
    message = str(error.value)
    assert '\n' not in message
    assert all(name in message for name in data.DATASETS)


def test_imagenet_unavailable_error_says_how_to_prepare(tmp_path):
    with pytest.raises(data.DatasetUnavailableError) as error:
        data.split_size('imagenet2012', 'train', spec=IMAGENET_SPEC,
                        data_dir=str(tmp_path))
    message = str(error.value)
    assert '\n' not in message
    assert f'{tmp_path}/downloads/manual' in message
    assert 'tfds build imagenet2012' in message
    assert 'download_and_prepare' in message and '--config.data_dir' in message
    with pytest.raises(data.DatasetUnavailableError, match="'cars196'"):
        data.split_size('stanford_cars', 'train',
                        spec=data.DATASETS['stanford_cars'],
                        data_dir=str(tmp_path))


def test_load_split_refuses_streamed_datasets(tmp_path):
    with pytest.raises(ValueError, match='streamed'):
        data.load_split('food101', 'train', data_dir=str(tmp_path))
