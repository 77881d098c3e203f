"""Random weight perturbation (sam_jax._rwp) against numpy: the mixed gradient,
and the noise's filter-wise scale."""

import jax
import numpy as np
import pytest

import logreg
from sam_jax import _rwp


@pytest.mark.parametrize("mix", [0.5, 1.0])
def test_mixes_the_gradient_at_the_noisy_weights_with_the_clean_one(mix):
    params, x, y = logreg.problem(seed=17)
    grad_fn = logreg.jax_grad_fn(x, y)
    tx = _rwp.rwp(0.05, mix=mix, seed=1)
    recorder = logreg.Recorder(x, y)
    out, state = tx.update(grad_fn(params), tx.init(params), params, grad_fn=recorder)
    noisy = recorder.weights[-1]
    want = logreg.add(logreg.scale(logreg.grad(noisy, x, y), mix),
                      logreg.grad(params, x, y), 1 - mix)
    logreg.assert_close(out, want, rtol=1e-4, atol=1e-6)
    assert logreg.norm(logreg.add(noisy, params, -1.0)) > 0
    assert float(state.info.gradient_evaluations) == 2


def test_noise_std_is_sigma_times_each_filters_norm():
    rng = np.random.default_rng(0)
    # A flax kernel (in, out) with very different output filters, and a bias.
    kernel = rng.normal(size=(400, 3)) * np.array([0.1, 1.0, 10.0])
    params = {"kernel": kernel.astype(np.float32), "bias": np.full(3, 2.0, np.float32)}
    sigma = 0.01
    draws = [_rwp.filter_noise(jax.random.PRNGKey(i), params, sigma) for i in range(40)]
    kernel_noise = np.stack([np.asarray(d["kernel"]) for d in draws])
    want_std = sigma * np.linalg.norm(kernel, axis=0)
    np.testing.assert_allclose(kernel_noise.std(axis=(0, 1)), want_std, rtol=0.05)
    bias_noise = np.stack([np.asarray(d["bias"]) for d in draws])
    np.testing.assert_allclose(bias_noise.std(), sigma * np.linalg.norm(params["bias"]),
                               rtol=0.2)


def test_fresh_noise_every_step():
    params, x, y = logreg.problem(seed=18)
    grad_fn = logreg.jax_grad_fn(x, y)
    tx = _rwp.rwp(0.05)
    state = tx.init(params)
    noises = []
    for _ in range(2):
        recorder = logreg.Recorder(x, y)
        _, state = tx.update(grad_fn(params), state, params, grad_fn=recorder)
        noises.append(logreg.add(recorder.weights[-1], params, -1.0))
    assert logreg.norm(logreg.add(noises[0], noises[1], -1.0)) > 1e-6
