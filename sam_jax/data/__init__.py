"""Data: tfds sources, augmentations, label noise and input pipelines.

Importing this package registers the offline `sklearn_digits` tfds builder.
Data sets with `spec.in_memory` use `load_split` + `train_dataset` /
`eval_batches`; the others `streaming_train_dataset` /
`streaming_eval_batches` (same batch formats).
"""

from sam_jax.data.augment import augment_for_training
from sam_jax.data.augment import cutout
from sam_jax.data.augment import normalize
from sam_jax.data.augment import preprocess_for_eval
from sam_jax.data.augment import random_crop_with_reflect_padding
from sam_jax.data.augment import random_flip_left_right
from sam_jax.data.augment import TRAINING_AUGMENTATIONS

from sam_jax.data.digits import SklearnDigits
from sam_jax.data.image_folder import ImageFolderSource
from sam_jax.data.image_folder import open_image_folder
from sam_jax.data.imagenet_preprocessing import STREAMING_AUGMENTATIONS
from sam_jax.data.label_noise import symmetric_label_noise
from sam_jax.data.pipeline import as_numpy_iterator
from sam_jax.data.run_inputs import RunInputs
from sam_jax.data.run_inputs import prepare_inputs
from sam_jax.data.pipeline import eval_batches
from sam_jax.data.pipeline import num_eval_batches
from sam_jax.data.pipeline import steps_per_epoch
from sam_jax.data.pipeline import train_dataset
from sam_jax.data.sources import DATASETS
from sam_jax.data.sources import DatasetSpec
from sam_jax.data.sources import DatasetUnavailableError
from sam_jax.data.sources import get_spec
from sam_jax.data.sources import load_split
from sam_jax.data.sources import train_and_eval_splits
from sam_jax.data.streaming import open_source
from sam_jax.data.streaming import split_size
from sam_jax.data.streaming import streaming_eval_batches
from sam_jax.data.streaming import streaming_train_dataset
from sam_jax.data.streaming import TfdsSource
