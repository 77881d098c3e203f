"""The trainer end to end, on 8 virtual CPU devices: real tfds code on mock
data, learning and bit-for-bit resumption on digits, sharpness logging, and a
short finetuning run from a converted checkpoint."""

import dataclasses
import glob
import json
import os
import shutil

import jax
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds

from helpers import finetune_config
from helpers import load_config
from sam_jax import checkpoint
from sam_jax import data
from sam_jax import pretrained
from sam_jax import steps
from sam_jax import train
from sam_jax.models import get_model


def tiny_digits_config(**overrides):
    config = load_config("configs/quickstart.py")
    config.model.name = "wrn10_1"
    config.num_epochs = 4
    config.batch_size = 64
    config.eval_batch_size = 96  # does not divide the 500 test examples
    config.optimizer.learning_rate = 0.1
    config.log_every_steps = 10
    config.eval_every_epochs = 2
    config.checkpoint_every_steps = 15
    config.update(overrides)
    return config


def test_cifar10_through_the_real_tfds_path_on_mock_data(tmp_path):
    config = load_config("configs/cifar_wrn.py:cifar10,cutout,200,sam")
    config.model.name = "wrn10_1"
    config.num_epochs = 1
    config.batch_size = 16
    config.eval_batch_size = 24
    with tfds.testing.mock_data(num_examples=40):
        results = train.train_and_evaluate(config, str(tmp_path))
    assert results["steps"] == 2  # 40 // 16
    assert 0.0 <= results["test_error"] <= 1.0
    for name in ("config.json", "results.json", "metrics.jsonl"):
        assert (tmp_path / name).exists()
    assert glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))


class Interrupted(Exception):
    pass


def interrupt_after(num_batches, monkeypatch):
    """Makes the training batches die after `num_batches` batches."""
    real = data.prepare_inputs

    def prepare(*args, **kwargs):
        inputs = real(*args, **kwargs)
        real_batches = inputs.train_batches

        def dying(start, stop):
            for i, batch in enumerate(real_batches(start, stop)):
                if i == num_batches:
                    raise Interrupted
                yield batch
        return dataclasses.replace(inputs, train_batches=dying)
    monkeypatch.setattr(data, "prepare_inputs", prepare)


def final_params(workdir, config):
    model = get_model(config.model.name, 10)
    tx = train.training_chain(config, total_steps=1).tx
    target = steps.initial_state(config.seed, model, tx, (8, 8, 1))
    return checkpoint.restore_latest(workdir, target).params


def test_digits_learns_and_resumes_bit_for_bit(tmp_path, monkeypatch):
    config = tiny_digits_config(label_noise=0.2)
    uninterrupted = train.train_and_evaluate(config, str(tmp_path / "a"))
    assert uninterrupted["test_error"] < 0.5  # chance is 0.9
    # 20 steps per epoch; stop at step 37, after the checkpoint at 30.
    with monkeypatch.context() as patch:
        interrupt_after(37, patch)
        with pytest.raises(Interrupted):
            train.train_and_evaluate(config, str(tmp_path / "b"))
    assert not (tmp_path / "b" / "results.json").exists()
    resumed = train.train_and_evaluate(config, str(tmp_path / "b"))
    # The same numbers; only the wall-clock seconds differ.
    assert resumed.pop("train_seconds") > 0 and uninterrupted.pop("train_seconds") > 0
    assert resumed == uninterrupted
    for a, b in zip(jax.tree_util.tree_leaves(final_params(str(tmp_path / "a"), config)),
                    jax.tree_util.tree_leaves(final_params(str(tmp_path / "b"), config))):
        np.testing.assert_array_equal(a, b)
    noise = np.load(tmp_path / "a" / "label_noise.npz")
    assert len(noise["corrupted_indices"]) == round(0.2 * 1297)


def test_sharpness_is_logged_during_training(tmp_path):
    config = tiny_digits_config(num_epochs=3, checkpoint_every_steps=1000)
    config.sharpness.update(every_epochs=2, num_examples=32, m=8, num_iterations=10)
    train.train_and_evaluate(config, str(tmp_path))
    rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    sharp = [r for r in rows if r["split"] == "sharpness"]
    # After epoch 1 (Figure 3's first point) and every 2nd epoch: not after epoch 3.
    assert [r["step"] for r in sharp] == [20, 40]
    for r in sharp:
        assert r["lambda_max"] > 0 and r["lambda_max_over_lambda_5"] >= 1
        assert r["m_sharpness"] >= 0


# ------------------------------------------------------------ a short finetuning run


def test_finetune_from_converted_checkpoint_then_resume_without_it(
        tmp_path, converted_checkpoint, monkeypatch, capsys):
    """4 steps on mock CIFAR-100 (100 classes, 32 px resized to 40) from the
    10-class converted checkpoint, cut short in the final evaluation (after the
    step-4 checkpoint); with the pretrained file removed, the rerun resumes
    from its own checkpoint (it must not read the file) and evaluates."""
    path = str(tmp_path / "pretrained.msgpack")
    shutil.copy(converted_checkpoint, path)
    config = finetune_config(path)
    workdir = str(tmp_path / "run")
    real_iterator = data.as_numpy_iterator

    def checked(dataset):
        for batch in real_iterator(dataset):
            assert batch["image"].shape == (16, 40, 40, 3)  # 8 devices x 2
            yield batch

    def interrupted(*args):
        raise Interrupted

    with tfds.testing.mock_data(num_examples=32):
        with monkeypatch.context() as patch:
            patch.setattr(data, "as_numpy_iterator", checked)
            patch.setattr(train, "evaluate", interrupted)
            with pytest.raises(Interrupted):
                train.train_and_evaluate(config, workdir)
        assert "from pretrained" in capsys.readouterr().out
        os.remove(path)
        results = train.train_and_evaluate(config, workdir)
    assert "resuming at step 4/4" in capsys.readouterr().out
    assert results["steps"] == 4 and 0.0 <= results["test_error"] <= 1.0

    assert max(map(int, os.listdir(os.path.join(workdir, "checkpoints")))) == 4
    final = pretrained.read_checkpoint(workdir, "orbax")  # the latest, step 4
    start = pretrained.read_checkpoint(converted_checkpoint, "msgpack")
    assert final["params"]["head"]["kernel"].shape == (320, 100)
    # BatchNorm statistics: still the checkpoint's, bit for bit.
    for got, want in zip(jax.tree_util.tree_leaves(final["batch_stats"]),
                         jax.tree_util.tree_leaves(start["batch_stats"])):
        np.testing.assert_array_equal(got, want)
    # The other weights moved at most 4 steps away from the checkpoint's: with
    # gradients clipped to norm c, Nesterov's step t is lr * |g_t + mu * m_t| <=
    # lr * c * (1 + mu * (1 + mu + ... + mu^(t-1))).
    lr, mu, c = (config.optimizer.learning_rate, config.optimizer.momentum,
                 config.optimizer.grad_clip_norm)
    bound = sum(lr * c * (1 + mu * sum(mu ** k for k in range(t))) for t in (1, 2, 3, 4))
    body = lambda tree: {k: v for k, v in tree.items() if k != "head"}  # noqa: E731
    distance = optax.tree.norm(jax.tree_util.tree_map(
        lambda a, b: a - b, body(final["params"]), body(start["params"])))
    assert 0 < float(distance) <= bound
