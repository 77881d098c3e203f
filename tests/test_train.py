"""The trainer end to end, on 8 virtual CPU devices: real tfds code on mock
data, learning and bit-for-bit resumption on digits, sharpness logging, and a
short finetuning run from a converted checkpoint."""

import glob
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds
from jax.flatten_util import ravel_pytree

from helpers import finetune_config
from helpers import Interrupted, interrupt_after
from helpers import load_config
from sam_jax import checkpoint
from sam_jax import data
from sam_jax import parallel
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
    config.sam.examples_per_perturbation = 2  # the per-device batch (32 in the paper)
    config.eval_batch_size = 24
    with tfds.testing.mock_data(num_examples=40):
        results = train.train_and_evaluate(config, str(tmp_path))
    assert results["steps"] == 2  # 40 // 16
    assert 0.0 <= results["test_error"] <= 1.0
    for name in ("config.json", "results.json", "metrics.jsonl"):
        assert (tmp_path / name).exists()
    assert glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))


def reference_grouped_sam_step(model, variables, images, labels, *, m, rho,
                                weight_decay, lr, momentum, clip_norm):
    """Independent reference of one step from a fresh optimizer: a loop over
    the groups of m examples, in float64 numpy where it can be.

    Per group: g = gradient at w (BatchNorm on the group's m examples), e =
    rho g / ||g||, the gradient at w + e; their mean over groups, clipped to
    clip_norm, one Nesterov step from zero momentum (trace = g, update =
    -lr (g + momentum trace)). BatchNorm statistics: the mean over groups of
    the first pass's updated statistics.
    """
    params, batch_stats = variables["params"], variables["batch_stats"]
    flat_w, unravel = ravel_pytree(params)
    w = np.asarray(flat_w, np.float64)

    def loss(flat, x, y):
        logits, mutated = model.apply(
            {"params": unravel(flat), "batch_stats": batch_stats}, x, train=True,
            mutable=["batch_stats"])
        log_p = jax.nn.log_softmax(logits.astype(jnp.float32))
        cross_entropy = -jnp.mean(log_p[jnp.arange(len(y)), y])
        return cross_entropy + 0.5 * weight_decay * jnp.sum(flat ** 2), mutated["batch_stats"]

    grad = jax.jit(jax.grad(loss, has_aux=True))
    g_sam_sum, stats = np.zeros_like(w), []
    for start in range(0, len(images), m):
        x, y = images[start:start + m], labels[start:start + m]
        g, new_stats = grad(jnp.asarray(w, jnp.float32), x, y)
        g = np.asarray(g, np.float64)
        stats.append(new_stats)
        e = rho * g / np.linalg.norm(g)
        g_sam, _ = grad(jnp.asarray(w + e, jnp.float32), x, y)
        g_sam_sum += np.asarray(g_sam, np.float64)
    g = g_sam_sum / len(stats)
    g *= min(1.0, clip_norm / np.linalg.norm(g))
    new_w = w - lr * (g + momentum * g)
    mean_stats = jax.tree_util.tree_map(
        lambda *s: np.mean(np.stack([np.asarray(v, np.float64) for v in s]), 0), *stats)
    return unravel(jnp.asarray(new_w, jnp.float32)), mean_stats


def one_step_on(num_devices, config, model, variables, images, labels):
    """One training step built from `config` on a mesh of the first
    `num_devices` devices: (params, batch_stats)."""
    mesh = parallel.make_mesh(jax.devices()[:num_devices])
    chain = train.training_chain(config, total_steps=100)
    step = parallel.shard_train_step(
        train.train_step_from_config(config, model, chain, num_devices), mesh)
    params = variables["params"]
    state = steps.new_train_state(params, variables["batch_stats"],
                                  chain.tx.init(params))
    state = step(jax.device_put(jax.tree_util.tree_map(jnp.copy, state),
                                parallel.replicated(mesh)),
                 parallel.global_batch(mesh, {"image": images, "label": labels}),
                 jax.random.PRNGKey(0))
    return jax.tree_util.tree_map(np.asarray, (state.params, state.batch_stats))


def assert_trees_close(got, want, **tolerances):
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want),
                    strict=True):
        np.testing.assert_allclose(a, b, **tolerances)


def largest_difference(a, b):
    return max(np.abs(np.asarray(x) - np.asarray(y)).max() for x, y in zip(
        jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def test_a_configs_step_is_the_same_on_1_2_and_8_devices():
    """The paper configs pin m, so a step does not depend on the device count.

    One step of the CIFAR WRN config, shrunk (WRN-10-1, 8x8 images, batch 16,
    m = 2), on meshes of 1, 2 and 8 of the 8 devices (per-device batch 16, 8,
    2): the same parameters and BatchNorm statistics, and those of a loop over
    the 8 groups. Left unset, m is the per-device batch and the steps differ.
    """
    config = load_config("configs/cifar_wrn.py:cifar10,basic,200,sam")
    assert config.sam.examples_per_perturbation == 32  # pinned (32 = 256 / 8)
    config.model.name = "wrn10_1"
    config.batch_size = 16
    config.sam.examples_per_perturbation = 2
    config.optimizer.grad_clip_norm = 1.0  # acts: the mean gradient's norm is ~3.8
    model = get_model("wrn10_1", 10)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(16, 8, 8, 1)).astype(np.float32)
    labels = rng.integers(0, 10, 16).astype(np.int32)
    variables = model.init(jax.random.PRNGKey(0), images[:1])

    def reference(m, rho=config.sam.rho):
        return reference_grouped_sam_step(
            model, variables, images, labels, m=m, rho=rho,
            weight_decay=config.optimizer.weight_decay,
            lr=config.optimizer.learning_rate, momentum=config.optimizer.momentum,
            clip_norm=config.optimizer.grad_clip_norm)

    results = {n: one_step_on(n, config, model, variables, images, labels)
               for n in (1, 2, 8)}
    # float32 round-off is ~2e-7 here, except where groups are mapped over a
    # device's batch (1 and 2 devices): XLA:CPU's batched convolutions on some
    # CPUs (seen on Xeons with AMX) are off by up to 7e-5, 0.4% of the step.
    want = reference(2)
    for n in (1, 2, 8):
        assert_trees_close(results[n], want, rtol=1e-5, atol=1e-6 if n == 8 else 2e-4)
    for n in (2, 8):
        assert_trees_close(results[n], results[1], rtol=1e-5, atol=2e-4)
    # Far above the tolerance: the step's size, and what rho changes in it.
    assert largest_difference(results[1][0], variables["params"]) > 1e-2
    assert largest_difference(reference(2, rho=0.0)[0], want[0]) > 1e-2

    # The failure this guards against: with m unset, one device is m = 16
    # (BatchNorm over 16 examples too) where 8 devices were m = 2.
    config.sam.examples_per_perturbation = None
    unpinned = one_step_on(1, config, model, variables, images, labels)
    assert_trees_close(unpinned, reference(16), rtol=1e-5, atol=1e-6)
    assert largest_difference(unpinned[0], results[8][0]) > 1e-2
    assert largest_difference(unpinned[1], results[8][1]) > 1e-3




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


def stability_rows(workdir):
    return [row for row in map(json.loads, open(os.path.join(workdir, "metrics.jsonl")))
            if row["split"] == "stability"]


def test_the_edge_of_stability_is_logged_every_n_steps_once(tmp_path, monkeypatch):
    config = tiny_digits_config(num_steps=10, checkpoint_every_steps=5)
    config.sam.rho = 0.1
    config.sharpness.update(every_steps=4, num_examples=32, lambda_max_iterations=3,
                            trace_probes=2, rank_examples=40)
    with monkeypatch.context() as patch:  # stopped after step 6 (checkpoint: 5)
        interrupt_after(6, patch)
        with pytest.raises(Interrupted):
            train.train_and_evaluate(config, str(tmp_path))
    assert [r["step"] for r in stability_rows(tmp_path)] == [0, 4]
    train.train_and_evaluate(config, str(tmp_path))
    rows = stability_rows(tmp_path)
    # At the start and after every 4th step (20 steps make an epoch), once.
    assert [r["step"] for r in rows] == [0, 4, 8]
    assert [r["epoch"] for r in rows] == [0.0, 0.2, 0.4]
    schedule = train.optimizers.learning_rate_schedule(config, 10, 20)
    for r in rows:
        assert r["learning_rate"] == pytest.approx(float(schedule(max(r["step"] - 1, 0))))
        assert r["two_over_lr"] == pytest.approx(2 / r["learning_rate"])
        assert r["lambda_max"] > 0 and r["ratio"] == pytest.approx(
            r["lambda_max"] / r["two_over_lr"])
        # SAM's edge at the fixed batch's ||g||, the closed form.
        g, lr, rho = r["grad_norm"], r["learning_rate"], r["rho"]
        assert rho == 0.1
        assert r["sam_edge"] == pytest.approx(
            g / (2 * rho) * (np.sqrt(1 + 8 * rho / (lr * g)) - 1), rel=1e-9)
        assert r["sam_edge"] < r["two_over_lr"]
        assert r["trace_stderr"] > 0 and 1 <= r["feature_rank"] <= 64


def test_stability_radius_of_each_method():
    """The radius whose edge the trainer logs: SAM's and USAM's, with the rho
    schedule; none for the methods without a closed-form edge."""
    lr = optax.constant_schedule(0.1)
    config = tiny_digits_config()
    config.sam.rho = 0.2
    assert train.stability_radius(config, 7, 100, lr) == (0.2, False)
    config.rho_schedule.warmup_fraction = 0.1  # linear over the first 10 steps
    assert train.stability_radius(config, 4, 100, lr) == (pytest.approx(0.2 * 0.5), False)
    config.method, config.usam.rho = "usam", 0.3
    assert train.stability_radius(config, 100, 100, lr) == (pytest.approx(0.3), True)
    for method, change in [("sam", {"adaptive": True}), ("sam", {"ball": "linf"}),
                           ("sam", {"ascent_steps": 2}), ("asam", {}), ("sgd", {})]:
        other = tiny_digits_config(method=method)
        other.sam.update(change)
        assert train.stability_radius(other, 1, 100, lr) == (None, False), (method, change)


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
