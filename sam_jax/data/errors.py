"""Errors of the data package, in a module without TensorFlow imports.

The TF-free in-memory loaders (`arrays.py`) raise these on machines that
have JAX but no TensorFlow; `sources.py` re-exports them.
"""


class DatasetUnavailableError(ValueError):
    """A data set is not prepared in `data_dir` and cannot be downloaded."""
