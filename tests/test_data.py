"""Tests of sam_jax.data against independent numpy / sklearn references."""

import numpy as np
import pytest
from sklearn.datasets import load_digits
import tensorflow as tf
import tensorflow_datasets as tfds

from sam_jax import data
from sam_jax.data import augment

DIGITS_SPEC = data.DATASETS['digits']


def reference_digits_split(split):
    """(uint8 images, labels) of a digits split, straight from sklearn."""
    digits = load_digits()
    permutation = np.random.RandomState(0).permutation(1797)
    indices = {'train': permutation[:1297], 'test': permutation[1297:]}[split]
    images = np.round(digits.images * 255 / 16).astype(np.uint8)[..., None]
    return images[indices], digits.target[indices]


def reference_normalize(images, spec):
    images = images.astype(np.float32)
    return ((images - np.array(spec.mean, np.float32))
            / np.array(spec.std, np.float32))


def seed(i):
    return tf.constant([i, 7], tf.int32)


# ---------------------------------------------------------------- sources


@pytest.fixture(scope='module')
def digits_data_dir(tmp_path_factory):
    """A data_dir into which `load_split` has built sklearn_digits."""
    data_dir = str(tmp_path_factory.mktemp('tfds'))
    data.load_split('digits', 'train', data_dir=data_dir)
    return data_dir


def test_digits_builder_builds_offline_with_fixed_splits(digits_data_dir):
    builder = tfds.builder('sklearn_digits', data_dir=digits_data_dir)
    assert builder.is_prepared()
    assert builder.info.splits['train'].num_examples == 1297
    assert builder.info.splits['test'].num_examples == 500
    for split in ('train', 'test'):
        loaded = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
        expected_images, expected_labels = reference_digits_split(split)
        assert loaded['image'].dtype == np.uint8
        assert loaded['image'].shape[1:] == (8, 8, 1)
        np.testing.assert_array_equal(loaded['image'], expected_images)
        np.testing.assert_array_equal(loaded['label'], expected_labels)


def test_load_split_digits_matches_sklearn(digits_data_dir):
    images, labels = data.load_split('digits', 'test',
                                     data_dir=digits_data_dir)
    expected_images, expected_labels = reference_digits_split('test')
    assert images.dtype == np.uint8 and labels.dtype == np.int32
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)
    head, _ = data.load_split('digits', 'train[:10%]',
                              data_dir=digits_data_dir)
    np.testing.assert_array_equal(head,
                                  reference_digits_split('train')[0][:130])


def test_digits_statistics_match_train_split():
    train_images, _ = reference_digits_split('train')
    pixels = train_images.astype(np.float64)
    np.testing.assert_allclose(DIGITS_SPEC.mean, [pixels.mean()], rtol=1e-9)
    np.testing.assert_allclose(DIGITS_SPEC.std, [pixels.std()], rtol=1e-9)


@pytest.mark.parametrize('split', ['train', 'train[:90%]', 'test'])
def test_load_split_cifar10_under_mock_data(tmp_path, split):
    with tfds.testing.mock_data(num_examples=12):
        images, labels = data.load_split('cifar10', split,
                                         data_dir=str(tmp_path))
    assert images.shape == (12, 32, 32, 3) and images.dtype == np.uint8
    assert labels.shape == (12,) and labels.dtype == np.int32
    assert labels.min() >= 0 and labels.max() < 10


def test_load_split_unprepared_dataset_raises_one_line(tmp_path):
    with pytest.raises(data.DatasetUnavailableError) as error:
        data.load_split('cifar10', 'train', data_dir=str(tmp_path))
    message = str(error.value)
    assert '\n' not in message
    assert "'cifar10'" in message and str(tmp_path) in message
    assert 'TFDS_DATA_DIR' in message and 'data_dir' in message
    assert isinstance(error.value, ValueError)


def test_unknown_dataset_lists_allowed_names(tmp_path):
    allowed = ('allowed: cifar10, cifar100, digits, fashion_mnist, '
               'svhn_cropped')
    with pytest.raises(ValueError, match=allowed):
        data.get_spec('foo')
    with pytest.raises(ValueError, match="unknown dataset 'foo'"):
        data.load_split('foo', 'train', data_dir=str(tmp_path))


def test_train_and_eval_splits():
    cifar, svhn = data.DATASETS['cifar10'], data.DATASETS['svhn_cropped']
    assert data.train_and_eval_splits(cifar, False) == ('train', 'test')
    assert data.train_and_eval_splits(cifar, True) == ('train[:90%]',
                                                       'train[90%:]')
    assert data.train_and_eval_splits(svhn, False) == ('train+extra', 'test')
    assert data.train_and_eval_splits(svhn, True) == (
        'train[:90%]+extra[:90%]', 'train[90%:]+extra[90%:]')


def test_specs_are_consistent():
    for spec in data.DATASETS.values():
        channels = spec.image_shape[2]
        assert len(spec.mean) == channels and len(spec.std) == channels
        assert spec.crop_padding < spec.image_shape[0]
    assert not data.DATASETS['svhn_cropped'].flip and not DIGITS_SPEC.flip


# ------------------------------------------------------------ label noise


def test_symmetric_label_noise_corrupts_exactly_rate():
    labels = np.random.default_rng(1).integers(0, 10, size=1001)
    noisy, mask = data.symmetric_label_noise(labels, 0.3, 10, seed=5)
    assert mask.sum() == round(0.3 * 1001)
    assert np.all(noisy[mask] != labels[mask])
    np.testing.assert_array_equal(noisy[~mask], labels[~mask])
    assert noisy.dtype == labels.dtype and noisy.min() >= 0
    assert noisy.max() < 10


def test_symmetric_label_noise_is_uniform_over_other_classes():
    labels = np.zeros(36000, np.int64)
    noisy, mask = data.symmetric_label_noise(labels, 0.5, 10, seed=0)
    counts = np.bincount(noisy[mask], minlength=10)
    assert counts[0] == 0
    # 18,000 draws over 9 classes: 2,000 each, std ~42.
    assert np.all(np.abs(counts[1:] - 2000) < 250)


def test_symmetric_label_noise_seeding_and_edge_rates():
    labels = np.arange(200) % 10
    first = data.symmetric_label_noise(labels, 0.4, 10, seed=3)
    again = data.symmetric_label_noise(labels, 0.4, 10, seed=3)
    other = data.symmetric_label_noise(labels, 0.4, 10, seed=4)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[1], other[1])
    clean, clean_mask = data.symmetric_label_noise(labels, 0.0, 10, seed=3)
    np.testing.assert_array_equal(clean, labels)
    assert clean is not labels and not clean_mask.any()
    for rate in (1.0, -0.1):
        with pytest.raises(ValueError, match=r'\[0, 1\)'):
            data.symmetric_label_noise(labels, rate, 10, seed=0)


# ----------------------------------------------------------- augmentation


def test_normalize_matches_numpy():
    image = np.random.default_rng(0).integers(0, 256, (4, 5, 3), np.uint8)
    spec = data.DATASETS['cifar10']
    np.testing.assert_allclose(
        augment.normalize(image, spec.mean, spec.std).numpy(),
        reference_normalize(image, spec), rtol=1e-6)


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
        out = augment.cutout(tf.constant(image), size, seed(i)).numpy()
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


# --------------------------------------------------------------- pipeline

NUM_EXAMPLES = 100


@pytest.fixture(scope='module')
def indexed_examples():
    """Unique images; label i is the example index, to identify examples."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (NUM_EXAMPLES, 8, 8, 1), np.uint8)
    images[:, 0, 0, 0] = np.arange(NUM_EXAMPLES)  # Makes images unique.
    return images, np.arange(NUM_EXAMPLES, dtype=np.int32)


def train_batches(examples, **kwargs):
    images, labels = examples
    settings = dict(spec=DIGITS_SPEC, augmentation='none',
                    global_batch_size=16, seed=0, start_step=0, num_steps=9)
    settings.update(kwargs)
    return list(data.as_numpy_iterator(
        data.train_dataset(images, labels, **settings)))


def test_steps_per_epoch():
    assert data.steps_per_epoch(100, 16) == 6
    assert data.steps_per_epoch(96, 16) == 6
    with pytest.raises(ValueError, match='larger than the dataset'):
        data.steps_per_epoch(10, 16)


def test_one_epoch_visits_each_example_at_most_once(indexed_examples):
    images, _ = indexed_examples
    batches = train_batches(indexed_examples, num_steps=12)
    assert len(batches) == 12
    for batch in batches:
        assert batch['image'].shape == (16, 8, 8, 1)
        assert batch['image'].dtype == np.float32
        assert batch['label'].dtype == np.int32
        np.testing.assert_allclose(
            batch['image'], reference_normalize(images[batch['label']],
                                                DIGITS_SPEC), rtol=1e-6)
    for epoch in range(2):
        seen = np.concatenate(
            [b['label'] for b in batches[epoch * 6:(epoch + 1) * 6]])
        assert len(seen) == 96 and len(np.unique(seen)) == 96
    first_epoch = np.concatenate([b['label'] for b in batches[:6]])
    second_epoch = np.concatenate([b['label'] for b in batches[6:]])
    assert not np.array_equal(first_epoch, second_epoch)


@pytest.mark.parametrize('start_step', [4, 7, 9])
def test_resumed_run_reproduces_batches_bit_for_bit(indexed_examples,
                                                    start_step):
    from_start = train_batches(indexed_examples, augmentation='cutout')
    resumed = train_batches(indexed_examples, augmentation='cutout',
                            start_step=start_step)
    assert len(resumed) == 9 - start_step
    for got, want in zip(resumed, from_start[start_step:]):
        np.testing.assert_array_equal(got['label'], want['label'])
        np.testing.assert_array_equal(got['image'], want['image'])


def test_process_slices_concatenate_to_global_batch(indexed_examples):
    global_batches = train_batches(indexed_examples, augmentation='cutout')
    host_batches = [
        train_batches(indexed_examples, augmentation='cutout',
                      process_index=k, process_count=2) for k in range(2)]
    for step, want in enumerate(global_batches):
        for key in ('image', 'label'):
            got = np.concatenate([host_batches[k][step][key]
                                  for k in range(2)])
            np.testing.assert_array_equal(got, want[key])
    assert host_batches[0][0]['image'].shape == (8, 8, 8, 1)


def test_different_seeds_give_different_orders(indexed_examples):
    labels_0 = np.concatenate(
        [b['label'] for b in train_batches(indexed_examples, num_steps=2)])
    labels_1 = np.concatenate(
        [b['label'] for b in train_batches(indexed_examples, num_steps=2,
                                           seed=1)])
    assert not np.array_equal(labels_0, labels_1)


@pytest.mark.parametrize('global_batch_size', [7, 16, 50, 100, 128])
def test_eval_batches_cover_each_example_once(indexed_examples,
                                              global_batch_size):
    images, labels = indexed_examples
    batches = list(data.eval_batches(images, labels, spec=DIGITS_SPEC,
                                     global_batch_size=global_batch_size))
    assert len(batches) == -(-NUM_EXAMPLES // global_batch_size)
    assert len(batches) == data.num_eval_batches(NUM_EXAMPLES,
                                                 global_batch_size)
    for batch in batches:
        assert batch['image'].shape == (global_batch_size, 8, 8, 1)
        assert batch['label'].shape == batch['mask'].shape
        assert batch['mask'].dtype == np.float32
    mask = np.concatenate([b['mask'] for b in batches])
    assert mask.sum() == NUM_EXAMPLES
    real = mask == 1
    np.testing.assert_array_equal(
        np.concatenate([b['label'] for b in batches])[real], labels)
    all_images = np.concatenate([b['image'] for b in batches])
    np.testing.assert_allclose(all_images[real],
                               reference_normalize(images, DIGITS_SPEC),
                               rtol=1e-6)
    assert np.all(all_images[~real] == 0)


def test_eval_batches_multi_process_slices(indexed_examples):
    images, labels = indexed_examples
    global_batches = list(data.eval_batches(
        images, labels, spec=DIGITS_SPEC, global_batch_size=32))
    host_batches = [list(data.eval_batches(
        images, labels, spec=DIGITS_SPEC, global_batch_size=32,
        process_index=k, process_count=4)) for k in range(4)]
    for step, want in enumerate(global_batches):
        for key in ('image', 'label', 'mask'):
            got = np.concatenate([host_batches[k][step][key]
                                  for k in range(4)])
            np.testing.assert_array_equal(got, want[key])
