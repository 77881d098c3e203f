"""Dataset registry, and loading whole tfds splits into numpy arrays.

Small data sets (`spec.in_memory`: CIFAR, SVHN, Fashion-MNIST, digits) are
loaded once as (uint8 images, int32 labels) and the input pipeline indexes
into those arrays; that is what lets batch content be a pure function of
(seed, step). The others (ImageNet and the finetuning sets) are too large or
have images of differing sizes: `streaming.py` reads them from their files.
"""

from collections.abc import Mapping
import types

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from sam_jax.data import digits as _digits  # noqa: F401  (registers `sklearn_digits`)
from sam_jax.data.specs import (DATASETS, DatasetSpec, get_spec,  # noqa: F401
                                train_and_eval_splits)  # (their old home)
from sam_jax.errors import DatasetUnavailableError  # noqa: F401  (its old home)

# Chunk size for reading a split: `as_dataset(batch_size=-1)` would be one
# call, but under `tfds.testing.mock_data` (no metadata) it batches by
# sys.maxsize and aborts the process.
_READ_CHUNK_SIZE = 4096




# Builders that can be built from files already on this machine; every other
# data set must have been prepared beforehand (this machine cannot download).
_OFFLINE_BUILDABLE = frozenset({'sklearn_digits'})


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
