"""Training and evaluation batches computed on the device, from arrays.

The JAX twin of `pipeline.py` for in-memory data sets: the whole split
lives on the device as uint8 and a batch is gathered and augmented inside
jit, with no host input pipeline and no TensorFlow.

The same contract as pipeline.py: training batch `step` is a pure function
of (seed, step). With N examples and global batch G, an epoch has
steps_per_epoch = N // G steps (the remainder is dropped every epoch);
step s belongs to epoch e = s // steps_per_epoch and holds examples
permutation_e[(s % steps_per_epoch) * G + j] for j in [0, G), where
permutation_e = epoch_permutation(seed, e, N). Example j of step s is
augmented with a key folded from (seed, p = s * G + j), its global position
in the run, so a batch's content does not depend on how it is cut into
per-device or per-host slices. Positions are folded in as uint32: they
wrap after 2**32 examples of a run (e.g. 85,000 CIFAR epochs).

The permutations and keys come from jax.random (threefry), so they are the
same on CPU, GPU and TPU, but not the same as pipeline.py's (TensorFlow's
generators): the two pipelines serve different batches for one seed.
"""

from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from sam_jax.data import device_augment

# Fold-in values of the two random streams derived from the run seed, so
# epoch shuffles and augmentations never share a key (as pipeline.py).
_SHUFFLE_STREAM = 0
_AUGMENT_STREAM = 1

# Arguments of `train_batch` / `eval_batch` that fix shapes or code: pass
# them as static under jit (`jax.jit(train_batch, static_argnames=...)`).
TRAIN_BATCH_STATIC_ARGNAMES = ('global_batch_size', 'count', 'spec',
                               'augmentation')
EVAL_BATCH_STATIC_ARGNAMES = ('global_batch_size', 'count', 'spec')


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
    """Full batches per epoch; the remainder is dropped every epoch."""
    steps = num_examples // global_batch_size
    if steps == 0:
        raise ValueError(f'global batch size {global_batch_size} is larger '
                         f'than the dataset ({num_examples} examples)')
    return steps


def epoch_of_step(step: int, num_examples: int, global_batch_size: int) -> int:
    """The epoch whose permutation `train_batch` needs at `step`."""
    return step // steps_per_epoch(num_examples, global_batch_size)


def epoch_permutation(seed, epoch, num_examples: int) -> jax.Array:
    """Example order of `epoch`: int32 [num_examples], pure in (seed, epoch).

    seed and epoch may be Python ints or traced int32 scalars.
    """
    key = jax.random.fold_in(
        jax.random.fold_in(jax.random.key(seed), _SHUFFLE_STREAM), epoch)
    return jax.random.permutation(key, num_examples).astype(jnp.int32)


def _positions_in_batch(first, count: int) -> jax.Array:
    return jnp.asarray(first, jnp.int32) + jnp.arange(count, dtype=jnp.int32)


def batch_indices(permutation: jax.Array, step, *, global_batch_size: int,
                  first, count: int) -> jax.Array:
    """Indices of examples [first, first + count) of global batch `step`.

    Args:
        permutation: epoch_permutation(seed, epoch_of_step(step, N, G), N).
        step: the training step (int or traced int32 scalar).
        global_batch_size: G, examples per step over all devices.
        first: position of the slice in the global batch (may be traced,
            e.g. axis_index * per_device_batch under shard_map).
        count: slice length (static).

    Returns:
        int32 [count] indices into the training arrays.
    """
    epoch_steps = steps_per_epoch(permutation.shape[0], global_batch_size)
    start = ((jnp.asarray(step, jnp.int32) % epoch_steps) * global_batch_size
             + jnp.asarray(first, jnp.int32))
    return jax.lax.dynamic_slice(permutation, (start,), (count,))


def example_keys(seed, step, *, global_batch_size: int, first,
                 count: int) -> jax.Array:
    """Augmentation keys [count] of examples [first, first + count) of `step`.

    The key of an example is folded from (seed, its global position
    step * G + j), taken modulo 2**32.
    """
    positions = (jnp.asarray(step).astype(jnp.uint32)
                 * jnp.uint32(global_batch_size)
                 + _positions_in_batch(first, count).astype(jnp.uint32))
    stream = jax.random.fold_in(jax.random.key(seed), _AUGMENT_STREAM)
    return jax.vmap(lambda p: jax.random.fold_in(stream, p))(positions)


def train_batch(images: jax.Array, labels: jax.Array, permutation: jax.Array,
                step, *, seed, global_batch_size: int, first, count: int,
                spec, augmentation: str) -> dict[str, jax.Array]:
    """Examples [first, first + count) of training batch `step`, augmented.

    Jittable with TRAIN_BATCH_STATIC_ARGNAMES static; seed, step and first
    may be traced.

    Args:
        images: uint8 [N, H, W, C], the whole training split (on device).
        labels: int [N].
        permutation: epoch_permutation(seed, epoch_of_step(step, N, G), N);
            the caller recomputes it when the epoch changes.
        step: the training step.
        seed: the run seed.
        global_batch_size: G.
        first: this slice's offset in the global batch.
        count: this slice's length (e.g. the per-device batch).
        spec: the data set (DatasetSpec or anything with its attributes).
        augmentation: 'none', 'basic' or 'cutout'.

    Returns:
        {'image': float32 [count, H, W, C], 'label': int32 [count],
        'index': int32 [count], each example's index in the training arrays}.
    """
    if images.shape[0] != labels.shape[0] or (
            permutation.shape[0] != images.shape[0]):
        raise ValueError(f'{images.shape[0]} images, {labels.shape[0]} '
                         f'labels and a permutation of '
                         f'{permutation.shape[0]}: they must be equal')
    indices = batch_indices(permutation, step,
                            global_batch_size=global_batch_size, first=first,
                            count=count)
    keys = example_keys(seed, step, global_batch_size=global_batch_size,
                        first=first, count=count)
    return {
        'image': device_augment.augment_batch(jnp.take(images, indices, axis=0),
                                              keys, spec, augmentation),
        'label': jnp.take(labels, indices, axis=0).astype(jnp.int32),
        'index': indices,
    }


def num_eval_batches(num_examples: int, global_batch_size: int) -> int:
    """Batches of an evaluation: every example once, the last padded."""
    return -(-num_examples // global_batch_size)


def pad_eval_set(images: np.ndarray, labels: np.ndarray,
                 global_batch_size: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The eval set padded to a multiple of the batch, with its 0/1 mask.

    Returns:
        (uint8 images [M, H, W, C], int32 labels [M], float32 mask [M]) with
        M = num_eval_batches(N, G) * G; padding has zero images, label 0,
        mask 0. Put them on the device once; `eval_batch` slices them.
    """
    num_examples = images.shape[0]
    if labels.shape[0] != num_examples:
        raise ValueError(f'{num_examples} images but {labels.shape[0]} '
                         f'labels')
    padding = (num_eval_batches(num_examples, global_batch_size)
               * global_batch_size - num_examples)
    mask = np.concatenate([np.ones(num_examples, np.float32),
                           np.zeros(padding, np.float32)])
    return (np.concatenate([images, np.zeros((padding, *images.shape[1:]),
                                             images.dtype)]),
            np.concatenate([labels.astype(np.int32),
                            np.zeros(padding, np.int32)]),
            mask)


def eval_batch(padded_images: jax.Array, padded_labels: jax.Array,
               mask: jax.Array, batch, *, global_batch_size: int, first,
               count: int, spec) -> dict[str, jax.Array]:
    """Examples [first, first + count) of evaluation batch `batch`.

    Jittable with EVAL_BATCH_STATIC_ARGNAMES static; batch and first may be
    traced. The contract of pipeline.eval_batches: padded examples have a
    zero (normalised) image, label 0 and mask 0; weight metrics by mask.

    Args:
        padded_images, padded_labels, mask: from `pad_eval_set`.
        batch: index in [0, num_eval_batches(N, G)).

    Returns:
        {'image': float32 [count, H, W, C], 'label': int32 [count],
        'mask': float32 [count]}.
    """
    start = (jnp.asarray(batch, jnp.int32) * global_batch_size
             + jnp.asarray(first, jnp.int32))

    def take(array):
        return jax.lax.dynamic_slice_in_dim(array, start, count, axis=0)

    batch_mask = take(mask)
    image = device_augment.preprocess_for_eval(take(padded_images), spec)
    # Padding is a zero normalised image, as in pipeline.eval_batches.
    image = jnp.where(batch_mask[:, None, None, None] > 0, image, 0.0)
    return {'image': image, 'label': take(padded_labels), 'mask': batch_mask}


def eval_batches(images: np.ndarray, labels: np.ndarray, *, spec,
                 global_batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict[str, jax.Array]]:
    """Drop-in for pipeline.eval_batches, computed by JAX (device arrays).

    Yields num_eval_batches(N, G) batches of this process's contiguous
    G // process_count slice: {'image', 'label', 'mask'} as `eval_batch`.
    """
    if global_batch_size % process_count:
        raise ValueError(f'global batch size {global_batch_size} is not '
                         f'divisible by the process count {process_count}')
    count = global_batch_size // process_count
    padded = [jnp.asarray(a) for a in pad_eval_set(images, labels,
                                                   global_batch_size)]
    step = jax.jit(eval_batch, static_argnames=EVAL_BATCH_STATIC_ARGNAMES)
    for batch in range(num_eval_batches(images.shape[0], global_batch_size)):
        yield step(*padded, batch, global_batch_size=global_batch_size,
                   first=process_index * count, count=count, spec=spec)
