"""Tests of sam_jax.analysis.landscape: filter-normalised directions, and loss
surfaces and interpolations whose points are losses computed directly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import mlp_loss
from helpers import mlp_problem
from helpers import pieces
from sam_jax import analysis


def test_filter_normalised_direction_matches_each_filters_norm():
    rng = np.random.default_rng(0)
    params = {"conv": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)},
              "dense": {"kernel": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32),
                        "bias": jnp.ones(3)},
              "bn": {"scale": jnp.ones(4), "bias": jnp.zeros(4)}}
    d = analysis.filter_normalized_direction(params, seed=1)
    for out in range(4):
        np.testing.assert_allclose(
            np.linalg.norm(d["conv"]["kernel"][..., out]),
            np.linalg.norm(params["conv"]["kernel"][..., out]), rtol=1e-5)
    for out in range(3):
        np.testing.assert_allclose(np.linalg.norm(d["dense"]["kernel"][:, out]),
                                   np.linalg.norm(params["dense"]["kernel"][:, out]),
                                   rtol=1e-5)
    for zero in (d["dense"]["bias"], d["bn"]["scale"], d["bn"]["bias"]):
        np.testing.assert_array_equal(zero, 0.0)
    assert not np.allclose(d["conv"]["kernel"], params["conv"]["kernel"])
    other = analysis.filter_normalized_direction(params, seed=2)
    assert not np.allclose(d["conv"]["kernel"], other["conv"]["kernel"])


def test_landscape_and_interpolation_endpoints_are_the_losses():
    params, batch = mlp_problem()
    streamed = pieces(batch, [5, 15])
    loss = float(mlp_loss(params, batch))  # the whole set in one batch
    d1 = analysis.filter_normalized_direction(params, seed=0)
    d2 = analysis.filter_normalized_direction(params, seed=1)
    line = analysis.landscape_1d(mlp_loss, params, streamed, d1, [-0.5, 0.0, 0.5])
    assert line[1] == pytest.approx(loss, rel=1e-6)
    shifted = jax.tree_util.tree_map(lambda w, d: w + 0.5 * d, params, d1)
    assert line[2] == pytest.approx(float(mlp_loss(shifted, batch)), rel=1e-5)
    surface = analysis.landscape_2d(mlp_loss, params, streamed, d1, d2,
                                    [0.0, 0.3], [-0.2, 0.0])
    assert surface.shape == (2, 2) and surface[0, 1] == pytest.approx(loss, rel=1e-6)
    both = jax.tree_util.tree_map(lambda w, a, b: w + 0.3 * a - 0.2 * b, params, d1, d2)
    assert surface[1, 0] == pytest.approx(float(mlp_loss(both, batch)), rel=1e-5)
    other_params, _ = mlp_problem(seed=1)
    path = analysis.interpolate(mlp_loss, params, other_params, streamed, [0.0, 0.5, 1.0])
    assert path[0] == pytest.approx(loss, rel=1e-6)
    assert path[2] == pytest.approx(float(mlp_loss(other_params, batch)), rel=1e-6)
    middle = jax.tree_util.tree_map(lambda a, b: 0.5 * (a + b), params, other_params)
    assert path[1] == pytest.approx(float(mlp_loss(middle, batch)), rel=1e-5)
