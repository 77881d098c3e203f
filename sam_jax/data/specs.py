"""The data sets: what the pipelines and models need to know of each.

No TensorFlow here: the registry is read on machines with JAX alone (the
in-memory, device-resident path), and by the tfds and streaming paths alike.
"""

import dataclasses

import numpy as np


# The augmentations by name (their implementations: augment.py and
# device_augment.py for in-memory data sets, imagenet_preprocessing.py for the
# streamed ones), here so that config validation needs no TensorFlow.
IN_MEMORY_AUGMENTATIONS = ('none', 'basic', 'cutout', 'autoaugment',
                           'autoaugment_cutout', 'autoaugment_only',
                           'autoaugment_small_image', 'randaugment')
STREAMING_AUGMENTATIONS = ('none', 'basic', 'autoaugment', 'randaugment')


def _digits_train_statistics() -> tuple[tuple[float], tuple[float]]:
    """Pixel mean and std of the digits train split, in 0..255 units."""
    from sam_jax.data import splits  # scikit-learn: cheap (~0.1 s)
    images, _ = splits.load_digits_split('train')
    pixels = images.astype(np.float64)
    return (float(pixels.mean()),), (float(pixels.std()),)


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


def get_spec(name: str) -> DatasetSpec:
    """Returns the `DatasetSpec` registered as `name` (a key of DATASETS)."""
    if name not in DATASETS:
        in_memory = sorted(k for k, v in DATASETS.items() if v.in_memory)
        streamed = sorted(k for k, v in DATASETS.items() if not v.in_memory)
        raise ValueError(f"unknown dataset {name!r}; allowed: "
                         f"{', '.join(in_memory)} (in memory), "
                         f"{', '.join(streamed)} (streamed)")
    return DATASETS[name]


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


def _split_percent_slice(split: str, percent_slice: str) -> str:
    """Applies a slice like '[:90%]' to each part of a '+'-joined split."""
    return '+'.join(f'{part}{percent_slice}' for part in split.split('+'))
