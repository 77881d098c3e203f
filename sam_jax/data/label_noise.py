"""Symmetric label noise for the paper's noisy-label experiments."""

import numpy as np


def symmetric_label_noise(labels: np.ndarray, rate: float, num_classes: int,
                          seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Replaces a fraction `rate` of labels by a different, uniform class.

    Exactly round(rate * N) examples, chosen uniformly without replacement,
    get a label drawn uniformly from the other num_classes - 1 classes. So the
    fraction of wrong labels is exactly `rate` (a draw over all classes would
    leave 1/num_classes of the chosen labels correct).

    Args:
        labels: int labels [N] in [0, num_classes).
        rate: fraction of labels to corrupt, in [0, 1).
        num_classes: number of classes.
        seed: seed of `np.random.default_rng`.

    Returns:
        (noisy_labels with the dtype of `labels`, corrupted_mask bool [N]).
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f'label noise rate {rate!r} is outside the allowed '
                         f'range [0, 1)')
    labels = np.asarray(labels)
    num_corrupted = int(round(rate * labels.shape[0]))
    if num_corrupted == 0:
        return labels.copy(), np.zeros(labels.shape[0], dtype=bool)
    if num_classes < 2:
        raise ValueError(f'label noise needs at least 2 classes, got '
                         f'num_classes={num_classes}')
    rng = np.random.default_rng(seed)
    corrupted = rng.choice(labels.shape[0], size=num_corrupted, replace=False)
    # Adding 1..num_classes-1 modulo num_classes is a uniform draw over the
    # other classes.
    shift = rng.integers(1, num_classes, size=num_corrupted)
    noisy_labels = labels.copy()
    noisy_labels[corrupted] = (labels[corrupted] + shift) % num_classes
    corrupted_mask = np.zeros(labels.shape[0], dtype=bool)
    corrupted_mask[corrupted] = True
    return noisy_labels, corrupted_mask
