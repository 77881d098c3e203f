"""A run's inputs, whichever pipeline serves them: global batches on the mesh.

- In-memory data sets (digits, Fashion-MNIST, CIFAR, SVHN) with the
  augmentations 'none', 'basic' and 'cutout' live on the devices
  (device_inputs.py): no TensorFlow on this path when the arrays come from
  scikit-learn or the Fashion-MNIST IDX files (arrays.py).
- In-memory data sets with AutoAugment / RandAugment go through tf.data
  (pipeline.py), and the large or irregular ones (ImageNet, the finetuning
  sets) are streamed (streaming.py); TensorFlow is imported on these paths only.
Every path gives batches that are pure functions of (seed, step), as global
jax.Arrays sharded over the mesh's batch axis. Nothing here writes anything.
"""

import dataclasses
import functools
from typing import Callable, Iterator, Optional

import jax
import numpy as np

from sam_jax import parallel
from sam_jax.data import arrays
from sam_jax.data import device_augment
from sam_jax.data.label_noise import symmetric_label_noise
from sam_jax.data.specs import DatasetSpec, get_spec, train_and_eval_splits
from sam_jax.errors import BadInputError

PIPELINES = ("device", "tf.data", "streaming")


@dataclasses.dataclass
class RunInputs:
    spec: DatasetSpec
    pipeline: str  # one of PIPELINES
    image_shape: tuple
    num_train_examples: int
    num_eval_examples: int
    # (start_step, stop_step) -> the global training batches of those steps.
    train_batches: Callable[[int, int], Iterator[dict]]
    # () -> the padded evaluation batches, every example once.
    eval_batches: Callable[[], Iterator[dict]]
    # Label noise (in-memory data sets): which training examples changed, and
    # their new labels; None without noise.
    corrupted: Optional[np.ndarray] = None
    noisy_labels: Optional[np.ndarray] = None
    # n -> the first n training examples, normalised, not augmented, with the
    # run's labels (for sharpness measurements); in-memory data sets only.
    training_examples: Optional[Callable[[int], tuple[np.ndarray, np.ndarray]]] = None
    # Sets evaluated once, at the end, after the evaluation split: name -> ()
    # -> its padded batches (config.validation_examples: "validation";
    # config.evaluate_training_set: "train", "train_corrupted",
    # "train_uncorrupted"). Empty for most runs.
    final_eval_sets: dict = dataclasses.field(default_factory=dict)
    # Whether a training batch carries "index", each example's index in the
    # training set (in-memory data sets; SAF records outputs by it).
    example_indices: bool = False


def in_memory_arrays(config, spec: DatasetSpec):
    """((train images, train labels with the run's noise), (eval images, eval
    labels), corrupted mask): the whole splits, as numpy.

    digits and Fashion-MNIST come from arrays.py (no TensorFlow); CIFAR and SVHN
    from their prepared tfds builders. With config.train_subset, the first N
    examples of the training split stand for it (and the validation split, if
    asked for, is their last 10%).
    """
    subset = config.train_subset
    if subset is not None:
        train_split, test_split = spec.train_split, spec.test_split
    else:
        train_split, test_split = train_and_eval_splits(spec, config.validation_split)
    train_images, train_labels = _load(config, spec, train_split)
    held_out = config.validation_examples or 0
    if held_out:
        trained = len(train_labels) - held_out if subset is None else subset
        if trained <= 0 or trained + held_out > len(train_labels):
            raise BadInputError(
                f"validation_examples={held_out} and train_subset={subset} need "
                f"{max(trained, 1) + held_out} examples; the training split of "
                f"{config.dataset!r} has {len(train_labels)}")
        # The split's last examples: disjoint from any train_subset.
        config_validation = (train_images[-held_out:], train_labels[-held_out:])
        train_images, train_labels = train_images[:-held_out], train_labels[:-held_out]
    if subset is not None:
        if subset > len(train_labels):
            raise BadInputError(
                f"train_subset={subset} is larger than the training split of "
                f"{config.dataset!r} ({len(train_labels)} examples)")
        train_images, train_labels = train_images[:subset], train_labels[:subset]
        if config.validation_split:
            _, start, _ = arrays.resolve_split("train[90%:]", {"train": subset})
            eval_images, eval_labels = train_images[start:], train_labels[start:]
            train_images, train_labels = train_images[:start], train_labels[:start]
        else:
            eval_images, eval_labels = _load(config, spec, test_split)
    else:
        eval_images, eval_labels = _load(config, spec, test_split)
    train_labels, corrupted = symmetric_label_noise(
        train_labels, config.label_noise, spec.num_classes, seed=config.label_noise_seed)
    return ((train_images, train_labels), (eval_images, eval_labels), corrupted,
            config_validation if held_out else None)


def final_eval_arrays(config, train_images, train_labels, corrupted,
                      validation) -> dict:
    """name -> (images, labels) of the sets evaluated once at the end."""
    sets = {}
    if validation is not None:
        sets["validation"] = validation
    if config.evaluate_training_set:
        sets["train"] = (train_images, train_labels)
        if config.label_noise:
            sets["train_corrupted"] = (train_images[corrupted], train_labels[corrupted])
            sets["train_uncorrupted"] = (train_images[~corrupted],
                                         train_labels[~corrupted])
    return sets


def _load(config, spec: DatasetSpec, split: str):
    if config.dataset in arrays.ARRAY_DATASETS:
        return arrays.load_split_arrays(config.dataset, split, data_dir=config.data_dir)
    from sam_jax.data import sources  # tfds and TensorFlow
    return sources.load_split(config.dataset, split, config.data_dir)


def uses_device_pipeline(config) -> bool:
    spec = get_spec(config.dataset)
    return spec.in_memory and config.augmentation in device_augment.AUGMENTATIONS


def prepare_inputs(config, mesh, axis: str) -> RunInputs:
    """The run's inputs on `mesh` (its batch axis `axis`)."""
    spec = get_spec(config.dataset)
    if not spec.in_memory:
        return _streamed_inputs(config, spec, mesh, axis)
    (train_images, train_labels), (eval_images, eval_labels), corrupted, validation = (
        in_memory_arrays(config, spec))
    final_sets = final_eval_arrays(config, train_images, train_labels, corrupted,
                                   validation)
    image_size = config.image_size
    height, width, channels = spec.image_shape
    image_shape = ((image_size, image_size, channels) if image_size
                   else (height, width, channels))
    noise = dict(corrupted=corrupted if config.label_noise else None,
                 noisy_labels=train_labels[corrupted] if config.label_noise else None)
    if uses_device_pipeline(config):
        from sam_jax.data import device_inputs
        device = device_inputs.DeviceInputs(
            spec=spec, train_images=train_images, train_labels=train_labels,
            eval_images=eval_images, eval_labels=eval_labels,
            augmentation=config.augmentation, seed=config.seed,
            batch_size=config.batch_size, eval_batch_size=config.eval_batch_size,
            mesh=mesh, axis=axis, image_size=image_size)
        return RunInputs(
            spec=spec, pipeline="device", image_shape=image_shape, example_indices=True,
            num_train_examples=len(train_labels), num_eval_examples=len(eval_labels),
            train_batches=device.train_batches, eval_batches=device.eval_batches,
            training_examples=lambda n: device.training_examples(n, image_size),
            final_eval_sets={name: functools.partial(device.batches_of, *arrays)
                             for name, arrays in final_sets.items()},
            **noise)
    if final_sets:
        raise BadInputError(
            f"validation_examples and evaluate_training_set need the device input "
            f"pipeline (augmentation one of {', '.join(device_augment.AUGMENTATIONS)}), "
            f"not augmentation {config.augmentation!r}")
    return _tf_data_inputs(config, spec, mesh, axis, image_shape, train_images,
                           train_labels, eval_images, eval_labels, noise)


def _global(mesh, axis, local_batches):
    """This host's numpy batches -> global arrays sharded over `axis`."""
    return (parallel.global_batch(mesh, batch, axis) for batch in local_batches)


def _tf_data_inputs(config, spec, mesh, axis, image_shape, train_images, train_labels,
                    eval_images, eval_labels, noise) -> RunInputs:
    """In-memory data through tf.data (AutoAugment, RandAugment)."""
    import tensorflow as tf
    from sam_jax.data import pipeline
    from sam_jax.data.augment import preprocess_for_eval, resize
    common = dict(spec=spec, process_index=jax.process_index(),
                  process_count=jax.process_count())
    image_size = config.image_size
    return RunInputs(
        spec=spec, pipeline="tf.data", image_shape=image_shape, example_indices=True,
        num_train_examples=len(train_labels), num_eval_examples=len(eval_labels),
        train_batches=lambda start, stop: _global(mesh, axis, pipeline.train_dataset(
            train_images, train_labels, augmentation=config.augmentation,
            global_batch_size=config.batch_size, seed=config.seed,
            start_step=start, num_steps=stop, image_size=image_size,
            randaugment_num_layers=config.randaugment.num_layers,
            randaugment_magnitude=config.randaugment.magnitude,
            **common).as_numpy_iterator()),
        eval_batches=lambda: _global(mesh, axis, pipeline.eval_batches(
            eval_images, eval_labels, global_batch_size=config.eval_batch_size,
            image_size=image_size, **common)),
        training_examples=lambda n: (
            resize(preprocess_for_eval(tf.constant(train_images[:n]), spec),
                            image_size).numpy(),
            train_labels[:n]),
        **noise)


def _streamed_inputs(config, spec, mesh, axis) -> RunInputs:
    from sam_jax.data import streaming
    if config.label_noise:
        raise ValueError(f"label_noise={config.label_noise!r} is only supported on "
                         f"in-memory data sets, not the streamed {config.dataset!r}")
    train_split, eval_split = train_and_eval_splits(spec, config.validation_split)
    image_size = config.image_size or spec.image_shape[0]
    streamed = dict(spec=spec, process_index=jax.process_index(),
                    process_count=jax.process_count(), data_dir=config.data_dir,
                    image_size=image_size)
    return RunInputs(
        spec=spec, pipeline="streaming",
        image_shape=(image_size, image_size, spec.image_shape[-1]),
        num_train_examples=streaming.split_size(config.dataset, train_split, spec=spec,
                                                data_dir=config.data_dir),
        num_eval_examples=streaming.split_size(config.dataset, eval_split, spec=spec,
                                               data_dir=config.data_dir),
        train_batches=lambda start, stop: _global(
            mesh, axis, streaming.streaming_train_dataset(
                config.dataset, train_split, augmentation=config.augmentation,
                global_batch_size=config.batch_size, seed=config.seed,
                start_step=start, num_steps=stop,
                randaugment_num_layers=config.randaugment.num_layers,
                randaugment_magnitude=config.randaugment.magnitude,
                **streamed).as_numpy_iterator()),
        eval_batches=lambda: _global(mesh, axis, streaming.streaming_eval_batches(
            config.dataset, eval_split, global_batch_size=config.eval_batch_size,
            **streamed)))
