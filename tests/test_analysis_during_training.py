"""Tests of sam_jax.analysis.during_training: the sharpness metrics the trainer
logs equal the library's on the documented subset, replicated state or not;
the edge-of-stability tracker against a materialised Hessian (numpy) and the
closed-form edges."""

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from helpers import TinyBatchNormNet
from helpers import tiny_variables
from sam_jax import analysis
from sam_jax import parallel
from sam_jax.analysis import run_io


def test_sharpness_metrics_during_training(tiny_run):
    run = run_io.load_run(tiny_run)
    images, labels = run_io.training_examples(run.config, run.spec, 128)
    state = types.SimpleNamespace(params=run.params, batch_stats=run.batch_stats)
    metrics = analysis.sharpness_metrics(run.model, state, images, labels,
                                         num_examples=64, top_k=3, m=16, rho=0.05,
                                         seed=0, num_iterations=8)
    assert set(metrics) == {"lambda_max", "lambda_3", "lambda_max_over_lambda_3",
                            "m_sharpness", "subset_loss"}
    assert metrics["lambda_max"] >= metrics["lambda_3"] > 0
    assert metrics["lambda_max_over_lambda_3"] == pytest.approx(
        metrics["lambda_max"] / metrics["lambda_3"])
    # The same numbers from the library on the subset it documents, and from
    # a state replicated over the 8-device mesh as the trainer holds it.
    subset = analysis.during_training.fixed_subset(128, 64, seed=0)
    batch = {"image": images[subset], "label": labels[subset]}
    loss_fn = run_io.make_loss_fn(run.model, run.batch_stats)
    top = analysis.hessian_eigenvalues(loss_fn, run.params, [batch], k=3, seed=0,
                                       num_iterations=8)
    assert metrics["lambda_max"] == pytest.approx(top[0], rel=1e-6)
    assert metrics["m_sharpness"] == pytest.approx(analysis.m_sharpness(
        loss_fn, run.params, batch, m=16, rho=0.05), rel=1e-6)
    mesh = parallel.make_mesh()
    replicated = types.SimpleNamespace(**jax.device_put(
        {"params": run.params, "batch_stats": run.batch_stats},
        parallel.replicated(mesh)))
    again = analysis.sharpness_metrics(run.model, replicated, images, labels,
                                       num_examples=64, top_k=3, m=16, rho=0.05, seed=0,
                                       num_iterations=8)
    for key, value in metrics.items():
        assert again[key] == pytest.approx(value, rel=1e-6), key


# ------------------------------------------------------------ every few steps

def tiny_problem(num_examples=12, seed=0):
    """TinyBatchNormNet (67 weights), a batch of 4x4 images, its reference loss."""
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(num_examples, 4, 4, 1)).astype(np.float32)
    labels = rng.integers(0, 3, num_examples).astype(np.int32)
    model = TinyBatchNormNet()
    params, batch_stats = tiny_variables(images, seed)
    return model, params, batch_stats, images, labels


def reference_loss(model, batch_stats, images, labels, weight_decay):
    """Flat weights -> the training step's loss on the whole batch, written
    with optax: BatchNorm over the batch (training mode), plus the L2 term."""
    def loss(flat, unravel):
        params = unravel(flat)
        logits, _ = model.apply({"params": params, "batch_stats": batch_stats}, images,
                                train=True, mutable=["batch_stats"])
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return ce + 0.5 * weight_decay * sum(
            jnp.sum(w ** 2) for w in jax.tree_util.tree_leaves(params))
    return loss


def test_stability_tracker_against_the_materialised_hessian():
    model, params, batch_stats, images, labels = tiny_problem()
    wd, lr, rho = 1e-3, 0.3, 0.05
    flat, unravel = ravel_pytree(params)
    loss = functools.partial(reference_loss(model, batch_stats, images, labels, wd),
                             unravel=unravel)
    hessian = np.asarray(jax.jit(jax.hessian(loss))(flat), np.float64)
    hessian = (hessian + hessian.T) / 2
    eigenvalues = np.linalg.eigvalsh(hessian)
    grad_norm = np.linalg.norm(np.asarray(jax.jit(jax.grad(loss))(flat), np.float64))
    state = types.SimpleNamespace(params=params, batch_stats=batch_stats)
    exact = analysis.StabilityTracker(model, images, labels, weight_decay=wd,
                                      num_iterations=flat.size, trace_probes=200,
                                      rank_images=images)
    record = exact(state, lr, rho=rho)
    assert record["lambda_max"] == pytest.approx(eigenvalues[-1], rel=1e-4)
    assert record["loss"] == pytest.approx(float(jax.jit(loss)(flat)), rel=1e-5)
    assert record["grad_norm"] == pytest.approx(grad_norm, rel=1e-4)
    assert record["two_over_lr"] == pytest.approx(2 / lr)
    assert record["ratio"] == pytest.approx(eigenvalues[-1] * lr / 2, rel=1e-4)
    # SAM's edge: the positive root of lr lambda (1 + rho lambda / ||g||) = 2.
    edge = grad_norm / (2 * rho) * (np.sqrt(1 + 8 * rho / (lr * grad_norm)) - 1)
    assert record["rho"] == rho
    assert record["sam_edge"] == pytest.approx(edge, rel=1e-4)
    assert record["sam_ratio"] == pytest.approx(eigenvalues[-1] / edge, rel=1e-4)
    # Hutchinson: within 4 standard errors of tr H; the error near its formula.
    assert abs(record["trace"] - np.trace(hessian)) < 4 * record["trace_stderr"]
    off_diagonal = np.sum(hessian ** 2) - np.sum(np.diag(hessian) ** 2)
    assert record["trace_stderr"] == pytest.approx(np.sqrt(2 * off_diagonal / 200),
                                                   rel=0.3)
    # The rank of the head's input (read here through flax's intermediates).
    _, captured = model.apply({"params": params, "batch_stats": batch_stats}, images,
                              train=False, capture_intermediates=True)
    head_input = np.asarray(captured["intermediates"]["BatchNorm_1"]["__call__"][0])
    centred = head_input - head_input.mean(axis=0)
    variances = np.sort(np.linalg.eigvalsh(centred.T @ centred))[::-1]
    want = int(np.argmax(np.cumsum(variances) >= 0.99 * variances.sum()) + 1)
    assert record["feature_rank"] == want
    # USAM's edge is constant: the root of lr lambda (1 + rho lambda) = 2.
    usam = exact(state, lr, rho=rho, unnormalised=True)
    assert usam["usam_edge"] == pytest.approx(
        (np.sqrt(1 + 8 * rho / lr) - 1) / (2 * rho), rel=1e-12)
    assert "sam_edge" not in usam
    assert set(exact.__class__(model, images, labels)(state, lr)) == {
        "loss", "grad_norm", "lambda_max", "learning_rate", "two_over_lr", "ratio"}


def test_stability_tracker_warm_starts_from_its_last_eigenvector():
    """Three Lanczos steps per call: each call refines the last call's vector,
    so lambda_max converges over calls on a fixed state."""
    model, params, batch_stats, images, labels = tiny_problem(seed=1)
    flat, unravel = ravel_pytree(params)
    loss = functools.partial(reference_loss(model, batch_stats, images, labels, 0.0),
                             unravel=unravel)
    top = np.linalg.eigvalsh(np.asarray(jax.jit(jax.hessian(loss))(flat), np.float64))[-1]
    state = types.SimpleNamespace(params=params, batch_stats=batch_stats)
    tracker = analysis.StabilityTracker(model, images, labels, num_iterations=3)
    values = [tracker(state, 0.1)["lambda_max"] for _ in range(8)]
    assert values[-1] == pytest.approx(top, rel=1e-4)
    assert np.all(np.diff(values) >= -1e-5 * top)  # Ritz values rise towards it
    assert values[0] < values[-1]
    with pytest.raises(ValueError, match="trace_probes=1"):
        analysis.StabilityTracker(model, images, labels, trace_probes=1)
