"""Tests of sam_jax.analysis.msharpness against closed forms on a quadratic of
known Hessian."""

import jax.numpy as jnp
import numpy as np
import pytest

from helpers import mlp_loss
from helpers import mlp_problem
from sam_jax import analysis


def centred_quadratic(num_examples=16, dim=6, seed=0):
    """loss_i(w) = 0.5 (w - c_i)^T H (w - c_i): a known Hessian H."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    hessian = q @ np.diag(np.linspace(0.5, 4.0, dim)) @ q.T
    centres = rng.normal(size=(num_examples, dim))
    w = rng.normal(size=dim)
    h = jnp.asarray(hessian, jnp.float32)

    def loss_fn(params, batch):
        d = params["w"] - batch["c"]
        return 0.5 * jnp.mean(jnp.einsum("ni,ij,nj->n", d, h, d))

    params = {"w": jnp.asarray(w, jnp.float32)}
    return loss_fn, params, {"c": centres.astype(np.float32)}, hessian, w, centres


def numpy_loss(w, hessian, centres):
    d = w - centres
    return 0.5 * np.mean(np.einsum("ni,ij,nj->n", d, hessian, d))


def test_m_sharpness_is_zero_at_rho_zero():
    params, batch = mlp_problem(num_examples=16)
    for steps in (1, 3):
        assert analysis.m_sharpness(mlp_loss, params, batch, m=4, rho=0.0,
                                    num_steps=steps) == 0.0


def test_one_step_m_sharpness_equals_the_closed_form():
    loss_fn, params, batch, hessian, w, centres = centred_quadratic()
    m, rho = 4, 0.3
    want = []
    for subset in np.split(centres, len(centres) // m):
        g = hessian @ (w - subset.mean(axis=0))
        e = rho * g / np.linalg.norm(g)
        want.append(numpy_loss(w + e, hessian, subset) - numpy_loss(w, hessian, subset))
    got = analysis.m_sharpness_per_set(loss_fn, params, batch, m=m, rho=rho)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    assert analysis.m_sharpness(loss_fn, params, batch, m=m, rho=rho) == \
        pytest.approx(np.mean(want), rel=1e-4)
    with pytest.raises(ValueError, match="m=5 must be >= 1 and divide the 16"):
        analysis.m_sharpness(loss_fn, params, batch, m=5, rho=rho)


def test_more_ascent_steps_never_decrease_and_stay_in_the_ball():
    loss_fn, params, batch, hessian, w, centres = centred_quadratic()
    rho = 0.5
    values = [analysis.m_sharpness(loss_fn, params, batch, m=8, rho=rho, num_steps=s)
              for s in (1, 3, 10)]
    assert all(b >= a for a, b in zip(values, values[1:])), values
    assert values[-1] > values[0]  # g is not H's top eigenvector: ascent helps
    e, gain = analysis.ascent_perturbation(loss_fn, params, batch, rho, num_steps=10)
    e = np.asarray(e["w"], np.float64)
    assert np.linalg.norm(e) <= rho * (1 + 1e-6)
    assert gain == pytest.approx(numpy_loss(w + e, hessian, centres)
                                 - numpy_loss(w, hessian, centres), rel=1e-4)
    g = hessian @ (w - centres.mean(axis=0))  # bound: rho |g| + rho^2 lmax / 2
    assert gain <= rho * np.linalg.norm(g) + 0.5 * rho ** 2 * 4.0 + 1e-5
    # The projection: outside points go to the sphere, inside points stay.
    far = {"w": jnp.full(6, 1.0)}
    near = {"w": jnp.full(6, 0.01)}
    np.testing.assert_allclose(np.linalg.norm(analysis.project_to_ball(far, rho)["w"]),
                               rho, rtol=1e-6)
    np.testing.assert_array_equal(analysis.project_to_ball(near, rho)["w"], near["w"])
