"""config.validation_examples and config.evaluate_training_set: the sets a run
evaluates once at the end, checked against the final weights applied by hand
to the examples each set should hold (the digits split read from scikit-learn,
normalised in numpy, the noisy labels from the run's label_noise.npz)."""

import jax
import numpy as np
import pytest

from helpers import load_config
from sam_jax import checkpoint
from sam_jax import data
from sam_jax import steps
from sam_jax import train
from sam_jax.data import arrays
from sam_jax.errors import BadInputError
from sam_jax.models import get_model

SUBSET, HELD_OUT = 600, 200


def config_with(**overrides):
    config = load_config("configs/quickstart.py")
    config.update(dict(num_epochs=2, batch_size=64, eval_batch_size=96,
                       log_every_steps=5, eval_every_epochs=2,
                       checkpoint_every_steps=100, label_noise=0.4,
                       train_subset=SUBSET, validation_examples=HELD_OUT,
                       evaluate_training_set=True))
    config.model.name = "wrn10_1"
    config.update(overrides)
    return config


def errors_by_hand(workdir, config, images, labels):
    """Error % of the run's final weights (evaluation mode) on uint8 images."""
    spec = data.get_spec("digits")
    model = get_model(config.model.name, spec.num_classes)
    target = steps.initial_state(config.seed, model,
                                 train.training_chain(config, 1).tx, spec.image_shape)
    state = checkpoint.restore_latest(workdir, target)
    normalised = ((images.astype(np.float32) - np.asarray(spec.mean, np.float32))
                  / np.asarray(spec.std, np.float32))
    logits = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                         normalised, train=False)
    return float(np.mean(np.asarray(logits).argmax(-1) != labels))


def test_held_out_validation_and_training_set_errors(tmp_path):
    config = config_with()
    results = train.train_and_evaluate(config, str(tmp_path))
    images, labels = arrays.load_digits_split("train")  # 1,297 examples
    images = images.reshape(len(labels), 8, 8, 1)
    # The validation set is the split's last 200, clean; training the first 600.
    assert results["validation_error"] == pytest.approx(
        errors_by_hand(tmp_path, config, images[-HELD_OUT:], labels[-HELD_OUT:]),
        abs=1e-6)
    noise = np.load(tmp_path / "label_noise.npz")
    corrupted = noise["corrupted_indices"]
    assert corrupted.max() < SUBSET and len(corrupted) == round(0.4 * SUBSET)
    run_labels = labels[:SUBSET].copy()
    run_labels[corrupted] = noise["noisy_labels"]
    train_images = images[:SUBSET]
    assert results["train_error"] == pytest.approx(
        errors_by_hand(tmp_path, config, train_images, run_labels), abs=1e-6)
    assert results["train_corrupted_error"] == pytest.approx(
        errors_by_hand(tmp_path, config, train_images[corrupted], run_labels[corrupted]),
        abs=1e-6)
    clean = np.setdiff1d(np.arange(SUBSET), corrupted)
    assert results["train_uncorrupted_error"] == pytest.approx(
        errors_by_hand(tmp_path, config, train_images[clean], run_labels[clean]),
        abs=1e-6)
    assert "test_error" in results  # the test split is still evaluated


@pytest.mark.parametrize("overrides, message", [
    (dict(validation_examples=1200), "validation_examples=1200 and train_subset=600 need"),
    (dict(validation_examples=0), "validation_examples=0 must be an integer >= 1"),
    (dict(validation_split=True), "validation_split=True both choose"),
])
def test_bad_held_out_sets_are_refused_in_one_line(tmp_path, overrides, message):
    with pytest.raises(BadInputError, match=message) as raised:
        train.train_and_evaluate(config_with(**overrides), str(tmp_path / "run"))
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "run" / "checkpoints").exists()
