"""Tests of sam_jax.analysis.run_io: the training examples an analysis reads
are the run's, label noise included."""

import numpy as np
import pytest

from helpers import load_config
from sam_jax.analysis import run_io


def test_training_examples_carry_the_runs_label_noise():
    from sam_jax import data
    config = load_config("configs/quickstart.py:noise40")
    spec = data.get_spec(config.dataset)
    images, labels = run_io.training_examples(config, spec, 300)
    raw_images, clean = data.load_split(config.dataset, "train", None)
    noisy, corrupted = data.symmetric_label_noise(clean, 0.4, 10,
                                                  seed=config.label_noise_seed)
    np.testing.assert_array_equal(labels, noisy[:300])
    assert np.sum(labels != clean[:300]) == np.sum(corrupted[:300]) > 50
    np.testing.assert_allclose(images, (raw_images[:300] - spec.mean[0]) / spec.std[0],
                               rtol=1e-5, atol=1e-5)  # normalised, not augmented
    with pytest.raises(run_io.RunError, match="num_examples=5000 must be in"):
        run_io.training_examples(config, spec, 5000)
