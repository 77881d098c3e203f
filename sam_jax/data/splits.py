"""Split strings as tfds reads them ('train', 'train[:90%]') and scikit-learn's
digits split, with numpy alone: the data set registry (specs.py) computes the
digits statistics from here at import, so this imports nothing of the package.
"""

import re

import numpy as np

# The digits split, as in digits.py (which imports tfds, so it cannot be
# imported here); tests check the two agree.
_DIGITS_NUM_EXAMPLES = 1797
_DIGITS_NUM_TRAIN = 1297
_DIGITS_SPLIT_SEED = 0
_DIGITS_MAX_VALUE = 16  # sklearn's intensities are 0..16.

_SPLIT_PATTERN = re.compile(
    r'^(?P<name>\w+)(\[(?P<start>-?\d+%?)?:(?P<end>-?\d+%?)?\])?$')


def split_name(split: str, names) -> str:
    """The base split of `split` ('train' of 'train[:90%]'), one of `names`."""
    match = _SPLIT_PATTERN.match(split.replace(' ', ''))
    if not match or match['name'] not in names:
        raise ValueError(f'cannot read split {split!r}; allowed: one of '
                         f'{", ".join(sorted(names))}, optionally with one '
                         f'slice such as [:90%] or [90%:]')
    return match['name']


def resolve_split(split: str, split_sizes: dict[str, int]
                  ) -> tuple[str, int, int]:
    """(split name, start, end) of a one-part tfds split string.

    Percent boundaries round to the closest example as tfds' default
    ('closest') does: int(round(p * n / 100)); negative boundaries count
    from the end.

    Raises:
        ValueError: not of the form `name` or `name[a:b]`, or unknown name.
    """
    name = split_name(split, split_sizes)
    match = _SPLIT_PATTERN.match(split.replace(' ', ''))
    size = split_sizes[name]

    def boundary(text, default):
        if text is None:
            return default
        if text.endswith('%'):
            value = int(round(int(text[:-1]) * size / 100.0))
        else:
            value = int(text)
        if value < 0:
            value += size
        return min(max(value, 0), size)

    start, end = boundary(match['start'], 0), boundary(match['end'], size)
    return name, start, max(start, end)


def load_digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """A split of scikit-learn's digits, as the `sklearn_digits` builder has it.

    Args:
        split: 'train' (1,297 examples), 'test' (500), or a slice of either.

    Returns:
        (uint8 images [N, 8, 8, 1] in 0..255, int32 labels [N]).
    """
    from sklearn import datasets as sklearn_datasets  # Only digits needs it.
    name, start, end = resolve_split(
        split, {'train': _DIGITS_NUM_TRAIN,
                'test': _DIGITS_NUM_EXAMPLES - _DIGITS_NUM_TRAIN})
    permutation = np.random.RandomState(_DIGITS_SPLIT_SEED).permutation(
        _DIGITS_NUM_EXAMPLES)
    indices = {'train': permutation[:_DIGITS_NUM_TRAIN],
               'test': permutation[_DIGITS_NUM_TRAIN:]}[name][start:end]
    digits = sklearn_datasets.load_digits()
    images = np.round(digits.images * 255.0 / _DIGITS_MAX_VALUE)
    images = images.astype(np.uint8)[..., np.newaxis]
    return images[indices], digits.target[indices].astype(np.int32)
