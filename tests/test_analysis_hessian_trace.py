"""Hutchinson's trace estimator against the materialised Hessian (jax.hessian)
and the closed-form variance of Rademacher probes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from helpers import mlp_loss
from helpers import mlp_problem
from sam_jax import analysis


def test_trace_and_standard_error_match_the_materialised_hessian():
    params, batch = mlp_problem(num_examples=24, inputs=4, hidden=5)
    flat, unravel = ravel_pytree(params)
    dense = np.asarray(jax.hessian(lambda x: mlp_loss(unravel(x), batch))(flat),
                       np.float64)
    dense = (dense + dense.T) / 2
    off_diagonal = dense - np.diag(np.diag(dense))
    num_probes = 400
    # Var(v^T H v) = 2 sum_{i != j} H_ij^2 for Rademacher v (H symmetric).
    expected_error = np.sqrt(2 * np.sum(off_diagonal ** 2) / num_probes)
    # Streamed over two uneven batches: the Hessian of the size-weighted mean.
    batches = [{k: v[:10] for k, v in batch.items()},
               {k: v[10:] for k, v in batch.items()}]
    trace, error = analysis.hutchinson_trace(mlp_loss, params, batches,
                                             num_probes=num_probes, seed=1)
    assert abs(trace - np.trace(dense)) < 4 * expected_error
    # The sample standard deviation of 400 near-Gaussian samples is within
    # ~4% of the truth; 15% leaves a wide margin.
    assert error == pytest.approx(expected_error, rel=0.15)
    assert expected_error < 0.2 * abs(np.trace(dense))  # the check has teeth


def test_a_diagonal_hessian_is_estimated_exactly():
    """Rademacher probes see only the off-diagonal part: v^T D v = tr D always."""
    diagonal = np.linspace(-1.0, 3.0, 7)

    def loss(params, batch):
        return 0.5 * jnp.mean(batch["d"] @ jnp.square(params["x"]))

    params = {"x": jnp.asarray(np.random.default_rng(0).normal(size=7), jnp.float32)}
    batch = {"d": np.tile(diagonal, (3, 1)).astype(np.float32)}
    trace, error = analysis.hutchinson_trace(loss, params, batch, num_probes=5)
    assert trace == pytest.approx(diagonal.sum(), abs=1e-5)
    assert error == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="num_probes"):
        analysis.hutchinson_trace(loss, params, batch, num_probes=1)
