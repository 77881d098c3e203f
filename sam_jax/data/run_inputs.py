"""A run's inputs, whichever pipeline serves them.

Small data sets (CIFAR, SVHN, Fashion-MNIST, digits) are held in memory
(`pipeline.py`); large or irregular ones (ImageNet, the finetuning sets) are
streamed (`streaming.py`). Both give batches that are pure functions of
(seed, step). Everything here reads or checks data; nothing is written.
"""

import dataclasses
from typing import Callable, Iterator, Optional

import numpy as np
import tensorflow as tf

from sam_jax.data import pipeline
from sam_jax.data import streaming
from sam_jax.data.augment import preprocess_for_eval
from sam_jax.data.label_noise import symmetric_label_noise
from sam_jax.data.sources import DatasetSpec, get_spec, load_split, train_and_eval_splits


@dataclasses.dataclass
class RunInputs:
    spec: DatasetSpec
    image_shape: tuple
    num_train_examples: int
    num_eval_examples: int
    # (start_step, num_steps) -> this host's training batches for those steps.
    train_batches: Callable[[int, int], tf.data.Dataset]
    # () -> this host's padded evaluation batches, every example once.
    eval_batches: Callable[[], Iterator[dict]]
    # Label noise (in-memory data sets): which training examples changed, and
    # their new labels; None without noise.
    corrupted: Optional[np.ndarray] = None
    noisy_labels: Optional[np.ndarray] = None
    # n -> the first n training examples, normalised, not augmented, with the
    # run's labels (for sharpness measurements); in-memory data sets only.
    training_examples: Optional[Callable[[int], tuple[np.ndarray, np.ndarray]]] = None


def prepare_inputs(config, process_index: int = 0, process_count: int = 1) -> RunInputs:
    spec = get_spec(config.dataset)
    train_split, eval_split = train_and_eval_splits(spec, config.validation_split)
    common = dict(spec=spec, process_index=process_index, process_count=process_count)
    if spec.in_memory:
        train_images, train_labels = load_split(config.dataset, train_split,
                                                config.data_dir)
        eval_images, eval_labels = load_split(config.dataset, eval_split,
                                              config.data_dir)
        train_labels, corrupted = symmetric_label_noise(
            train_labels, config.label_noise, spec.num_classes,
            seed=config.label_noise_seed)
        # config.image_size resizes (finetuning at the model's resolution).
        image_size = config.image_size
        height, width, channels = spec.image_shape
        return RunInputs(
            spec=spec, image_shape=((image_size, image_size, channels) if image_size
                                    else (height, width, channels)),
            num_train_examples=len(train_labels), num_eval_examples=len(eval_labels),
            train_batches=lambda start, stop: pipeline.train_dataset(
                train_images, train_labels, augmentation=config.augmentation,
                global_batch_size=config.batch_size, seed=config.seed,
                start_step=start, num_steps=stop, image_size=image_size, **common),
            eval_batches=lambda: pipeline.eval_batches(
                eval_images, eval_labels, global_batch_size=config.eval_batch_size,
                image_size=image_size, **common),
            corrupted=corrupted if config.label_noise else None,
            noisy_labels=train_labels[corrupted] if config.label_noise else None,
            training_examples=lambda n: (
                pipeline.resize(preprocess_for_eval(tf.constant(train_images[:n]), spec),
                                image_size).numpy(),
                train_labels[:n]))

    if config.label_noise:
        raise ValueError(f"label_noise={config.label_noise!r} is only supported on "
                         "in-memory data sets, not the streamed "
                         f"{config.dataset!r}")
    image_size = config.image_size or spec.image_shape[0]
    streamed = dict(data_dir=config.data_dir, image_size=image_size, **common)
    return RunInputs(
        spec=spec, image_shape=(image_size, image_size, spec.image_shape[-1]),
        num_train_examples=streaming.split_size(config.dataset, train_split, spec=spec,
                                                data_dir=config.data_dir),
        num_eval_examples=streaming.split_size(config.dataset, eval_split, spec=spec,
                                               data_dir=config.data_dir),
        train_batches=lambda start, stop: streaming.streaming_train_dataset(
            config.dataset, train_split, augmentation=config.augmentation,
            global_batch_size=config.batch_size, seed=config.seed, start_step=start,
            num_steps=stop, randaugment_num_layers=config.randaugment.num_layers,
            randaugment_magnitude=config.randaugment.magnitude, **streamed),
        eval_batches=lambda: streaming.streaming_eval_batches(
            config.dataset, eval_split, global_batch_size=config.eval_batch_size,
            **streamed))
