"""`sklearn_digits`: a tfds builder for the offline default data set.

scikit-learn ships the UCI optical-digits images (1,797 grey 8x8 images with
values 0..16) inside its wheel, so this data set builds on a machine without
network. It is the default for smoke runs and tests; the paper's data sets
(CIFAR, SVHN, Fashion-MNIST) need a prepared `data_dir`.
"""

from etils import epath
import numpy as np
from sklearn import datasets as sklearn_datasets
import tensorflow_datasets as tfds

NUM_EXAMPLES = 1797
NUM_TRAIN_EXAMPLES = 1297
# The permutation that defines the fixed train/test split.
SPLIT_PERMUTATION_SEED = 0
# sklearn stores intensities as 0..16; scaled to 0..255 to look like every
# other image data set (uint8, same normalisation code).
_SKLEARN_MAX_VALUE = 16


def split_indices() -> dict[str, np.ndarray]:
    """Indices into `sklearn.datasets.load_digits()` of each split, in order.

    Returns:
        {'train': the first 1,297 entries of
        `np.random.RandomState(0).permutation(1797)`, 'test': the last 500}.
    """
    permutation = np.random.RandomState(SPLIT_PERMUTATION_SEED).permutation(
        NUM_EXAMPLES)
    return {
        'train': permutation[:NUM_TRAIN_EXAMPLES],
        'test': permutation[NUM_TRAIN_EXAMPLES:],
    }


def load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as (uint8 images [N, 8, 8, 1] in 0..255, int labels)."""
    digits = sklearn_datasets.load_digits()
    images = np.round(digits.images * 255.0 / _SKLEARN_MAX_VALUE)
    images = images.astype(np.uint8)[..., np.newaxis]
    return images, digits.target


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's 8x8 digits with a fixed 1,297 / 500 train/test split."""

    VERSION = tfds.core.Version('1.0.0')
    RELEASE_NOTES = {'1.0.0': 'Initial release.'}

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # tfds 4.9.10 resolves this for builders outside its own package via
        # the `importlib_resources` backport, which it only installs on
        # Python < 3.9; its fallback is simply this module's file.
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                'Optical recognition of handwritten digits, as shipped by '
                'scikit-learn (sklearn.datasets.load_digits), scaled to '
                '0..255.'),
            features=tfds.features.FeaturesDict({
                'image': tfds.features.Image(shape=(8, 8, 1), dtype=np.uint8),
                'label': tfds.features.ClassLabel(num_classes=10),
            }),
            supervised_keys=('image', 'label'),
            # Keep the permutation order on disk, so a split reads back in the
            # order `split_indices` documents.
            disable_shuffling=True,
            homepage=('https://archive.ics.uci.edu/dataset/80/'
                      'optical+recognition+of+handwritten+digits'),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download: the data is in scikit-learn.
        images, labels = load_sklearn_digits()
        return {
            split: self._generate_examples(images, labels, indices)
            for split, indices in split_indices().items()
        }

    def _generate_examples(self, images, labels, indices):
        # Keys are positions within the split so that key order is split order.
        for position, index in enumerate(indices):
            yield position, {'image': images[index],
                             'label': int(labels[index])}
