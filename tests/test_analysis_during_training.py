"""Tests of sam_jax.analysis.during_training: the sharpness metrics the trainer
logs equal the library's on the documented subset, replicated state or not."""

import types

import jax
import pytest

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
