"""Tests of sam_jax.data.sources: the dataset registry, the offline digits
builder and load_split against sklearn, and the one-line errors for unknown,
unprepared and streamed data sets."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from helpers import reference_digits_split
from sam_jax import data
from sam_jax.data import imagenet_preprocessing as inet

CIFAR_SPEC = data.DATASETS['cifar10']
SVHN_SPEC = data.DATASETS['svhn_cropped']
DIGITS_SPEC = data.DATASETS['digits']
IMAGENET_SPEC = data.DATASETS['imagenet2012']


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


# ------------------------------------------------------------- streamed


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
