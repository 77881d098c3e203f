"""Deterministic, resumable training batches and padded evaluation batches.

Design constraint: the content of training batch `step` (which examples, and
their augmentation randomness) is a pure function of (seed, step), never of
iterator state. A run restarted from a checkpoint at step s therefore sees
bit-identical batches from s on, and starting at s costs nothing: batches
are computed for s directly, not produced and skipped.

Layout: global example position p = step * global_batch_size + j maps to
epoch e = step // steps_per_epoch and example permutation_e[(step % spe) *
global_batch_size + j]; process k takes j in [k * B_local, (k + 1) * B_local).
"""

from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from sam_jax.data.augment import augment_for_training, preprocess_for_eval, resize
# The batch counts are the device pipeline's: both paths step through the same
# epochs and evaluate the same batches.
from sam_jax.data.device_pipeline import num_eval_batches, steps_per_epoch
from sam_jax.data.specs import DatasetSpec

# Second seed word of the two independent random streams derived from the
# run seed, so epoch shuffles and augmentations never share a seed.
_SHUFFLE_STREAM = 0
_AUGMENT_STREAM = 1


def _local_batch_size(global_batch_size: int, process_index: int,
                      process_count: int) -> int:
    if global_batch_size % process_count:
        raise ValueError(f'global batch size {global_batch_size} is not '
                         f'divisible by the process count {process_count}')
    if not 0 <= process_index < process_count:
        raise ValueError(f'process index {process_index} is outside '
                         f'[0, {process_count})')
    return global_batch_size // process_count


def _epoch_permutation(num_examples: int, seed: int,
                       epoch: tf.Tensor) -> tf.Tensor:
    """Example order of `epoch`: a stateless function of (seed, epoch)."""
    epoch_seed = tf.random.experimental.stateless_fold_in(
        tf.constant([seed, _SHUFFLE_STREAM], tf.int64), epoch)
    return tf.random.experimental.stateless_shuffle(
        tf.range(num_examples, dtype=tf.int64), seed=epoch_seed)


def _example_seed(seed: int, global_position: tf.Tensor) -> tf.Tensor:
    """Augmentation seed of the example at a global position in the run."""
    return tf.random.experimental.stateless_fold_in(
        tf.constant([seed, _AUGMENT_STREAM], tf.int64), global_position)


def train_dataset(images: np.ndarray, labels: np.ndarray, *,
                  spec: DatasetSpec, augmentation: str,
                  global_batch_size: int, seed: int, start_step: int,
                  num_steps: int, process_index: int = 0,
                  process_count: int = 1,
                  image_size: int | None = None,
                  randaugment_num_layers: int = 2,
                  randaugment_magnitude: float = 9) -> tf.data.Dataset:
    """This process's training batches for steps start_step .. num_steps-1.

    Args:
        images: uint8 [N, H, W, C], the whole training split.
        labels: int [N].
        spec: the data set (normalisation, flip, crop padding).
        augmentation: a key of `augment.TRAINING_AUGMENTATIONS`.
        global_batch_size: examples per step over all processes.
        seed: run seed; with the step it fixes every batch bit for bit.
        start_step: first step to produce (e.g. the restored checkpoint step).
        num_steps: total steps of the run (exclusive end).
        process_index: this host's index.
        process_count: number of hosts; each gets a contiguous
            global_batch_size // process_count slice of every global batch.
        image_size: side of the output images (see `resize`); None keeps
            the data set's own.
        randaugment_num_layers: N of 'randaugment' (config.randaugment).
        randaugment_magnitude: M of 'randaugment'.

    Returns:
        A dataset of exactly num_steps - start_step elements
        {'image': float32 [B_local, H, W, C], 'label': int32 [B_local],
        'index': int32 [B_local], each example's index in `images`}.
    """
    num_examples = images.shape[0]
    if labels.shape[0] != num_examples:
        raise ValueError(f'{num_examples} images but {labels.shape[0]} '
                         f'labels')
    if not 0 <= start_step <= num_steps:
        raise ValueError(f'start step {start_step} is outside '
                         f'[0, num_steps={num_steps}]')
    epoch_steps = steps_per_epoch(num_examples, global_batch_size)
    local_batch_size = _local_batch_size(global_batch_size, process_index,
                                         process_count)
    # Position of this host's examples within each global batch.
    host_offsets = (process_index * local_batch_size
                    + tf.range(local_batch_size, dtype=tf.int64))
    # Whole split in memory: examples are gathered by index, no file order.
    all_images = tf.constant(images, tf.uint8)
    all_labels = tf.constant(labels, tf.int32)

    def examples_of_epoch(epoch):
        permutation = _epoch_permutation(num_examples, seed, epoch)
        first_step = tf.maximum(tf.constant(start_step, tf.int64),
                                epoch * epoch_steps)
        end_step = tf.minimum(tf.constant(num_steps, tf.int64),
                              (epoch + 1) * epoch_steps)
        steps = tf.range(first_step, end_step, dtype=tf.int64)[:, tf.newaxis]
        index_in_epoch = ((steps - epoch * epoch_steps) * global_batch_size
                          + host_offsets)
        global_position = steps * global_batch_size + host_offsets
        return tf.data.Dataset.from_tensor_slices(
            (tf.reshape(tf.gather(permutation, index_in_epoch), [-1]),
             tf.reshape(global_position, [-1])))

    def load_example(example_index, global_position):
        image = augment_for_training(
            tf.gather(all_images, example_index),
            _example_seed(seed, global_position),
            spec=spec, augmentation=augmentation,
            randaugment_num_layers=randaugment_num_layers,
            randaugment_magnitude=randaugment_magnitude)
        return {'image': resize(image, image_size),
                'label': tf.gather(all_labels, example_index),
                'index': tf.cast(example_index, tf.int32)}

    first_epoch = start_step // epoch_steps
    end_epoch = -(-num_steps // epoch_steps)
    dataset = tf.data.Dataset.range(first_epoch, max(first_epoch, end_epoch))
    dataset = dataset.flat_map(examples_of_epoch)
    dataset = dataset.map(load_example, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=True)
    dataset = dataset.batch(local_batch_size, drop_remainder=True)
    options = tf.data.Options()
    options.deterministic = True
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def eval_batches(images: np.ndarray, labels: np.ndarray, *,
                 spec: DatasetSpec, global_batch_size: int,
                 process_index: int = 0, process_count: int = 1,
                 image_size: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Every example once, in order, in batches of one fixed shape.

    The last global batch is padded with zero images, label 0 and mask 0, so
    a jitted eval step compiles once. Weight metrics by `mask`.

    Args:
        images: uint8 [N, H, W, C].
        labels: int [N].
        spec: the data set (normalisation statistics).
        global_batch_size: examples per batch over all processes.
        process_index: this host's index.
        process_count: number of hosts; each gets a contiguous
            global_batch_size // process_count slice of every global batch.
        image_size: side of the output images (see `resize`); None keeps
            the data set's own.

    Yields:
        {'image': float32 [B_local, H, W, C] normalised, 'label': int32
        [B_local], 'mask': float32 [B_local], 1 for real examples}, for
        num_eval_batches(N, global_batch_size) batches.
    """
    num_examples = images.shape[0]
    local_batch_size = _local_batch_size(global_batch_size, process_index,
                                         process_count)
    height, width, channels = images.shape[1:]
    if image_size is not None:
        height = width = image_size
    for batch in range(num_eval_batches(num_examples, global_batch_size)):
        start = batch * global_batch_size + process_index * local_batch_size
        num_real = min(max(num_examples - start, 0), local_batch_size)
        image = np.zeros((local_batch_size, height, width, channels), np.float32)
        label = np.zeros((local_batch_size,), np.int32)
        mask = np.zeros((local_batch_size,), np.float32)
        if num_real:
            image[:num_real] = resize(tf.constant(preprocess_for_eval(
                images[start:start + num_real], spec)), image_size).numpy()
            label[:num_real] = labels[start:start + num_real]
            mask[:num_real] = 1.0
        yield {'image': image, 'label': label, 'mask': mask}


def as_numpy_iterator(dataset: tf.data.Dataset) -> Iterator[dict]:
    """Iterates a tf.data dataset as numpy dicts (what JAX consumes)."""
    return dataset.as_numpy_iterator()
