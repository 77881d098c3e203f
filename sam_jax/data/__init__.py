"""Data: tfds sources, augmentations, label noise and input pipelines.

Importing this package registers the offline `sklearn_digits` tfds builder.
"""

from sam_jax.data.augment import augment_for_training
from sam_jax.data.augment import cutout
from sam_jax.data.augment import normalize
from sam_jax.data.augment import preprocess_for_eval
from sam_jax.data.augment import random_crop_with_reflect_padding
from sam_jax.data.augment import random_flip_left_right
from sam_jax.data.augment import TRAINING_AUGMENTATIONS
from sam_jax.data.digits import SklearnDigits
from sam_jax.data.label_noise import symmetric_label_noise
from sam_jax.data.pipeline import as_numpy_iterator
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
