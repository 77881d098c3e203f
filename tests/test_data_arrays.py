"""Tests of sam_jax.data.arrays (TF-free in-memory splits).

References: IDX fixtures written here, sklearn, and where installed tfds
itself (its builders, split slicing and key hashing).
"""

import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from helpers import REPO
from helpers import reference_digits_split
from sam_jax.data import arrays
from sam_jax.errors import DatasetUnavailableError

FASHION_DIR = arrays.DEBIAN_FASHION_MNIST_DIR
HAVE_DEBIAN_FILES = os.path.isdir(FASHION_DIR)
FIXTURE_SIZES = {'train': 20, 'test': 10}


def write_idx(path, array):
    """uint8 IDX file: struct header, then the raw bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(
        f'>{array.ndim}i', *array.shape)
    raw = header + np.ascontiguousarray(array, np.uint8).tobytes()
    if str(path).endswith('.gz'):
        import gzip
        raw = gzip.compress(raw)
    with open(path, 'wb') as f:
        f.write(raw)


def fixture_split(split):
    """Images whose pixel (0, 0) is the example index; labels index % 10."""
    size = FIXTURE_SIZES[split]
    images = np.random.default_rng(len(split)).integers(
        0, 256, (size, 28, 28), np.uint8)
    images[:, 0, 0] = np.arange(size)
    return images, (np.arange(size) * 3 % 10).astype(np.uint8)


@pytest.fixture
def fashion_dir(tmp_path):
    """A directory with small Fashion-MNIST-shaped IDX files; the test
    images are stored un-gzipped under the names without '.gz'."""
    directory = tmp_path / 'fmnist'
    directory.mkdir()
    for split, (images_name, labels_name) in arrays.FASHION_MNIST_FILES.items():
        images, labels = fixture_split(split)
        if split == 'test':
            images_name = images_name.removesuffix('.gz')
        write_idx(directory / images_name, images)
        write_idx(directory / labels_name, labels)
    return str(directory)


@pytest.fixture
def no_default_sources(tmp_path, monkeypatch):
    """No Debian files, no env var, an empty tfds data dir."""
    monkeypatch.setattr(arrays, 'DEBIAN_FASHION_MNIST_DIR',
                        str(tmp_path / 'no_debian'))
    monkeypatch.delenv(arrays.FASHION_MNIST_DIR_ENV, raising=False)
    monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'empty_tfds'))


# ------------------------------------------------------------ no TensorFlow

_TF_FREE_SCRIPT = r'''
import dataclasses, sys
if sys.argv[1] == 'blocked':
    # An import of either now raises ImportError, as on a machine without.
    sys.modules['tensorflow'] = None
    sys.modules['tensorflow_datasets'] = None
import jax
import numpy as np
import sam_jax.data
from sam_jax.data import arrays, device_augment, device_pipeline, idx

@dataclasses.dataclass(frozen=True)
class Spec:
    image_shape: tuple = (8, 8, 1)
    mean: tuple = (100.0,)
    std: tuple = (50.0,)
    flip: bool = False
    crop_padding: int = 1

images, labels = arrays.load_split_arrays('digits', 'train[:90%]')
assert images.shape == (1167, 8, 8, 1), images.shape
fashion, _ = arrays.load_split_arrays('fashion_mnist', 'test',
                                      fashion_mnist_dir=sys.argv[2])
assert fashion.shape == (10, 28, 28, 1)
batch = jax.jit(device_pipeline.train_batch,
                static_argnames=device_pipeline.TRAIN_BATCH_STATIC_ARGNAMES)(
    images, labels, device_pipeline.epoch_permutation(0, 0, len(labels)), 3,
    seed=0, global_batch_size=32, first=0, count=32, spec=Spec(),
    augmentation='cutout')
assert batch['image'].shape == (32, 8, 8, 1)
list(device_pipeline.eval_batches(images, labels, spec=Spec(),
                                  global_batch_size=100))
arrays.DEBIAN_FASHION_MNIST_DIR = sys.argv[3] + '/no_debian'
try:
    arrays.fashion_mnist_source(data_dir=sys.argv[3])
    raise AssertionError('found a Fashion-MNIST source in an empty directory')
except sam_jax.data.DatasetUnavailableError:
    pass
if sys.argv[1] == 'blocked':
    # A tfds-prepared copy but no tfds: a one-line unavailable error.
    import os
    os.makedirs(sys.argv[3] + '/fashion_mnist/3.0.1')
    open(sys.argv[3] + '/fashion_mnist/3.0.1/dataset_info.json', 'w').close()
    try:
        arrays.load_split_arrays('fashion_mnist', 'test', data_dir=sys.argv[3])
        raise AssertionError('read a tfds copy without tfds')
    except sam_jax.data.DatasetUnavailableError as error:
        assert 'apt-get install -y dataset-fashion-mnist' in str(error)
        assert '\n' not in str(error)
loaded = sorted(m for m, v in sys.modules.items()
                if v is not None and m.split('.')[0] in (
                    'tensorflow', 'tensorflow_datasets', 'keras'))
print('loaded:', loaded)
'''


@pytest.mark.parametrize('mode', ['blocked', 'installed'])
def test_tf_free_path_never_imports_tensorflow(mode, fashion_dir, tmp_path):
    # 'blocked' is a machine without TensorFlow; 'installed' checks that
    # nothing imports it even where it could (here it is installed).
    env = dict(os.environ, JAX_PLATFORMS='cpu',
               TFDS_DATA_DIR=str(tmp_path / 'empty'))
    env.pop(arrays.FASHION_MNIST_DIR_ENV, None)
    result = subprocess.run(
        [sys.executable, '-c', _TF_FREE_SCRIPT, mode, fashion_dir,
         str(tmp_path / 'nothing')],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith('loaded: []'), result.stdout


# ------------------------------------------------------------------ digits


def test_digits_from_sklearn():
    for split in ('train', 'test'):
        images, labels = arrays.load_split_arrays('digits', split)
        expected_images, expected_labels = reference_digits_split(split)
        assert images.dtype == np.uint8 and labels.dtype == np.int32
        np.testing.assert_array_equal(images, expected_images)
        np.testing.assert_array_equal(labels, expected_labels)
    (train, _), (held_out, _) = arrays.train_and_eval_arrays(
        'digits', validation_split=True)
    full, _ = reference_digits_split('train')
    # tfds rounds 90% of 1,297 = 1,167.3 to 1,167.
    np.testing.assert_array_equal(train, full[:1167])
    np.testing.assert_array_equal(held_out, full[1167:])


def test_digits_split_is_the_digits_module_split():
    pytest.importorskip('tensorflow_datasets')
    from sam_jax.data import digits
    indices = digits.split_indices()
    images, labels = digits.load_sklearn_digits()
    for split in ('train', 'test'):
        got_images, got_labels = arrays.load_split_arrays('digits', split)
        np.testing.assert_array_equal(got_images, images[indices[split]])
        np.testing.assert_array_equal(got_labels, labels[indices[split]])


def test_digits_equal_the_tfds_builder(tmp_path):
    pytest.importorskip('tensorflow_datasets')
    from sam_jax.data import sources
    data_dir = str(tmp_path / 'tfds')
    for split in ('train', 'test', 'train[:90%]', 'train[90%:]'):
        expected = sources.load_split('digits', split, data_dir=data_dir)
        got = arrays.load_split_arrays('digits', split)
        for got_array, expected_array in zip(got, expected):
            assert got_array.dtype == expected_array.dtype
            np.testing.assert_array_equal(got_array, expected_array)


# ------------------------------------------------------------ split strings


def test_split_names_match_sources():
    pytest.importorskip('tensorflow_datasets')
    from sam_jax.data import sources
    for name in arrays.ARRAY_DATASETS:
        for validation in (False, True):
            assert arrays.train_and_eval_split_names(validation) == (
                sources.train_and_eval_splits(sources.get_spec(name),
                                              validation))


@pytest.mark.parametrize('size', [1297, 60000, 10000, 21, 7])
def test_resolve_split_matches_tfds(size):
    pytest.importorskip('tensorflow_datasets')
    from sam_jax.data import sources
    for split in ('train', 'train[:90%]', 'train[90%:]', 'train[:10%]',
                  'train[33%:66%]', 'train[-10%:]', 'train[:-25%]',
                  'train[5:-3]', 'train[:3]', 'train[-2:]', 'train[50%:50%]'):
        [(name, start, end)] = sources.absolute_split_ranges(
            split, {'train': size, 'test': 3})
        got_name, got_start, got_end = arrays.resolve_split(
            split, {'train': size, 'test': 3})
        # The examples read agree (tfds may report end < start for empty).
        assert (got_name, list(range(got_start, got_end))) == (
            name, list(range(start, end))), split


def test_resolve_split_rejects_other_forms():
    for split in ('validation', 'train+test', 'train[:90%', 'train[::2]'):
        with pytest.raises(ValueError, match='cannot read split'):
            arrays.resolve_split(split, {'train': 10, 'test': 5})


# ---------------------------------------------------------- fashion_mnist


def test_fashion_mnist_from_explicit_dir(fashion_dir, no_default_sources):
    for split in ('train', 'test'):
        images, labels = arrays.load_split_arrays(
            'fashion_mnist', split, fashion_mnist_dir=fashion_dir,
            example_order='file')
        expected_images, expected_labels = fixture_split(split)
        assert images.dtype == np.uint8 and labels.dtype == np.int32
        np.testing.assert_array_equal(images, expected_images[..., None])
        np.testing.assert_array_equal(labels, expected_labels)
    (train, train_labels), (held_out, held_out_labels) = (
        arrays.train_and_eval_arrays('fashion_mnist', validation_split=True,
                                     fashion_mnist_dir=fashion_dir,
                                     example_order='file'))
    # First 90% of the 20 training examples train, the last 2 evaluate.
    assert train[:, 0, 0, 0].tolist() == list(range(18))
    assert held_out[:, 0, 0, 0].tolist() == [18, 19]
    np.testing.assert_array_equal(held_out_labels,
                                  fixture_split('train')[1][18:])


def test_fashion_mnist_default_order_is_tfds_hash_order(fashion_dir,
                                                        no_default_sources):
    (train, train_labels), (test, _) = arrays.train_and_eval_arrays(
        'fashion_mnist', validation_split=False,
        fashion_mnist_dir=fashion_dir)
    for split, images in (('train', train), ('test', test)):
        indices = images[:, 0, 0, 0].astype(int)
        assert sorted(indices) == list(range(FIXTURE_SIZES[split]))
        # Reference: sort by md5(split name + str(index)), written out here.
        import hashlib
        expected = sorted(range(FIXTURE_SIZES[split]), key=lambda i: int(
            hashlib.md5(f'{split}{i}'.encode()).hexdigest(), 16))
        assert indices.tolist() == expected
    np.testing.assert_array_equal(
        train_labels, fixture_split('train')[1][train[:, 0, 0, 0]])


def test_tfds_example_order_matches_tfds_hasher():
    # The submodule itself: `tfds.core` does not import it.
    hashing = pytest.importorskip('tensorflow_datasets.core.hashing')
    for split, size in (('train', 60_000), ('test', 10_000)):
        hasher = hashing.Hasher(split)
        expected = sorted(range(size), key=hasher.hash_key)
        np.testing.assert_array_equal(arrays.tfds_example_order(split, size),
                                      expected)


def test_tfds_writes_index_keyed_splits_in_that_order(tmp_path):
    """A tiny builder keyed by index, as tfds' fashion_mnist is: the order
    tfds writes equals tfds_example_order."""
    tfds = pytest.importorskip('tensorflow_datasets')
    from etils import epath

    class IndexKeyed(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version('1.0.0')

        @tfds.core.utils.classproperty
        @classmethod
        def code_path(cls):  # See digits.py: tfds cannot resolve it here.
            return epath.Path(__file__)

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=(
                tfds.features.FeaturesDict(
                    {'index': tfds.features.Scalar(np.int64)})))

        def _split_generators(self, dl_manager):
            return {'train': self._generate_examples(50),
                    'test': self._generate_examples(20)}

        def _generate_examples(self, size):
            for index in range(size):
                yield index, {'index': index}

    builder = IndexKeyed(data_dir=str(tmp_path))
    builder.download_and_prepare()
    for split, size in (('train', 50), ('test', 20)):
        stored = [int(example['index']) for example in
                  tfds.as_numpy(builder.as_dataset(split=split))]
        assert stored == arrays.tfds_example_order(split, size).tolist()


def test_fashion_mnist_source_precedence(fashion_dir, tmp_path, monkeypatch,
                                         no_default_sources):
    # Detection looks only for the four file names.
    other = tmp_path / 'other'
    other.mkdir()
    for files in arrays.FASHION_MNIST_FILES.values():
        for name in files:
            (other / name).write_bytes(b'')
    data_dir = tmp_path / 'data'
    (data_dir / 'fashion_mnist').mkdir(parents=True)
    with pytest.raises(DatasetUnavailableError):
        arrays.fashion_mnist_source(data_dir=str(data_dir))
    for files in arrays.FASHION_MNIST_FILES.values():
        for name in files:
            (data_dir / 'fashion_mnist' / name).write_bytes(b'')
    assert arrays.fashion_mnist_source(data_dir=str(data_dir)) == (
        'idx', str(data_dir / 'fashion_mnist'))
    monkeypatch.setenv(arrays.FASHION_MNIST_DIR_ENV, str(other))
    assert arrays.fashion_mnist_source(data_dir=str(data_dir)) == (
        'idx', str(other))
    assert arrays.fashion_mnist_source(
        data_dir=str(data_dir), fashion_mnist_dir=fashion_dir) == (
            'idx', fashion_dir)
    monkeypatch.delenv(arrays.FASHION_MNIST_DIR_ENV)
    monkeypatch.setattr(arrays, 'DEBIAN_FASHION_MNIST_DIR', fashion_dir)
    assert arrays.fashion_mnist_source() == ('idx', fashion_dir)
    # A tfds-prepared copy counts only when no IDX copy is found.
    (tmp_path / 'tfds' / 'fashion_mnist' / '3.0.1').mkdir(parents=True)
    (tmp_path / 'tfds' / 'fashion_mnist' / '3.0.1' / 'dataset_info.json'
     ).write_text('{}')
    assert arrays.fashion_mnist_source(str(tmp_path / 'tfds')) == (
        'idx', fashion_dir)
    monkeypatch.setattr(arrays, 'DEBIAN_FASHION_MNIST_DIR', str(other / 'x'))
    assert arrays.fashion_mnist_source(str(tmp_path / 'tfds')) == (
        'tfds', str(tmp_path / 'tfds'))


def assert_unavailable_one_line(error, *fragments):
    message = str(error.value)
    assert '\n' not in message, message
    assert isinstance(error.value, ValueError)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_fashion_mnist_unavailable(tmp_path, monkeypatch, no_default_sources):
    with pytest.raises(DatasetUnavailableError) as error:
        arrays.load_split_arrays('fashion_mnist', 'train',
                                 data_dir=str(tmp_path / 'data'))
    assert_unavailable_one_line(
        error, 'apt-get install -y dataset-fashion-mnist',
        'SAM_JAX_FASHION_MNIST_DIR', '--config.data_dir',
        str(tmp_path / 'no_debian'), str(tmp_path / 'data'))
    # A directory named explicitly but lacking the files is an error, even
    # where another copy exists.
    monkeypatch.setattr(arrays, 'DEBIAN_FASHION_MNIST_DIR', FASHION_DIR)
    for kwargs, env in (({'fashion_mnist_dir': str(tmp_path)}, None),
                        ({}, str(tmp_path))):
        if env:
            monkeypatch.setenv(arrays.FASHION_MNIST_DIR_ENV, env)
        with pytest.raises(DatasetUnavailableError) as error:
            arrays.load_split_arrays('fashion_mnist', 'test', **kwargs)
        assert_unavailable_one_line(
            error, str(tmp_path), 'train-images-idx3-ubyte.gz',
            'apt-get install -y dataset-fashion-mnist')


def test_unavailable_error_is_the_sources_one():
    pytest.importorskip('tensorflow_datasets')
    from sam_jax import data
    from sam_jax.data import sources
    assert sources.DatasetUnavailableError is DatasetUnavailableError
    assert data.DatasetUnavailableError is DatasetUnavailableError


def test_fashion_mnist_rejects_other_data(tmp_path, no_default_sources):
    from sam_jax.data import idx
    for split, (images_name, labels_name) in arrays.FASHION_MNIST_FILES.items():
        write_idx(tmp_path / images_name, np.zeros((3, 8, 8), np.uint8))
        write_idx(tmp_path / labels_name, np.zeros(3, np.uint8))
    with pytest.raises(idx.IdxFormatError, match=r'not Fashion-MNIST'):
        arrays.load_split_arrays('fashion_mnist', 'train',
                                 fashion_mnist_dir=str(tmp_path))
    with pytest.raises(ValueError, match="no TF-free loader for dataset "
                                         "'cifar10'"):
        arrays.load_split_arrays('cifar10', 'train')
    with pytest.raises(ValueError, match='example_order'):
        arrays.load_split_arrays('digits', 'train', example_order='sorted')


def test_fashion_mnist_tfds_branch_under_mock_data(tmp_path,
                                                   no_default_sources):
    tfds = pytest.importorskip('tensorflow_datasets')
    prepared = tmp_path / 'tfds' / 'fashion_mnist' / '3.0.1'
    prepared.mkdir(parents=True)
    (prepared / 'dataset_info.json').write_text('{}')
    with tfds.testing.mock_data(num_examples=12):
        images, labels = arrays.load_split_arrays(
            'fashion_mnist', 'train[:50%]', data_dir=str(tmp_path / 'tfds'))
        all_images, _ = arrays.load_split_arrays(
            'fashion_mnist', 'train', data_dir=str(tmp_path / 'tfds'))
        file_images, _ = arrays.load_split_arrays(
            'fashion_mnist', 'train', data_dir=str(tmp_path / 'tfds'),
            example_order='file')
    assert images.shape == (6, 28, 28, 1) and images.dtype == np.uint8
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(images, all_images[:6])
    # 'file' order undoes tfds' order: file example k is tfds example
    # position of k in tfds_example_order.
    order = arrays.tfds_example_order('train', 12)
    np.testing.assert_array_equal(file_images[order], all_images)


@pytest.mark.skipif(not HAVE_DEBIAN_FILES,
                    reason='Debian dataset-fashion-mnist not installed')
def test_real_fashion_mnist_splits(monkeypatch):
    from sam_jax.data import idx
    monkeypatch.delenv(arrays.FASHION_MNIST_DIR_ENV, raising=False)
    file_images = idx.read_idx_images(
        f'{FASHION_DIR}/train-images-idx3-ubyte.gz')[..., None]
    file_labels = idx.read_idx_labels(
        f'{FASHION_DIR}/train-labels-idx1-ubyte.gz')
    (train, train_labels), (held_out, held_out_labels) = (
        arrays.train_and_eval_arrays('fashion_mnist', validation_split=True,
                                     example_order='file'))
    assert train.shape == (54_000, 28, 28, 1)
    np.testing.assert_array_equal(train, file_images[:54_000])
    np.testing.assert_array_equal(held_out_labels, file_labels[54_000:])
    (train, train_labels), (test, test_labels) = (
        arrays.train_and_eval_arrays('fashion_mnist', validation_split=False))
    assert test.shape == (10_000, 28, 28, 1) and train.shape[0] == 60_000
    np.testing.assert_array_equal(np.bincount(test_labels), np.full(10, 1000))
    order = arrays.tfds_example_order('train', 60_000)
    np.testing.assert_array_equal(train_labels, file_labels[order])


def _prepared_tfds_dir():
    root = os.path.expanduser(os.environ.get('TFDS_DATA_DIR')
                              or '~/tensorflow_datasets')
    return root if os.path.isdir(os.path.join(root, 'fashion_mnist')) else None


@pytest.mark.skipif(not (HAVE_DEBIAN_FILES and _prepared_tfds_dir()),
                    reason='needs the Debian files and a tfds-prepared '
                           'fashion_mnist in TFDS_DATA_DIR')
def test_idx_arrays_equal_a_tfds_prepared_copy():
    pytest.importorskip('tensorflow_datasets')
    from sam_jax.data import sources
    for split in ('test', 'train[90%:]'):
        expected = sources.load_split('fashion_mnist', split,
                                      data_dir=_prepared_tfds_dir())
        got = arrays.load_split_arrays('fashion_mnist', split,
                                       fashion_mnist_dir=FASHION_DIR)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])


def test_data_package_still_exports_its_names():
    """The lazy sam_jax.data resolves every name it imported eagerly before."""
    pytest.importorskip('tensorflow_datasets')
    from sam_jax import data
    before = (
        'augment_for_training cutout normalize preprocess_for_eval '
        'random_crop_with_reflect_padding random_flip_left_right '
        'TRAINING_AUGMENTATIONS IN_MEMORY_AUGMENTATIONS SklearnDigits ImageFolderSource '
        'open_image_folder STREAMING_AUGMENTATIONS symmetric_label_noise '
        'as_numpy_iterator RunInputs prepare_inputs eval_batches '
        'num_eval_batches steps_per_epoch train_dataset DATASETS DatasetSpec '
        'DatasetUnavailableError get_spec load_split train_and_eval_splits '
        'open_source split_size streaming_eval_batches '
        'streaming_train_dataset TfdsSource').split()
    assert sorted(data.__all__) == sorted(before)
    for name in before:
        getattr(data, name)  # Raises if the name does not resolve.
    # Submodules as attributes, as with the eager imports.
    assert data.pipeline.train_dataset is data.train_dataset
    assert data.autoaugment.cutout is data.cutout
    with pytest.raises(AttributeError, match='no attribute'):
        data.no_such_name


@pytest.mark.parametrize('split, name', [('train', 'train-images-idx3-ubyte.gz'),
                                         ('test', 't10k-images-idx3-ubyte')])
def test_a_cut_short_fashion_mnist_file_is_bad_input_naming_it(
        fashion_dir, no_default_sources, split, name):
    # Issue 33: IdxFormatError escaped the CLI's bad-input handler (exit 1,
    # a traceback); it is bad input now, with what to do about it.
    from sam_jax.errors import BadInputError
    path = os.path.join(fashion_dir, name)
    os.truncate(path, os.path.getsize(path) // 2)
    with pytest.raises(BadInputError) as info:
        arrays.load_split_arrays('fashion_mnist', split,
                                 fashion_mnist_dir=fashion_dir)
    message = str(info.value)
    assert message.startswith(f"dataset 'fashion_mnist': {path}: ")
    assert 'replace it with a whole copy' in message and '\n' not in message
    assert isinstance(info.value, ValueError)  # as before, for its old callers
