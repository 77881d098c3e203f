"""Deterministic, resumable input pipelines for streamed data sets.

For data sets too large, or too irregular (images of differing sizes), to
hold in memory: ImageNet and the finetuning sets (`spec.in_memory` False).
They yield the same batches as `pipeline.train_dataset` / `eval_batches`.

Design constraint, as for the in-memory pipeline: training batch `step` is a
pure function of (seed, step) (and of the process count, which fixes what
each host reads), never of iterator state, so a run restarted at step s sees
bit-identical batches from s on. Every random choice is stateless:

- Host k reads examples [k * n, (k + 1) * n) of the split, n = N // P for P
  processes, cut into `num_chunks` contiguous chunks (tfds slices, so each is
  read from its own files).
- Epoch e reads the chunks in an order drawn from (seed, e), interleaving
  up to 8 chunks at a time, and shuffles the records in consecutive windows
  of `shuffle_window` examples, each with a permutation drawn from
  (seed, e, window). The first (n // B) * B records form the epoch's
  n // B steps of B = global_batch_size / P examples; the rest are dropped.
- The example at global position p = step * global_batch_size + k * B + j
  is augmented with a seed drawn from (seed, p), as in the in-memory
  pipeline.
- Resuming at step s skips the records of the current epoch that steps
  before s consumed, after shuffling and before decoding. Cost: those
  records are read from disk (serialized, neither decoded nor augmented),
  at most one epoch of this host's share -- for ImageNet on one host up to
  ~140 GB, a few minutes at disk speed; P hosts read 1/P each.

Shuffling is by windows, not tf.data's stateful shuffle buffer: a buffer's
seed would depend on TensorFlow's global seed, a window's depends only on
(seed, epoch, window). Memory: one window of encoded images per host
(~1.8 GB for 16,384 ImageNet JPEGs).
"""

from collections.abc import Iterator
import dataclasses
from typing import Protocol

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from sam_jax.data import image_folder
from sam_jax.data import imagenet_preprocessing
from sam_jax.data import pipeline
from sam_jax.data import sources
from sam_jax.data.specs import DatasetSpec

# Examples per shuffle window (per host).
DEFAULT_SHUFFLE_WINDOW = 16384
# Automatic chunking: at most this many chunks of at least this many
# examples each.
_MAX_CHUNKS = 32
_MIN_CHUNK_EXAMPLES = 2048
# Chunks read at the same time, one record from each in turn.
_CHUNK_CYCLE = 8


class RecordSource(Protocol):
    """Undecoded examples of a data set, in one fixed order per split.

    Records are {'image': scalar string (encoded image), 'label': int32}.
    """

    def num_examples(self, split: str) -> int:
        """Examples in a tfds-style split string."""

    def read(self, split: str) -> tf.data.Dataset:
        """All records of `split`, in order."""

    def read_range(self, split: str, start: int, end: int) -> tf.data.Dataset:
        """Records [start, end) of `split`, in order."""


@dataclasses.dataclass(frozen=True)
class TfdsSource:
    """Records of a prepared tfds builder, read without decoding images.

    Attributes:
        builder: the tfds builder.
        name: the data set's name in error messages (a key of DATASETS).
    """

    builder: tfds.core.DatasetBuilder
    name: str

    def _as_dataset(self, split: str) -> tf.data.Dataset:
        # Only image (left encoded) and label: no cost for other features,
        # e.g. the pets' segmentation masks.
        decoders = tfds.decode.PartialDecoding(
            {'image': True, 'label': True},
            decoders={'image': tfds.decode.SkipDecoding()})
        # Ask for the data rather than checking `is_prepared()` first: under
        # `tfds.testing.mock_data` the data_dir does not exist, yet
        # `as_dataset` serves fake examples.
        try:
            dataset = self.builder.as_dataset(split=split, shuffle_files=False,
                                              decoders=decoders)
        except AssertionError as error:  # tfds' "could not find data in".
            if self.builder.is_prepared():
                raise
            raise sources._unavailable_error(
                self.name, str(self.builder.data_dir_root)) from error
        return dataset.map(lambda example: {
            'image': example['image'],
            'label': tf.cast(example['label'], tf.int32)})

    def _absolute_ranges(self, split):
        """(name, start, end) parts of `split`; None if tfds lacks sizes."""
        split_sizes = {name: info.num_examples
                       for name, info in self.builder.info.splits.items()}
        if not split_sizes:  # Mock data: splits of any name, any size.
            return None
        return sources.absolute_split_ranges(split, split_sizes)

    def num_examples(self, split: str) -> int:
        cardinality = int(self._as_dataset(split).cardinality())
        if cardinality < 0:
            raise ValueError(f'tfds does not know the size of split {split!r} '
                             f'of dataset {self.name!r}')
        return cardinality

    def read(self, split: str) -> tf.data.Dataset:
        return self._as_dataset(split)

    def read_range(self, split: str, start: int, end: int) -> tf.data.Dataset:
        ranges = self._absolute_ranges(split)
        if ranges is None:
            # Without split sizes tfds cannot slice; reading past the first
            # `start` records is correct, only slower.
            dataset = self._as_dataset(split)
            if (start, end) == (0, int(dataset.cardinality())):
                return dataset
            return dataset.skip(start).take(end - start)
        parts, offset = [], 0
        for name, part_start, part_end in ranges:
            low = max(start, offset)
            high = min(end, offset + part_end - part_start)
            if low < high:
                parts.append(f'{name}[{part_start + low - offset}:'
                             f'{part_start + high - offset}]')
            offset += part_end - part_start
        if not parts:
            return self._as_dataset(split).take(0)
        return self._as_dataset('+'.join(parts))


def open_source(dataset, spec: DatasetSpec,
                data_dir: str | None = None) -> RecordSource:
    """The records of `dataset`.

    Args:
        dataset: a key of DATASETS (tfds builder or image folder, per its
            spec.source), a tfds DatasetBuilder, or a RecordSource.
        spec: the data set's spec.
        data_dir: tfds data directory / image folder parent; None means
            TFDS_DATA_DIR or ~/tensorflow_datasets.
    """
    if isinstance(dataset, str):
        named_spec = sources.get_spec(dataset)
        if named_spec.source == 'image_folder':
            return image_folder.open_image_folder(dataset, named_spec, data_dir)
        return TfdsSource(tfds.builder(named_spec.tfds_name,
                                       data_dir=data_dir), dataset)
    if isinstance(dataset, tfds.core.DatasetBuilder):
        return TfdsSource(dataset, dataset.name)
    del spec  # A RecordSource already knows where its records are.
    return dataset


def split_size(dataset, split: str, *, spec: DatasetSpec,
               data_dir: str | None = None) -> int:
    """Examples in `split` (e.g. for steps_per_epoch(split_size, batch))."""
    return open_source(dataset, spec, data_dir).num_examples(split)


def _window_shuffle(records: tf.data.Dataset, window_size: int,
                    seed: tf.Tensor) -> tf.data.Dataset:
    """Permutes each run of `window_size` records, window w by (seed, w)."""
    def shuffle_window(window_index, window):
        size = tf.shape(window['label'], out_type=tf.int64)[0]
        permutation = tf.random.experimental.stateless_shuffle(
            tf.range(size),
            seed=tf.random.experimental.stateless_fold_in(seed, window_index))
        return {key: tf.gather(value, permutation)
                for key, value in window.items()}

    windows = records.batch(window_size).enumerate()
    return windows.map(shuffle_window).unbatch()


def _chunk_bounds(host_examples: int, process_index: int,
                  num_chunks: int) -> list[int]:
    host_start = process_index * host_examples
    return [host_start + (i * host_examples) // num_chunks
            for i in range(num_chunks + 1)]


def streaming_train_dataset(dataset, split: str, *, spec: DatasetSpec,
                            augmentation: str, global_batch_size: int,
                            seed: int, start_step: int, num_steps: int,
                            data_dir: str | None = None,
                            process_index: int = 0, process_count: int = 1,
                            image_size: int | None = None,
                            randaugment_num_layers: int = 2,
                            randaugment_magnitude: float = 9,
                            shuffle_window: int = DEFAULT_SHUFFLE_WINDOW,
                            num_chunks: int | None = None) -> tf.data.Dataset:
    """This process's training batches for steps start_step .. num_steps-1.

    Args:
        dataset: a key of DATASETS, a tfds DatasetBuilder or a RecordSource.
        split: tfds-style split string, e.g. 'train', 'train[:90%]'.
        spec: the data set (normalisation, flip, AutoAugment policy).
        augmentation: one of imagenet_preprocessing.STREAMING_AUGMENTATIONS
            ('none', 'basic', 'autoaugment', 'randaugment').
        global_batch_size: examples per step over all processes.
        seed: run seed; with the step it fixes every batch bit for bit.
        start_step: first step to produce (e.g. the restored checkpoint step).
        num_steps: total steps of the run (exclusive end).
        data_dir: tfds data directory / image folder parent.
        process_index: this host's index.
        process_count: number of hosts; host k reads its own 1/P of the
            split and yields its global_batch_size / P slice of each step.
        image_size: output side; None means spec.image_shape[0] (224).
        randaugment_num_layers: N of 'randaugment'.
        randaugment_magnitude: M of 'randaugment'.
        shuffle_window: examples per shuffle window.
        num_chunks: pieces of this host's share read in a seeded order each
            epoch; None means N / P / 2048, between 1 and 32.

    Returns:
        A dataset of exactly num_steps - start_step elements
        {'image': float32 [B_local, S, S, 3], 'label': int32 [B_local]}.
    """
    if augmentation not in imagenet_preprocessing.STREAMING_AUGMENTATIONS:
        raise ValueError(
            f'augmentation {augmentation!r} is not available for streamed '
            f'data sets; allowed: '
            f'{", ".join(imagenet_preprocessing.STREAMING_AUGMENTATIONS)}')
    if not 0 <= start_step <= num_steps:
        raise ValueError(f'start step {start_step} is outside '
                         f'[0, num_steps={num_steps}]')
    local_batch_size = pipeline._local_batch_size(
        global_batch_size, process_index, process_count)
    source = open_source(dataset, spec, data_dir)
    num_examples = source.num_examples(split)
    # Equal shares keep every host at the same steps per epoch, N // G.
    host_examples = num_examples // process_count
    epoch_steps = pipeline.steps_per_epoch(host_examples * process_count,
                                           global_batch_size)
    if num_chunks is None:
        num_chunks = min(_MAX_CHUNKS, host_examples // _MIN_CHUNK_EXAMPLES)
    num_chunks = max(1, min(num_chunks, host_examples))
    bounds = _chunk_bounds(host_examples, process_index, num_chunks)
    chunks = [source.read_range(split, bounds[i], bounds[i + 1])
              for i in range(num_chunks)]
    for chunk, start, end in zip(chunks, bounds[:-1], bounds[1:]):
        cardinality = int(chunk.cardinality())
        if cardinality >= 0 and cardinality != end - start:
            raise ValueError(f'examples [{start}, {end}) of split {split!r} '
                             f'read as {cardinality} records')
    chunk_sizes = tf.constant(np.diff(bounds), tf.int64)
    order_key = tf.constant([seed, pipeline._SHUFFLE_STREAM], tf.int64)
    host_offset = process_index * local_batch_size

    def records_of_epoch(epoch):
        epoch_seed = tf.random.experimental.stateless_fold_in(order_key, epoch)
        chunk_order_seed, window_seed = tf.unstack(
            tf.random.experimental.stateless_split(epoch_seed, num=2))
        if num_chunks == 1:
            records = chunks[0]
        else:
            chunk_order = tf.random.experimental.stateless_shuffle(
                tf.range(num_chunks, dtype=tf.int64), seed=chunk_order_seed)
            # Chunk id of every record, taking one record from each of
            # _CHUNK_CYCLE chunks in turn.
            chunk_of_record = tf.data.Dataset.from_tensor_slices(
                chunk_order).interleave(
                    lambda chunk: tf.data.Dataset.from_tensors(chunk).repeat(
                        tf.gather(chunk_sizes, chunk)),
                    cycle_length=min(num_chunks, _CHUNK_CYCLE),
                    block_length=1)
            records = tf.data.Dataset.choose_from_datasets(chunks,
                                                           chunk_of_record)
        records = _window_shuffle(records, shuffle_window, window_seed)
        epoch_start_step = epoch * epoch_steps
        first_step = tf.maximum(tf.constant(start_step, tf.int64),
                                epoch_start_step)
        end_step = tf.minimum(tf.constant(num_steps, tf.int64),
                              epoch_start_step + epoch_steps)
        first = (first_step - epoch_start_step) * local_batch_size
        end = (end_step - epoch_start_step) * local_batch_size
        # Skipped records are read but never decoded.
        records = records.skip(first).take(end - first)
        index_in_epoch = tf.data.Dataset.range(first, end)
        global_position = index_in_epoch.map(
            lambda index: ((epoch_start_step + index // local_batch_size)
                           * global_batch_size + host_offset
                           + index % local_batch_size))
        return tf.data.Dataset.zip((records, global_position))

    def load_example(record, global_position):
        image = imagenet_preprocessing.preprocess_for_training(
            record['image'],
            pipeline._example_seed(seed, global_position),
            spec=spec, augmentation=augmentation, image_size=image_size,
            randaugment_num_layers=randaugment_num_layers,
            randaugment_magnitude=randaugment_magnitude)
        return {'image': image, 'label': record['label']}

    first_epoch = start_step // epoch_steps
    end_epoch = -(-num_steps // epoch_steps)
    epochs = tf.data.Dataset.range(first_epoch, max(first_epoch, end_epoch))
    batches = epochs.flat_map(records_of_epoch).map(
        load_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    batches = batches.batch(local_batch_size, drop_remainder=True)
    options = tf.data.Options()
    options.deterministic = True
    return batches.with_options(options).prefetch(tf.data.AUTOTUNE)


def streaming_eval_batches(dataset, split: str, *, spec: DatasetSpec,
                           global_batch_size: int,
                           data_dir: str | None = None,
                           process_index: int = 0, process_count: int = 1,
                           image_size: int | None = None
                           ) -> Iterator[dict[str, np.ndarray]]:
    """Every example once, in order, in batches of one fixed shape.

    As `pipeline.eval_batches`: global batch b holds examples
    [b * G, (b + 1) * G), host k its slice [b * G + k * B, b * G + (k + 1) *
    B); the last batches are padded with zero images, label 0 and mask 0.
    Every host reads the whole split but decodes only its own examples.

    Args:
        dataset: a key of DATASETS, a tfds DatasetBuilder or a RecordSource.
        split: tfds-style split string.
        spec: the data set (normalisation).
        global_batch_size: examples per batch over all processes.
        data_dir: tfds data directory / image folder parent.
        process_index: this host's index.
        process_count: number of hosts.
        image_size: output side; None means spec.image_shape[0].

    Yields:
        {'image': float32 [B_local, S, S, 3] (centre crop), 'label': int32
        [B_local], 'mask': float32 [B_local]}, for
        num_eval_batches(N, global_batch_size) batches.
    """
    local_batch_size = pipeline._local_batch_size(
        global_batch_size, process_index, process_count)
    image_size = image_size or spec.image_shape[0]
    source = open_source(dataset, spec, data_dir)
    num_examples = source.num_examples(split)

    def on_this_host(index, record):
        del record
        return ((index % global_batch_size) // local_batch_size
                == process_index)

    def load_example(index, record):
        del index
        return {'image': imagenet_preprocessing.preprocess_for_eval(
                    record['image'], spec=spec, image_size=image_size),
                'label': record['label']}

    examples = source.read(split).enumerate().filter(on_this_host).map(
        load_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    host_batches = examples.batch(local_batch_size).prefetch(
        tf.data.AUTOTUNE).as_numpy_iterator()
    image_shape = (local_batch_size, image_size, image_size, 3)
    for _ in range(pipeline.num_eval_batches(num_examples, global_batch_size)):
        image = np.zeros(image_shape, np.float32)
        label = np.zeros((local_batch_size,), np.int32)
        mask = np.zeros((local_batch_size,), np.float32)
        batch = next(host_batches, None)
        if batch is not None:
            num_real = batch['label'].shape[0]
            image[:num_real] = batch['image']
            label[:num_real] = batch['label']
            mask[:num_real] = 1.0
        yield {'image': image, 'label': label, 'mask': mask}
