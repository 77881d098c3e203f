"""Dataset registry, and loading whole tfds splits into numpy arrays.

Every data set used here fits in host memory, so a split is loaded once as
(uint8 images, int32 labels) and the input pipeline indexes into those arrays.
That is what lets batch content be a pure function of (seed, step).
"""

import dataclasses

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from sam_jax.data import digits as _digits  # Registers `sklearn_digits`.

# Chunk size for reading a split: `as_dataset(batch_size=-1)` would be one
# call, but under `tfds.testing.mock_data` (no metadata) it batches by
# sys.maxsize and aborts the process.
_READ_CHUNK_SIZE = 4096


def _digits_train_statistics() -> tuple[tuple[float], tuple[float]]:
    """Pixel mean and std of the digits train split, in 0..255 units."""
    # Cheap (~0.1 s): the data ships with scikit-learn, which TensorFlow's
    # Keras has usually imported already.
    images, _ = _digits.load_sklearn_digits()
    train_pixels = images[_digits.split_indices()['train']].astype(np.float64)
    return (float(train_pixels.mean()),), (float(train_pixels.std()),)


_DIGITS_TRAIN_MEAN, _DIGITS_TRAIN_STD = _digits_train_statistics()


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What the pipeline and models need to know about a data set.

    Attributes:
        tfds_name: name passed to `tfds.builder`.
        num_classes: number of labels.
        image_shape: (height, width, channels) of every image.
        train_split: tfds split string used for training.
        test_split: tfds split string used for the final evaluation.
        mean: per-channel mean in 0..255 units, for normalisation.
        std: per-channel standard deviation in 0..255 units.
        flip: whether a horizontal flip keeps the label valid (not for digits
            or house numbers).
        crop_padding: reflect padding on each side before a random crop.
    """

    tfds_name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    train_split: str
    test_split: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool
    crop_padding: int


DATASETS: dict[str, DatasetSpec] = {
    # Standard published CIFAR statistics (training set, 0..255 units).
    'cifar10': DatasetSpec(
        tfds_name='cifar10', num_classes=10, image_shape=(32, 32, 3),
        train_split='train', test_split='test',
        mean=(125.3, 123.0, 113.9), std=(63.0, 62.1, 66.7),
        flip=True, crop_padding=4),
    'cifar100': DatasetSpec(
        tfds_name='cifar100', num_classes=100, image_shape=(32, 32, 3),
        train_split='train', test_split='test',
        mean=(129.3, 124.1, 112.4), std=(68.2, 65.4, 70.4),
        flip=True, crop_padding=4),
    # Widely used SVHN statistics of the `train` split, (0.4377, 0.4438,
    # 0.4728) / (0.1980, 0.2010, 0.1970) times 255; `extra` is close to them.
    'svhn_cropped': DatasetSpec(
        tfds_name='svhn_cropped', num_classes=10, image_shape=(32, 32, 3),
        train_split='train+extra', test_split='test',
        mean=(111.6, 113.2, 120.6), std=(50.5, 51.3, 50.2),
        flip=False, crop_padding=4),
    # Well-known Fashion-MNIST training statistics 0.2860 / 0.3530 times 255.
    'fashion_mnist': DatasetSpec(
        tfds_name='fashion_mnist', num_classes=10, image_shape=(28, 28, 1),
        train_split='train', test_split='test',
        mean=(72.94,), std=(90.02,),
        flip=True, crop_padding=4),
    'digits': DatasetSpec(
        tfds_name='sklearn_digits', num_classes=10, image_shape=(8, 8, 1),
        train_split='train', test_split='test',
        mean=_DIGITS_TRAIN_MEAN, std=_DIGITS_TRAIN_STD,
        flip=False, crop_padding=1),
}

# Builders that can be built from files already on this machine; every other
# data set must have been prepared beforehand (this machine cannot download).
_OFFLINE_BUILDABLE = frozenset({'sklearn_digits'})


class DatasetUnavailableError(ValueError):
    """A data set is not prepared in `data_dir` and cannot be downloaded."""


def get_spec(name: str) -> DatasetSpec:
    """Returns the `DatasetSpec` registered as `name` (a key of DATASETS)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; allowed: "
                         f"{', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def _unavailable_error(name: str, data_dir: str) -> DatasetUnavailableError:
    return DatasetUnavailableError(
        f"dataset {name!r} is not prepared in data_dir {data_dir!r} and this "
        f"machine cannot download it; run tfds.builder({name!r}, "
        f"data_dir=...).download_and_prepare() on a machine with network, "
        f"or set --config.data_dir / TFDS_DATA_DIR to a directory that "
        f"holds it")


def load_split(name: str, split: str,
               data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Loads a whole split into memory.

    `sklearn_digits` is built into `data_dir` on first use (offline). Other
    data sets are never downloaded: if they are not prepared, this raises.

    Args:
        name: a key of DATASETS.
        split: any tfds split string, e.g. 'train', 'train[:90%]',
            'train[90%:]+extra[90%:]'.
        data_dir: tfds data directory; None means tfds' default
            (TFDS_DATA_DIR or ~/tensorflow_datasets).

    Returns:
        (images uint8 [N, H, W, C], labels int32 [N]).

    Raises:
        ValueError: unknown `name`.
        DatasetUnavailableError: the data set is not prepared in `data_dir`.
    """
    spec = get_spec(name)
    builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
    if spec.tfds_name in _OFFLINE_BUILDABLE and not builder.is_prepared():
        builder.download_and_prepare()
    # Ask for the data rather than checking `is_prepared()` first: under
    # `tfds.testing.mock_data` the builder's data_dir does not exist (so
    # `is_prepared()` is False) yet `as_dataset` serves fake examples.
    try:
        dataset = builder.as_dataset(split=split)
    except AssertionError as error:  # tfds' "could not find data in ...".
        if builder.is_prepared():
            raise
        raise _unavailable_error(name, str(builder.data_dir_root)) from error

    dataset = dataset.map(
        lambda example: (example['image'], tf.cast(example['label'], tf.int32)))
    image_chunks, label_chunks = [], []
    for images, labels in tfds.as_numpy(dataset.batch(_READ_CHUNK_SIZE)):
        image_chunks.append(images)
        label_chunks.append(labels)
    if not image_chunks:
        return (np.zeros((0, *spec.image_shape), np.uint8),
                np.zeros((0,), np.int32))
    return np.concatenate(image_chunks), np.concatenate(label_chunks)


def _split_percent_slice(split: str, percent_slice: str) -> str:
    """Applies a slice like '[:90%]' to each part of a '+'-joined split."""
    return '+'.join(f'{part}{percent_slice}' for part in split.split('+'))


def train_and_eval_splits(spec: DatasetSpec,
                          validation_split: bool) -> tuple[str, str]:
    """The (train split, eval split) tfds strings of a data set.

    Args:
        spec: the data set.
        validation_split: if True, train on the first 90% of the training data
            (of each part of a '+'-joined split) and evaluate on the held-out
            last 10%; otherwise train on the training split and evaluate on
            the test split.

    Returns:
        (train_split, eval_split).
    """
    if not validation_split:
        return spec.train_split, spec.test_split
    return (_split_percent_slice(spec.train_split, '[:90%]'),
            _split_percent_slice(spec.train_split, '[90%:]'))
