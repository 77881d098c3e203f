"""In-memory data that lives on the devices: batches gathered and augmented in JAX.

For the small data sets (digits, Fashion-MNIST, CIFAR, SVHN) and the
augmentations 'none', 'basic' and 'cutout'. The whole training split (uint8)
and the padded evaluation split are put on every device once; each training
step's batch is computed on the devices by a jitted shard_map: each device
gathers and augments its own slice of the global batch (device_pipeline.py),
as a pure function of (seed, step). No TensorFlow, no host round trip.

Multi-host: every host holds the whole split (these data sets fit easily)
and its devices compute their slices of the global batch; a batch is the same
whatever the process and device layout.
"""

from typing import Iterator, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from sam_jax.data import device_augment
from sam_jax.data import device_pipeline
from sam_jax.data.specs import DatasetSpec


def resize(images: jax.Array, image_size: Optional[int]) -> jax.Array:
    """Bicubic resize of [B, H, W, C] to image_size x image_size (None: as is).

    Finetuning at a model's resolution on small images (CIFAR at
    EfficientNet's). Applied after augmentation and normalisation, as the
    tf.data path does (resizing is linear, so it commutes with normalising).
    """
    if image_size is None or tuple(images.shape[1:3]) == (image_size, image_size):
        return images
    return jax.image.resize(
        images, (images.shape[0], image_size, image_size, images.shape[3]), "bicubic")


class DeviceInputs:
    """Training and evaluation batches of an in-memory data set, on the mesh."""

    def __init__(self, *, spec: DatasetSpec, train_images: np.ndarray,
                 train_labels: np.ndarray, eval_images: np.ndarray,
                 eval_labels: np.ndarray, augmentation: str, seed: int,
                 batch_size: int, eval_batch_size: int, mesh, axis: str,
                 image_size: Optional[int] = None):
        if augmentation not in device_augment.AUGMENTATIONS:
            raise ValueError(f"augmentation {augmentation!r} has no device path; "
                             f"allowed: {', '.join(device_augment.AUGMENTATIONS)}")
        self.spec, self.seed, self.mesh = spec, seed, mesh
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_train_examples = len(train_labels)
        self.num_eval_examples = len(eval_labels)
        self.steps_per_epoch = device_pipeline.steps_per_epoch(
            self.num_train_examples, batch_size)
        replicated = NamedSharding(mesh, P())
        self._train = (jax.device_put(np.asarray(train_images, np.uint8), replicated),
                       jax.device_put(np.asarray(train_labels, np.int32), replicated))
        self._replicated = replicated
        self._eval = self._padded(eval_images, eval_labels)
        per_device = batch_size // mesh.size
        per_device_eval = eval_batch_size // mesh.size

        def train_slice(images, labels, permutation, step):
            batch = device_pipeline.train_batch(
                images, labels, permutation, step, seed=seed,
                global_batch_size=batch_size, first=jax.lax.axis_index(axis) * per_device,
                count=per_device, spec=spec, augmentation=augmentation)
            batch["image"] = resize(batch["image"], image_size)
            return batch

        def eval_slice(images, labels, mask, index):
            batch = device_pipeline.eval_batch(
                images, labels, mask, index, global_batch_size=eval_batch_size,
                first=jax.lax.axis_index(axis) * per_device_eval,
                count=per_device_eval, spec=spec)
            batch["image"] = resize(batch["image"], image_size)
            return batch

        self._train_batch = jax.jit(jax.shard_map(
            train_slice, mesh=mesh, in_specs=(P(), P(), P(), P()), out_specs=P(axis)))
        self._eval_batch = jax.jit(jax.shard_map(
            eval_slice, mesh=mesh, in_specs=(P(), P(), P(), P()), out_specs=P(axis)))
        self._permutation = jax.jit(device_pipeline.epoch_permutation,
                                    static_argnums=2, out_shardings=replicated)
        self._epoch, self._epoch_permutation = None, None

    def permutation(self, epoch: int) -> jax.Array:
        """The example order of `epoch` (computed on the devices, kept per epoch)."""
        if epoch != self._epoch:
            self._epoch_permutation = self._permutation(
                self.seed, epoch, self.num_train_examples)
            self._epoch = epoch
        return self._epoch_permutation

    def train_batch(self, step: int) -> dict:
        """The global training batch of `step`, sharded over the batch axis."""
        permutation = self.permutation(step // self.steps_per_epoch)
        return self._train_batch(*self._train, permutation, jnp.int32(step))

    def train_batches(self, start: int, stop: int) -> Iterator[dict]:
        for step in range(start, stop):
            yield self.train_batch(step)

    def _padded(self, images, labels) -> tuple:
        return tuple(jax.device_put(a, self._replicated) for a in
                     device_pipeline.pad_eval_set(images, labels, self.eval_batch_size))

    def _batches(self, padded: tuple, num_examples: int) -> Iterator[dict]:
        for index in range(device_pipeline.num_eval_batches(num_examples,
                                                            self.eval_batch_size)):
            yield self._eval_batch(*padded, jnp.int32(index))

    def eval_batches(self) -> Iterator[dict]:
        """Every evaluation example once, padded and masked."""
        return self._batches(self._eval, self.num_eval_examples)

    def batches_of(self, images: np.ndarray, labels: np.ndarray) -> Iterator[dict]:
        """Another set's evaluation batches (uint8 images as stored, labels),
        preprocessed as the evaluation split is; put on the devices on call."""
        return self._batches(self._padded(images, labels), len(labels))

    def training_examples(self, count: int, image_size: Optional[int] = None
                          ) -> tuple[np.ndarray, np.ndarray]:
        """The first `count` training examples, normalised, not augmented."""
        images = device_augment.preprocess_for_eval(self._train[0][:count], self.spec)
        return (np.asarray(resize(images, image_size)),
                np.asarray(self._train[1][:count]))
