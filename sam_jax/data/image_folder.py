"""Data sets tfds has no builder for (FGVC Aircraft, Birdsnap), from folders.

Layout, as `tfds.ImageFolder` expects it:

    <data_dir>/<folder>/<split>/<class>/<image>.jpg|.jpeg|.png

e.g. <data_dir>/fgvc_aircraft/trainval/Boeing_737-800/0034309.jpg. Class ids
are the sorted class folder names over all splits, so every split agrees.
A split lists its images in a fixed pseudo-random order (a permutation
seeded by the split name), so that contiguous ranges mix classes the way a
prepared tfds split does; the streaming pipeline shuffles on top of that.
"""

import dataclasses
import os
import zlib

import numpy as np
import tensorflow as tf

from sam_jax.data.sources import absolute_split_ranges
from sam_jax.data.specs import DatasetSpec
from sam_jax.data.sources import DatasetUnavailableError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')


def default_data_dir() -> str:
    """tfds' default data directory: TFDS_DATA_DIR or ~/tensorflow_datasets."""
    return os.environ.get('TFDS_DATA_DIR') or os.path.expanduser(
        '~/tensorflow_datasets')


def _list_dirs(path: str) -> list[str]:
    return sorted(name.rstrip('/') for name in tf.io.gfile.listdir(path)
                  if tf.io.gfile.isdir(os.path.join(path, name)))


def _missing_folder_error(name: str, root: str,
                          spec: DatasetSpec) -> DatasetUnavailableError:
    splits = ', '.join(dict.fromkeys((spec.train_split, spec.test_split)))
    return DatasetUnavailableError(
        f"dataset {name!r} has no image folder at {root!r}; expected "
        f"{root}/<split>/<class>/<image>.jpg|.jpeg|.png with splits "
        f"{splits} and {spec.num_classes} class folders; set "
        f"--config.data_dir (default TFDS_DATA_DIR or ~/tensorflow_datasets) "
        f"to the directory that holds {spec.tfds_name}/")


@dataclasses.dataclass(frozen=True)
class ImageFolderSource:
    """The encoded images of an image folder, by split, in a fixed order.

    Attributes:
        root: the folder holding one sub-folder per split.
        class_names: sorted class folder names; label i is class_names[i].
        files: split name -> (image paths, int32 labels), in reading order.
    """

    root: str
    class_names: tuple[str, ...]
    files: dict[str, tuple[np.ndarray, np.ndarray]]

    def _paths_and_labels(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        paths, labels = [], []
        split_sizes = {name: len(labels)
                       for name, (_, labels) in self.files.items()}
        for name, start, end in absolute_split_ranges(split, split_sizes):
            paths.append(self.files[name][0][start:end])
            labels.append(self.files[name][1][start:end])
        return np.concatenate(paths), np.concatenate(labels)

    def num_examples(self, split: str) -> int:
        """Examples in a split string such as 'train', 'trainval[:90%]'."""
        return len(self._paths_and_labels(split)[1])

    def read_range(self, split: str, start: int, end: int) -> tf.data.Dataset:
        """Examples [start, end) of `split`: {'image': bytes, 'label'}."""
        paths, labels = self._paths_and_labels(split)
        dataset = tf.data.Dataset.from_tensor_slices(
            (paths[start:end], labels[start:end]))
        return dataset.map(
            lambda path, label: {'image': tf.io.read_file(path),
                                 'label': label},
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def read(self, split: str) -> tf.data.Dataset:
        """All examples of `split` in the fixed order."""
        return self.read_range(split, 0, self.num_examples(split))


def _split_files(split_dir: str, class_ids: dict[str, int],
                 split_name: str) -> tuple[np.ndarray, np.ndarray]:
    paths, labels = [], []
    for class_name in _list_dirs(split_dir):
        class_dir = os.path.join(split_dir, class_name)
        for file_name in sorted(tf.io.gfile.listdir(class_dir)):
            if file_name.lower().endswith(IMAGE_EXTENSIONS):
                paths.append(os.path.join(class_dir, file_name))
                labels.append(class_ids[class_name])
    # Seeded by the split name: the same order on every host and run.
    order = np.random.RandomState(
        zlib.crc32(split_name.encode())).permutation(len(paths))
    return np.array(paths, dtype=str)[order], np.array(labels, np.int32)[order]


def open_image_folder(name: str, spec: DatasetSpec,
                      data_dir: str | None = None) -> ImageFolderSource:
    """Lists `<data_dir>/<spec.tfds_name>/<split>/<class>/<image>` files.

    Args:
        name: the data set's key in DATASETS (for error messages).
        spec: its spec; `tfds_name` is the folder name, `num_classes` the
            number of class folders expected.
        data_dir: directory holding the folder; None means TFDS_DATA_DIR or
            ~/tensorflow_datasets.

    Raises:
        DatasetUnavailableError: (one line) the folder, a split folder of
            spec.train_split / spec.test_split, or its images are missing.
        ValueError: the number of class folders is not spec.num_classes.
    """
    root = os.path.join(data_dir or default_data_dir(), spec.tfds_name)
    if not tf.io.gfile.isdir(root):
        raise _missing_folder_error(name, root, spec)
    split_names = _list_dirs(root)
    needed = {part.split('[')[0] for split in (spec.train_split,
                                               spec.test_split)
              for part in split.split('+')}
    if not needed <= set(split_names):
        raise _missing_folder_error(name, root, spec)
    class_names = sorted({class_name for split_name in split_names
                          for class_name in _list_dirs(
                              os.path.join(root, split_name))})
    if len(class_names) != spec.num_classes:
        raise ValueError(
            f"image folder {root!r} of dataset {name!r} has "
            f"{len(class_names)} class folders; expected {spec.num_classes}")
    class_ids = {class_name: i for i, class_name in enumerate(class_names)}
    files = {split_name: _split_files(os.path.join(root, split_name),
                                      class_ids, split_name)
             for split_name in split_names}
    if any(len(files[split_name][1]) == 0 for split_name in needed):
        raise _missing_folder_error(name, root, spec)
    return ImageFolderSource(root=root, class_names=tuple(class_names),
                             files=files)
