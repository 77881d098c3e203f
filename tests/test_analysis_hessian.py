"""Tests of sam_jax.analysis.hessian: Lanczos, spectral density and
Hessian-vector products against known spectra, numpy and jax.hessian."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from helpers import mlp_loss
from helpers import mlp_problem
from helpers import pieces
from helpers import quadratic_data
from helpers import quadratic_loss
from sam_jax import analysis


def split_params(x):
    """A flat vector of 30 as a two-leaf pytree (checks the flattening)."""
    return {"a": x[:10], "b": x[10:].reshape(4, 5)}


TOP = np.array([10.0, 7.0, 5.0, 3.0, 2.0])


def test_lanczos_recovers_the_top_k_of_a_known_spectrum():
    eigenvalues = np.concatenate([TOP, np.linspace(0.0, 1.0, 25)])
    rows, hessian = quadratic_data(eigenvalues, num_examples=60)
    params = split_params(jnp.asarray(np.random.default_rng(1).normal(size=30),
                                      jnp.float32))
    whole = {"a": rows}
    top = analysis.hessian_eigenvalues(quadratic_loss, params, [whole], k=5,
                                       num_iterations=30)
    np.testing.assert_allclose(top, TOP, rtol=1e-5)
    # Streamed over uneven batches (weighted by size), or from a callable.
    streamed = pieces(whole, [7, 23, 30])
    np.testing.assert_allclose(analysis.hessian_eigenvalues(
        quadratic_loss, params, lambda: iter(streamed), k=5, num_iterations=30),
        TOP, rtol=1e-5)
    v = split_params(jnp.asarray(np.random.default_rng(2).normal(size=30), jnp.float32))
    for batches in ([whole], streamed):
        hv = ravel_pytree(analysis.hvp(quadratic_loss, params, batches, v))[0]
        np.testing.assert_allclose(hv, hessian @ np.asarray(ravel_pytree(v)[0]),
                                   rtol=1e-5, atol=1e-5)
    # The default iteration count already settles a well-separated top 5.
    np.testing.assert_allclose(analysis.hessian_eigenvalues(
        quadratic_loss, params, streamed, k=5), TOP, rtol=1e-4)
    with pytest.raises(TypeError, match="one-shot iterator"):
        analysis.hvp(quadratic_loss, params, iter(streamed), v)


def test_spectral_density_puts_the_mass_on_the_eigenvalue_clusters():
    eigenvalues = np.array([1.0] * 15 + [5.0] * 15)
    rows, _ = quadratic_data(eigenvalues, num_examples=40)
    params = split_params(jnp.zeros(30, jnp.float32))
    grid, density = analysis.spectral_density(quadratic_loss, params, [{"a": rows}],
                                              num_iterations=30, num_runs=8)
    step = grid[1] - grid[0]
    assert np.sum(density) * step == pytest.approx(1.0, abs=1e-3)
    mass_low = np.sum(density[np.abs(grid - 1.0) < 0.5]) * step
    mass_high = np.sum(density[np.abs(grid - 5.0) < 0.5]) * step
    assert mass_low + mass_high == pytest.approx(1.0, abs=1e-3)
    assert mass_low == pytest.approx(0.5, abs=0.15)


def test_hvp_equals_jax_hessian_times_v_on_an_mlp():
    params, batch = mlp_problem()
    flat, unravel = ravel_pytree(params)
    dense = jax.jit(jax.hessian(lambda x: mlp_loss(unravel(x), batch)))(flat)
    v = jnp.asarray(np.random.default_rng(3).normal(size=flat.size), jnp.float32)
    hv = analysis.hvp(mlp_loss, params, pieces(batch, [8, 12]), unravel(v))
    np.testing.assert_allclose(ravel_pytree(hv)[0], dense @ v, rtol=1e-4, atol=1e-5)
    top = analysis.hessian_eigenvalues(mlp_loss, params, batch, k=3,
                                       num_iterations=flat.size)
    np.testing.assert_allclose(top, np.linalg.eigvalsh(np.asarray(dense, np.float64))
                               [::-1][:3], rtol=1e-4, atol=1e-5)


def test_top_eigenpair_and_its_warm_start():
    """The top eigenpair against numpy's eigh; a start on the top eigenvector
    needs one iteration, a start near it a few, where a random start does not."""
    eigenvalues = np.concatenate([[10.0, 9.0], np.linspace(0.0, 8.5, 28)])
    rows, hessian = quadratic_data(eigenvalues, num_examples=60)
    values, vectors = np.linalg.eigh(hessian)
    top = vectors[:, -1]
    params = split_params(jnp.zeros(30, jnp.float32))
    batches = [{"a": rows}]
    value, vector = analysis.top_eigenpair(quadratic_loss, params, batches, 30)
    assert value == pytest.approx(values[-1], rel=1e-5)
    assert np.linalg.norm(vector) == pytest.approx(1.0)
    assert abs(vector @ top) == pytest.approx(1.0, abs=1e-5)
    value, vector = analysis.top_eigenpair(quadratic_loss, params, batches, 1, start=-top)
    assert value == pytest.approx(10.0, rel=1e-5) and vector @ top == pytest.approx(-1.0)
    # Two iterations: from a slightly moved top eigenvector, close; from a
    # random vector, far (eigenvalues 9 and 8.5 are near the top).
    near = top + 0.05 * np.random.default_rng(3).normal(size=30) / np.sqrt(30)
    warm, _ = analysis.top_eigenpair(quadratic_loss, params, batches, 2, start=near)
    cold, _ = analysis.top_eigenpair(quadratic_loss, params, batches, 2, seed=0)
    assert abs(warm - 10.0) < 0.01 < abs(cold - 10.0)
    for bad in (np.zeros(30), np.ones(29), np.full(30, np.nan)):
        with pytest.raises(ValueError, match="start must be"):
            analysis.top_eigenpair(quadratic_loss, params, batches, 2, start=bad)
