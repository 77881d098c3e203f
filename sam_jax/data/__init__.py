"""Data: tfds sources, augmentations, label noise and input pipelines.

Data sets with `spec.in_memory` use `load_split` + `train_dataset` /
`eval_batches`; the others `streaming_train_dataset` /
`streaming_eval_batches` (same batch formats). The TF-free in-memory path
(`idx`, `arrays`, `device_augment`, `device_pipeline`) runs where JAX is
installed without TensorFlow.

Names are imported lazily (PEP 562): importing this package, or a TF-free
submodule of it, must not import TensorFlow. The offline `sklearn_digits`
tfds builder is registered when `sources` (or anything that uses it, e.g.
`load_split`) is first imported.
"""

import importlib

from sam_jax.errors import DatasetUnavailableError  # noqa: F401  (no TensorFlow)

# Public name -> the submodule that defines it.
_EXPORTS = {
    'augment_for_training': 'augment',
    'cutout': 'autoaugment',
    'normalize': 'normalization',
    'preprocess_for_eval': 'normalization',
    'random_crop_with_reflect_padding': 'augment',
    'random_flip_left_right': 'augment',
    'TRAINING_AUGMENTATIONS': 'augment',
    'SklearnDigits': 'digits',
    'ImageFolderSource': 'image_folder',
    'open_image_folder': 'image_folder',
    'STREAMING_AUGMENTATIONS': 'specs',
    'IN_MEMORY_AUGMENTATIONS': 'specs',
    'symmetric_label_noise': 'label_noise',
    'as_numpy_iterator': 'pipeline',
    'eval_batches': 'pipeline',
    'num_eval_batches': 'device_pipeline',
    'steps_per_epoch': 'device_pipeline',
    'train_dataset': 'pipeline',
    'RunInputs': 'run_inputs',
    'prepare_inputs': 'run_inputs',
    'DATASETS': 'specs',
    'DatasetSpec': 'specs',
    'get_spec': 'specs',
    'load_split': 'sources',
    'train_and_eval_splits': 'specs',
    'open_source': 'streaming',
    'split_size': 'streaming',
    'streaming_eval_batches': 'streaming',
    'streaming_train_dataset': 'streaming',
    'TfdsSource': 'streaming',
}

__all__ = sorted(_EXPORTS) + ['DatasetUnavailableError']


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f'{__name__}.{_EXPORTS[name]}'),
                        name)
    else:
        # `from sam_jax import data; data.pipeline` worked when every
        # submodule was imported eagerly; keep it working.
        try:
            value = importlib.import_module(f'{__name__}.{name}')
        except ModuleNotFoundError as error:
            if error.name != f'{__name__}.{name}':
                raise
            raise AttributeError(
                f'module {__name__!r} has no attribute {name!r}') from None
    globals()[name] = value  # Later look-ups skip __getattr__.
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
