"""Whole in-memory splits as numpy arrays, without TensorFlow.

For machines with JAX but no TensorFlow / tfds. Returns the same
(uint8 images [N, H, W, C], int32 labels [N]) as `sources.load_split`:

- 'digits': straight from scikit-learn, with the fixed split of
  `digits.split_indices()`, so equal to what the tfds builder
  `sklearn_digits` stores.
- 'fashion_mnist': from the four original IDX files. The first directory
  that holds them wins: the `fashion_mnist_dir` argument, else
  $SAM_JAX_FASHION_MNIST_DIR, else `<data_dir>/fashion_mnist`, else the
  Debian package's directory. Only if none does, a tfds-prepared
  `fashion_mnist` in the tfds data dir is read through `sources.load_split`
  (TensorFlow is imported on that branch only).

Example order: tfds does not keep the publisher's order; it stores a split
sorted by md5(split name + str(example index)). By default the IDX
examples are put in that order (`example_order='tfds'`), so both sources
give identical arrays, and 'train[:90%]' holds out the same examples as
`sources.load_split` on a tfds-prepared copy. `example_order='file'` keeps
the IDX files' order.

Split strings: 'train', 'test', and one slice of either in tfds syntax
('train[:90%]', 'train[90%:]', 'test[10:-5]'), with tfds' rounding of
percentages, so `train_and_eval_arrays` holds out the same fraction as
`sources.train_and_eval_splits`.
"""

import glob
import hashlib
import importlib
import os

import numpy as np

from sam_jax.data import idx as idx_lib
from sam_jax.data.splits import load_digits_split, resolve_split, split_name
from sam_jax.errors import DatasetUnavailableError

ARRAY_DATASETS = ('digits', 'fashion_mnist')
EXAMPLE_ORDERS = ('tfds', 'file')

FASHION_MNIST_DIR_ENV = 'SAM_JAX_FASHION_MNIST_DIR'
# Where Debian's `dataset-fashion-mnist` package installs the IDX files.
DEBIAN_FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'
# Split -> (images file, labels file); each may also be stored un-gzipped
# under the name without '.gz'.
FASHION_MNIST_FILES = {
    'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
    'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
}
_FILE_NAMES = [name for files in FASHION_MNIST_FILES.values()
               for name in files]
_FASHION_MNIST_SHAPE = (28, 28, 1)
_FASHION_MNIST_CLASSES = 10
_INSTALL_HINT = (f'run `apt-get install -y dataset-fashion-mnist` (or set '
                 f'{FASHION_MNIST_DIR_ENV} / --config.data_dir)')

def train_and_eval_split_names(validation_split: bool) -> tuple[str, str]:
    """(train split, eval split) of digits / Fashion-MNIST.

    The semantics of `sources.train_and_eval_splits` for a data set whose
    train split is 'train': with `validation_split`, train on the first 90%
    of it and evaluate on the last 10%; otherwise train / test.
    """
    if validation_split:
        return 'train[:90%]', 'train[90%:]'
    return 'train', 'test'


def _idx_file(directory: str, gz_name: str) -> str | None:
    for name in (gz_name, gz_name.removesuffix('.gz')):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    return None


def _has_fashion_mnist_files(directory: str) -> bool:
    return all(_idx_file(directory, name) is not None for name in _FILE_NAMES)


def _tfds_data_dir(data_dir: str | None) -> str:
    # tfds' own default, resolved without importing tfds.
    return os.path.expanduser(data_dir or os.environ.get('TFDS_DATA_DIR')
                              or '~/tensorflow_datasets')


def fashion_mnist_source(data_dir: str | None = None,
                         fashion_mnist_dir: str | None = None
                         ) -> tuple[str, str]:
    """Where Fashion-MNIST will be read from (to log it, or to check early).

    Args:
        data_dir: the run's tfds data dir (config.data_dir); None means
            $TFDS_DATA_DIR or ~/tensorflow_datasets.
        fashion_mnist_dir: a directory holding the four IDX files; overrides
            everything else.

    Returns:
        ('idx', directory of the IDX files) or ('tfds', tfds data dir).

    Raises:
        DatasetUnavailableError: (one line) no source found, or the
            directory named by the argument or the environment variable
            lacks the files.
    """
    for directory, origin in ((fashion_mnist_dir, 'fashion_mnist_dir'),
                              (os.environ.get(FASHION_MNIST_DIR_ENV),
                               f'${FASHION_MNIST_DIR_ENV}')):
        if directory:
            # Named explicitly: a wrong directory is an error, not a reason
            # to silently read another copy.
            if not _has_fashion_mnist_files(directory):
                raise DatasetUnavailableError(
                    f"dataset 'fashion_mnist': {origin} is {directory!r}, "
                    f"which lacks the IDX files {', '.join(_FILE_NAMES)}; "
                    f"{_INSTALL_HINT}")
            return 'idx', directory
    candidates = [DEBIAN_FASHION_MNIST_DIR]
    if data_dir:
        candidates.insert(0, os.path.join(data_dir, 'fashion_mnist'))
    for directory in candidates:
        if _has_fashion_mnist_files(directory):
            return 'idx', directory
    tfds_dir = _tfds_data_dir(data_dir)
    if glob.glob(os.path.join(tfds_dir, 'fashion_mnist', '*',
                              'dataset_info.json')):
        return 'tfds', tfds_dir
    raise DatasetUnavailableError(
        f"dataset 'fashion_mnist' not found: no IDX files in "
        f"{' or '.join(candidates)} and no prepared tfds fashion_mnist in "
        f"{tfds_dir}; {_INSTALL_HINT}")


def _check_fashion_mnist(images, labels, directory, split):
    # Catches e.g. MNIST-style files of another data set in the directory.
    label_range = ((int(labels.min()), int(labels.max())) if labels.size
                   else (0, 0))
    if (images.shape[1:] != _FASHION_MNIST_SHAPE
            or label_range[1] >= _FASHION_MNIST_CLASSES):
        raise idx_lib.IdxFormatError(
            f'{directory}: the {split} IDX files hold images of shape '
            f'{images.shape[1:]} with labels in {list(label_range)}, not '
            f'Fashion-MNIST ({_FASHION_MNIST_SHAPE}, '
            f'{_FASHION_MNIST_CLASSES} classes)')


def _read_fashion_mnist_idx(directory: str, split: str):
    images_name, labels_name = FASHION_MNIST_FILES[split]
    try:
        images, labels = idx_lib.read_idx_images_and_labels(
            _idx_file(directory, images_name), _idx_file(directory, labels_name))
    except idx_lib.IdxFormatError as error:  # a damaged or cut-short copy
        raise idx_lib.IdxFormatError(
            f"dataset 'fashion_mnist': {error}; replace it with a whole copy: "
            f"{_INSTALL_HINT}") from None
    _check_fashion_mnist(images, labels, directory, split)
    return images, labels


def tfds_example_order(split_name: str, num_examples: int) -> np.ndarray:
    """Where tfds puts the examples of a split it generated with index keys.

    tfds sorts a split's examples by the 128-bit md5 of (split name, then
    str(key)) before writing them (tensorflow_datasets/core/hashing.py and
    shuffle.py); fashion_mnist's keys are the indices in the IDX files.

    Returns:
        int [num_examples]: entry i is the file index of tfds' example i.
    """
    salted = hashlib.md5(split_name.encode('utf-8'))
    hashes = []
    for index in range(num_examples):
        md5 = salted.copy()
        md5.update(str(index).encode('utf-8'))
        hashes.append(int(md5.hexdigest(), 16))
    return np.array(sorted(range(num_examples), key=hashes.__getitem__),
                    dtype=np.int64)


def _load_splits(name: str, splits: list[str], data_dir: str | None,
                 fashion_mnist_dir: str | None, example_order: str
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    if example_order not in EXAMPLE_ORDERS:
        raise ValueError(f'example_order {example_order!r}; allowed: '
                         f'{", ".join(EXAMPLE_ORDERS)}')
    if name == 'digits':  # Its builder keeps the split order: no reorder.
        return [load_digits_split(split) for split in splits]
    if name != 'fashion_mnist':
        raise ValueError(f'no TF-free loader for dataset {name!r}; allowed: '
                         f'{", ".join(ARRAY_DATASETS)} (others: '
                         f'sources.load_split)')
    kind, location = fashion_mnist_source(data_dir, fashion_mnist_dir)
    bases = {}  # Each base split is read (train: ~47 MB) and ordered once.
    results = []
    for split in splits:
        base = split_name(split, FASHION_MNIST_FILES)
        if base not in bases:
            if kind == 'tfds':
                # Imports TensorFlow; reached only without any IDX copy.
                try:
                    sources = importlib.import_module('sam_jax.data.sources')
                except ImportError as error:
                    raise DatasetUnavailableError(
                        f"dataset 'fashion_mnist': only a tfds-prepared copy "
                        f"was found ({location}) and it cannot be read here "
                        f"({error}); {_INSTALL_HINT}") from error
                images, labels = sources.load_split(name, base,
                                                    data_dir=location)
                if example_order == 'file':
                    order = np.argsort(tfds_example_order(base,
                                                          labels.shape[0]))
                    images, labels = images[order], labels[order]
            else:
                images, labels = _read_fashion_mnist_idx(location, base)
                if example_order == 'tfds':
                    order = tfds_example_order(base, labels.shape[0])
                    images, labels = images[order], labels[order]
            bases[base] = images, labels
        images, labels = bases[base]
        _, start, end = resolve_split(split, {base: labels.shape[0]})
        results.append((images[start:end], labels[start:end]))
    return results


def load_split_arrays(name: str, split: str, *, data_dir: str | None = None,
                      fashion_mnist_dir: str | None = None,
                      example_order: str = 'tfds'
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Loads a whole split of 'digits' or 'fashion_mnist' into memory.

    Args:
        name: 'digits' or 'fashion_mnist'.
        split: 'train', 'test', or one slice of either ('train[:90%]').
        data_dir: tfds data dir (config.data_dir): searched for
            `fashion_mnist/<IDX files>`, then for a tfds-prepared copy.
        fashion_mnist_dir: directory of the Fashion-MNIST IDX files; takes
            precedence over $SAM_JAX_FASHION_MNIST_DIR and `data_dir`.
        example_order: Fashion-MNIST only: 'tfds' (as tfds stores it, the
            same arrays as sources.load_split) or 'file' (the IDX order).

    Returns:
        (uint8 images [N, H, W, C], int32 labels [N]).

    Raises:
        ValueError: another data set name, or a bad split string.
        DatasetUnavailableError: Fashion-MNIST is nowhere to be found.
        idx.IdxFormatError: a malformed IDX file.
    """
    return _load_splits(name, [split], data_dir, fashion_mnist_dir,
                        example_order)[0]


def train_and_eval_arrays(
        name: str, *, validation_split: bool, data_dir: str | None = None,
        fashion_mnist_dir: str | None = None, example_order: str = 'tfds'
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((train images, train labels), (eval images, eval labels)).

    With `validation_split`, the first 90% of the training split trains and
    its last 10% evaluates (as `sources.train_and_eval_splits`); otherwise
    train / test. Arguments as `load_split_arrays`.
    """
    train, evaluation = _load_splits(
        name, list(train_and_eval_split_names(validation_split)), data_dir,
        fashion_mnist_dir, example_order)
    return train, evaluation
