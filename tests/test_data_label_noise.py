"""Tests of sam_jax.data.label_noise: symmetric noise, counted and tested for
uniformity."""

import numpy as np
import pytest

from sam_jax import data


def test_symmetric_label_noise_corrupts_exactly_rate():
    labels = np.random.default_rng(1).integers(0, 10, size=1001)
    noisy, mask = data.symmetric_label_noise(labels, 0.3, 10, seed=5)
    assert mask.sum() == round(0.3 * 1001)
    assert np.all(noisy[mask] != labels[mask])
    np.testing.assert_array_equal(noisy[~mask], labels[~mask])
    assert noisy.dtype == labels.dtype and noisy.min() >= 0
    assert noisy.max() < 10


def test_symmetric_label_noise_is_uniform_over_other_classes():
    labels = np.zeros(36000, np.int64)
    noisy, mask = data.symmetric_label_noise(labels, 0.5, 10, seed=0)
    counts = np.bincount(noisy[mask], minlength=10)
    assert counts[0] == 0
    # 18,000 draws over 9 classes: 2,000 each, std ~42.
    assert np.all(np.abs(counts[1:] - 2000) < 250)


def test_symmetric_label_noise_seeding_and_edge_rates():
    labels = np.arange(200) % 10
    first = data.symmetric_label_noise(labels, 0.4, 10, seed=3)
    again = data.symmetric_label_noise(labels, 0.4, 10, seed=3)
    other = data.symmetric_label_noise(labels, 0.4, 10, seed=4)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[1], other[1])
    clean, clean_mask = data.symmetric_label_noise(labels, 0.0, 10, seed=3)
    np.testing.assert_array_equal(clean, labels)
    assert clean is not labels and not clean_mask.any()
    for rate in (1.0, -0.1):
        with pytest.raises(ValueError, match=r'\[0, 1\)'):
            data.symmetric_label_noise(labels, rate, 10, seed=0)
