"""The extragradient method (sam_jax._extragradient) against its closed form,
and its relation to SAM: the same map with the sign and the normalisation of
the extrapolation changed."""

import optax
import pytest

import logreg
from sam_jax import _extragradient
import sam_jax


def update(tx, params, x, y, recorder=None):
    grad_fn = recorder or logreg.jax_grad_fn(x, y)
    out, state = tx.update(logreg.jax_grad_fn(x, y)(params), tx.init(params), params,
                           grad_fn=grad_fn)
    return out, state


@pytest.mark.parametrize("gamma", [0.01, 0.1, 1.0])
def test_gradient_at_the_descent_extrapolation(gamma):
    params, x, y = logreg.problem(seed=7)
    out, state = update(_extragradient.extragradient(gamma), params, x, y)
    g = logreg.grad(params, x, y)
    logreg.assert_close(out, logreg.grad(logreg.add(params, g, -gamma), x, y))
    assert float(state.info.gradient_evaluations) == 2


def test_gamma_follows_the_learning_rate_schedule():
    params, x, y = logreg.problem(seed=8)
    schedule = optax.linear_schedule(0.5, 0.1, 4)
    tx = _extragradient.extragradient(schedule)
    grad_fn = logreg.jax_grad_fn(x, y)
    state = tx.init(params)
    for count in range(3):
        out, state = tx.update(grad_fn(params), state, params, grad_fn=grad_fn)
        gamma = float(schedule(count))
        g = logreg.grad(params, x, y)
        logreg.assert_close(out, logreg.grad(logreg.add(params, g, -gamma), x, y))


def test_extragradient_and_sam_differ_in_the_sign_and_norm_of_the_step():
    # Both evaluate the gradient at w + e; extragradient's e = -gamma g, SAM's
    # e = +rho g / ||g||. With gamma = rho / ||g||, the two e are opposite.
    params, x, y = logreg.problem(seed=9)
    rho = 0.2
    g = logreg.grad(params, x, y)
    gamma = rho / logreg.norm(g)
    eg, sam = logreg.Recorder(x, y), logreg.Recorder(x, y)
    update(_extragradient.extragradient(gamma), params, x, y, eg)
    update(sam_jax.sam(rho), params, x, y, sam)
    e_eg = logreg.add(eg.weights[-1], params, -1.0)
    e_sam = logreg.add(sam.weights[-1], params, -1.0)
    logreg.assert_close(e_eg, logreg.scale(e_sam, -1.0), rtol=1e-4, atol=1e-6)
    logreg.assert_close(e_sam, logreg.scale(g, gamma), rtol=1e-4, atol=1e-6)
