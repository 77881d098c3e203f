"""Dataset registry, and loading whole tfds splits into numpy arrays.

Small data sets (`spec.in_memory`: CIFAR, SVHN, Fashion-MNIST, digits) are
loaded once as (uint8 images, int32 labels) and the input pipeline indexes
into those arrays; that is what lets batch content be a pure function of
(seed, step). The others (ImageNet and the finetuning sets) are too large or
have images of differing sizes: `streaming.py` reads them from their files.
"""

from collections.abc import Mapping
import dataclasses
import types

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from sam_jax.data import digits as _digits  # Registers `sklearn_digits`.
from sam_jax.errors import DatasetUnavailableError  # noqa: F401  (its old home)

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

# Per-channel ImageNet statistics in 0..255 units (official SAM code); also
# used for the finetuning sets, whose pretrained models expect them.
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


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
        crop_padding: reflect padding on each side before a random crop
            (in-memory data sets only).
        autoaugment_policy: AutoAugment policy of the 'autoaugment'
            augmentations: 'cifar', 'svhn' or 'imagenet'.
        in_memory: True: `load_split` + `pipeline.train_dataset` /
            `eval_batches`. False: images are stored encoded with differing
            sizes, read by `streaming.streaming_train_dataset` /
            `streaming_eval_batches`, and `image_shape` is the default
            training resolution (pass the model's as `image_size`).
        source: where a streamed data set is read from: 'tfds' (a prepared
            tfds builder named `tfds_name`) or 'image_folder'
            (`<data_dir>/<tfds_name>/<split>/<class>/<image>`).
        manual_download: tfds can only build it from files the user
            downloads (ImageNet); the unavailable-error says how.
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
    autoaugment_policy: str = 'cifar'
    in_memory: bool = True
    source: str = 'tfds'
    manual_download: bool = False


def _streamed_spec(tfds_name: str, num_classes: int, train_split: str,
                   test_split: str, **kwargs) -> DatasetSpec:
    """A streamed data set at 224 px with ImageNet normalisation."""
    return DatasetSpec(
        tfds_name=tfds_name, num_classes=num_classes, image_shape=(224, 224, 3),
        train_split=train_split, test_split=test_split, mean=IMAGENET_MEAN,
        std=IMAGENET_STD, flip=True, crop_padding=0,
        autoaugment_policy='imagenet', in_memory=False, **kwargs)


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
        flip=False, crop_padding=4, autoaugment_policy='svhn'),
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
    # Streamed (spec.in_memory False). Paper: ImageNet training (Table 2)
    # and finetuning (Table 3) on the standard train / test splits.
    'imagenet2012': _streamed_spec('imagenet2012', 1000, 'train',
                                   'validation', manual_download=True),
    'oxford_flowers102': _streamed_spec('oxford_flowers102', 102,
                                        'train+validation', 'test'),
    'oxford_iiit_pet': _streamed_spec('oxford_iiit_pet', 37, 'train', 'test'),
    # tfds calls Stanford Cars `cars196`.
    'stanford_cars': _streamed_spec('cars196', 196, 'train', 'test'),
    'food101': _streamed_spec('food101', 101, 'train', 'validation'),
    # No tfds builder: read from image folders (see image_folder.py). FGVC
    # Aircraft: 100 variants, trainval 6,667 / test 3,333 images.
    'fgvc_aircraft': _streamed_spec('fgvc_aircraft', 100, 'trainval', 'test',
                                    source='image_folder'),
    # Birdsnap: 500 species, test 2,443 images (the train set is whatever
    # of its URLs could be downloaded, about 47k).
    'birdsnap': _streamed_spec('birdsnap', 500, 'train', 'test',
                               source='image_folder'),
}

# Builders that can be built from files already on this machine; every other
# data set must have been prepared beforehand (this machine cannot download).
_OFFLINE_BUILDABLE = frozenset({'sklearn_digits'})


def get_spec(name: str) -> DatasetSpec:
    """Returns the `DatasetSpec` registered as `name` (a key of DATASETS)."""
    if name not in DATASETS:
        in_memory = sorted(k for k, v in DATASETS.items() if v.in_memory)
        streamed = sorted(k for k, v in DATASETS.items() if not v.in_memory)
        raise ValueError(f"unknown dataset {name!r}; allowed: "
                         f"{', '.join(in_memory)} (in memory), "
                         f"{', '.join(streamed)} (streamed)")
    return DATASETS[name]


def _unavailable_error(name: str, data_dir: str) -> DatasetUnavailableError:
    """One-line error saying how to prepare data set `name` in `data_dir`."""
    spec = DATASETS.get(name)
    if spec is not None and spec.manual_download:
        return DatasetUnavailableError(
            f"dataset {name!r} is not prepared in data_dir {data_dir!r} and "
            f"tfds cannot download it: put its tar files (for imagenet2012 "
            f"ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar) in "
            f"{data_dir}/downloads/manual and run `tfds build "
            f"{spec.tfds_name} --data_dir={data_dir}` (or tfds.builder("
            f"{spec.tfds_name!r}, data_dir=...).download_and_prepare()), or "
            f"set --config.data_dir / TFDS_DATA_DIR to a directory that "
            f"holds it prepared")
    return DatasetUnavailableError(
        f"dataset {name!r} is not prepared in data_dir {data_dir!r} and this "
        f"machine cannot download it; run tfds.builder("
        f"{spec.tfds_name if spec else name!r}, "
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
        ValueError: unknown `name`, or a streamed data set.
        DatasetUnavailableError: the data set is not prepared in `data_dir`.
    """
    spec = get_spec(name)
    if not spec.in_memory:
        raise ValueError(
            f"dataset {name!r} is streamed (spec.in_memory is False), not "
            f"loaded into memory; read it with "
            f"sam_jax.data.streaming_train_dataset / streaming_eval_batches")
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


def absolute_split_ranges(split: str, split_sizes: Mapping[str, int]
                          ) -> list[tuple[str, int, int]]:
    """Resolves a tfds split string into (split name, start, end) parts.

    Args:
        split: e.g. 'train', 'train[:90%]+validation', 'test[10:-5]'.
        split_sizes: number of examples of each named split.

    Returns:
        One (name, start, end) per '+'-joined part, in order; the part reads
        examples [start, end) of split `name`.
    """
    split_infos = {name: types.SimpleNamespace(num_examples=size)
                   for name, size in split_sizes.items()}
    try:
        instructions = tfds.core.ReadInstruction.from_spec(split).to_absolute(
            split_infos)
    except (KeyError, ValueError, AssertionError) as error:
        raise ValueError(f"cannot read split {split!r}; available splits: "
                         f"{', '.join(sorted(split_sizes))}") from error
    return [(part.splitname, part.from_ or 0,
             split_sizes[part.splitname] if part.to is None else part.to)
            for part in instructions]


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
