"""Entropy-SGD (sam_jax._entropy_sgd): the inner Langevin loop against a
Python loop with the same noise, written from the authors' Lua code."""

import jax
import numpy as np
import pytest

import logreg
from sam_jax import _entropy_sgd


def numpy_entropy_sgd(params, x, y, *, count, seed, inner_steps, gamma, scoping,
                      inner_lr, noise, mean_decay, momentum, lr_scale):
    gamma_t = gamma * (1 + scoping) ** (count + 1)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), count)
    x_prime, mu = logreg.as64(params), logreg.as64(params)
    m = {k: np.zeros_like(v) for k, v in mu.items()}
    for i in range(inner_steps):
        xi = {k: np.asarray(v, np.float64) for k, v in _entropy_sgd.langevin_noise(
            jax.random.fold_in(key, i), params).items()}
        d = logreg.grad(x_prime, x, y)
        m = {k: momentum * m[k] + d[k] for k in d}
        d = {k: d[k] + momentum * m[k] - gamma_t * (params[k] - x_prime[k])
             + noise / np.sqrt(0.5 * inner_lr) * xi[k] for k in d}
        x_prime = {k: x_prime[k] - inner_lr * d[k] for k in d}
        mu = {k: mean_decay * mu[k] + (1 - mean_decay) * x_prime[k] for k in d}
    return {k: (np.asarray(params[k], np.float64) - mu[k]) / lr_scale for k in mu}


@pytest.mark.parametrize("noise", [0.0, 1e-2])
def test_outer_direction_after_the_inner_loop(noise):
    params, x, y = logreg.problem(seed=19)
    settings = dict(inner_steps=4, gamma=0.1, scoping=0.01, inner_lr=0.2, noise=noise,
                    mean_decay=0.75, lr_scale=0.1)
    tx = _entropy_sgd.entropy_sgd(seed=5, **settings)
    grad_fn = logreg.jax_grad_fn(x, y)
    state = tx.init(params)
    for count in range(2):
        out, state = tx.update(grad_fn(params), state, params, grad_fn=grad_fn)
        want = numpy_entropy_sgd(params, x, y, count=count, seed=5, momentum=0.9,
                                 **settings)
        logreg.assert_close(out, want, rtol=2e-4, atol=1e-6)
    assert float(state.info.gradient_evaluations) == 4


def test_more_coupling_keeps_the_chain_closer_to_x():
    params, x, y = logreg.problem(seed=20)
    grad_fn = logreg.jax_grad_fn(x, y)
    sizes = []
    for gamma in (0.0, 5.0):  # gamma * inner_lr < 1: the coupling is stable
        tx = _entropy_sgd.entropy_sgd(inner_steps=5, gamma=gamma, noise=0.0,
                                      inner_lr=0.05)
        out, _ = tx.update(grad_fn(params), tx.init(params), params, grad_fn=grad_fn)
        sizes.append(logreg.norm(logreg.as64(out)))
    assert sizes[1] < 0.9 * sizes[0]
