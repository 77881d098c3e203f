"""The trainer end to end, on 8 virtual CPU devices."""

import functools
import glob
import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sam_jax
import tensorflow_datasets as tfds

from sam_jax import optimizers
from sam_jax import checkpoint
from sam_jax import data
from sam_jax import parallel
from sam_jax import steps
from sam_jax import train
from sam_jax.models import get_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(path, arg=None):
    spec = importlib.util.spec_from_file_location("config", os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


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


# ------------------------------------------------------------ configs

@pytest.mark.parametrize("path", sorted(
    os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "configs", "[!_]*.py"))))
def test_every_config_loads_and_validates(path):
    config = load_config(path)
    config.lock()
    from sam_jax import validate
    validate.validate_config(config, num_devices=8)


def test_cifar_wrn_config_has_the_papers_hyperparameters():
    c = load_config("configs/cifar_wrn.py", "cifar100,cutout,1800,sam")
    assert (c.dataset, c.augmentation, c.num_epochs) == ("cifar100", "cutout", 1800)
    assert (c.optimizer.learning_rate, c.optimizer.weight_decay, c.sam.rho) == (
        0.05, 1e-3, 0.1)
    assert (c.batch_size, c.optimizer.grad_clip_norm, c.optimizer.nesterov) == (
        256, 5.0, True)
    assert load_config("configs/cifar_wrn.py", "sgd").sam.rho == 0.0
    with pytest.raises(ValueError, match="unknown config arg 'cifar1000'"):
        load_config("configs/cifar_wrn.py", "cifar1000")


# ------------------------------------------------------------ 8 devices vs loop

def reference_sam_step(model, params, batch_stats, images, labels, *, rho,
                       weight_decay, lr, num_shards):
    """Independent reference: a Python loop over the shards, each a 'device'."""
    grads_sum, stats = None, []
    for x, y in zip(np.split(images, num_shards), np.split(labels, num_shards)):
        def loss(p):
            logits, mutated = model.apply({"params": p, "batch_stats": batch_stats},
                                          x, train=True, mutable=["batch_stats"])
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            l2 = sum(jnp.sum(w ** 2) for w in jax.tree_util.tree_leaves(p))
            return ce + 0.5 * weight_decay * l2, mutated["batch_stats"]
        g, new_stats = jax.grad(loss, has_aux=True)(params)
        stats.append(new_stats)
        norm = np.sqrt(sum(np.sum(np.square(np.asarray(v, np.float64)))
                           for v in jax.tree_util.tree_leaves(g)))
        shifted = jax.tree_util.tree_map(lambda w, v: w + rho * v / norm, params, g)
        g_sam, _ = jax.grad(loss, has_aux=True)(shifted)
        grads_sum = g_sam if grads_sum is None else jax.tree_util.tree_map(
            jnp.add, grads_sum, g_sam)
    grads = jax.tree_util.tree_map(lambda v: v / num_shards, grads_sum)
    tx = optax.chain(optax.clip_by_global_norm(5.0),
                     optax.sgd(lr, momentum=0.9, nesterov=True))
    updates, _ = tx.update(grads, tx.init(params), params)
    mean_stats = jax.tree_util.tree_map(lambda *s: sum(s) / num_shards, *stats)
    return optax.apply_updates(params, updates), mean_stats


def test_one_step_on_8_devices_equals_loop_over_shards():
    assert jax.device_count() == 8
    model = get_model("wrn10_1", 10)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(32, 8, 8, 1)).astype(np.float32)
    labels = rng.integers(0, 10, 32).astype(np.int32)
    variables = model.init(jax.random.PRNGKey(0), images[:1])
    lr, rho, wd = 0.1, 0.2, 5e-4
    method = sam_jax.sam(rho, axis_name=steps.AXIS, grouped=True,
                         aux_init=steps.aux_example())
    base = optax.chain(optax.clip_by_global_norm(5.0),
                       optax.sgd(lr, momentum=0.9, nesterov=True))
    tx = optax.chain(method, base)
    state = steps.new_train_state(variables["params"], variables["batch_stats"],
                                  tx.init(variables["params"]))
    mesh = parallel.make_mesh()
    step = parallel.shard_train_step(steps.make_train_step(
        model, method, base, examples_per_perturbation=4, per_device_batch=4,
        weight_decay=wd, label_smoothing=0.0, grad_clip_norm=5.0), mesh)
    # A copy: the step donates (deletes) its input state.
    state = jax.tree_util.tree_map(jnp.copy, state)
    new_state = step(jax.device_put(state, parallel.replicated(mesh)),
                        parallel.global_batch(mesh, {"image": images, "label": labels}),
                        jax.random.PRNGKey(1))
    ref_params, ref_stats = reference_sam_step(
        model, variables["params"], variables["batch_stats"], images, labels,
        rho=rho, weight_decay=wd, lr=lr, num_shards=8)
    for got, want in [(new_state.params, ref_params),
                      (new_state.batch_stats, ref_stats)]:
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
    # The per-device semantics matter: one perturbation for the global batch
    # (a single shard in the loop) gives different weights.
    global_params, _ = reference_sam_step(
        model, variables["params"], variables["batch_stats"], images, labels,
        rho=rho, weight_decay=wd, lr=lr, num_shards=1)
    diffs = [np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in zip(
        jax.tree_util.tree_leaves(new_state.params),
        jax.tree_util.tree_leaves(global_params))]
    assert max(diffs) > 1e-4


# ------------------------------------------------------------ end to end

def test_cifar10_through_the_real_tfds_path_on_mock_data(tmp_path):
    config = load_config("configs/cifar_wrn.py", "cifar10,cutout,200,sam")
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
    """Makes the training data iterator die after `num_batches` batches."""
    real = data.as_numpy_iterator

    def dying(ds):
        for i, batch in enumerate(real(ds)):
            if i == num_batches:
                raise Interrupted
            yield batch
    monkeypatch.setattr(data, "as_numpy_iterator", dying)


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


# ------------------------------------------------------------ command line

@pytest.mark.parametrize("override, message", [
    ("--config.model.name=resnet9", "unknown model 'resnet9'; allowed:"),
    ("--config.sam.rho=-0.1", "sam.rho=-0.1 must be a finite number >= 0"),
    ("--config.batch_size=100", "batch_size=100 must be a positive multiple of the "
                                "device count 8"),
    ("--config.sam.examples_per_perturbation=3",
     "sam.examples_per_perturbation=3 must divide the per-device batch 8"),
    ("--config.label_noise=1.0", "label_noise=1.0 must be in [0, 1)"),
    ("--config.dataset=cifar10", "dataset 'cifar10' is not prepared"),
    ("--config.dataset=mnist", "unknown dataset 'mnist'; allowed:"),
    ("--config.augmentation=mixup", "unknown augmentation 'mixup' for digits; allowed:"),
    ("--config.optimizer.name=lamb", "unknown optimizer 'lamb'; allowed:"),
])
def test_bad_input_exits_2_with_one_line_and_no_workdir(tmp_path, override, message,
                                                       fault_table):
    workdir = tmp_path / "run"
    env = dict(os.environ, TFDS_DATA_DIR=str(tmp_path / "tfds"))
    proc = subprocess.run(
        [sys.executable, "-m", "sam_jax.main", "--config=configs/quickstart.py",
         f"--workdir={workdir}", override],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    error_lines = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
    assert len(error_lines) == 1 and message in error_lines[0], proc.stderr[-2000:]
    assert not workdir.exists()
    shown = error_lines[0].replace(str(tmp_path), "TMP")  # the table is machine-free
    fault_table((f"`{override}`", f"exit code {proc.returncode}, workdir not created: "
                 f"`{shown}`"))


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
