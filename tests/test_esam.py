"""ESAM (sam_jax._esam): stochastic weight perturbation and sharpness-sensitive
data selection against numpy, the weights and examples it picks read back from
grad_fn (the update runs eagerly)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import logreg
import sam_jax
from sam_jax import _esam


class SubsetRecorder(logreg.Recorder):
    """grad_fn(weights, indices=...) on the chosen examples; records both."""

    def __init__(self, x, y):
        super().__init__(x, y)
        self.indices = []

    def __call__(self, params, indices=None):
        self.indices.append(None if indices is None else np.asarray(indices))
        x, y = (self.x, self.y) if indices is None else (self.x[indices], self.y[indices])
        self.weights.append({k: np.asarray(v, np.float64) for k, v in params.items()})
        return jax.grad(logreg.jax_loss)(params, x, y)


def example_losses_fn(x, y):
    return lambda p: jnp.logaddexp(0.0, -y * (x @ p["kernel"] + p["bias"]))


def test_keep_all_and_every_example_is_sam():
    params, x, y = logreg.problem(seed=13)
    grad_fn = logreg.jax_grad_fn(x, y)
    tx = _esam.esam(0.2, beta=1.0, gamma=1.0)
    out, _ = tx.update(grad_fn(params), tx.init(params), params, grad_fn=grad_fn)
    sam_tx = sam_jax.sam(0.2)
    want, _ = sam_tx.update(grad_fn(params), sam_tx.init(params), params, grad_fn=grad_fn)
    for a, b in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_perturbs_whole_tensors_with_probability_beta_and_radius_rho_over_beta():
    params, x, y = logreg.problem(seed=14)
    grad_fn = logreg.jax_grad_fn(x, y)
    rho, beta = 0.1, 0.5
    tx = _esam.esam(rho, beta=beta, gamma=1.0, seed=3)
    state = tx.init(params)
    g = logreg.grad(params, x, y)
    kept = []
    for step in range(60):
        recorder = logreg.Recorder(x, y)
        out, state = tx.update(grad_fn(params), state, params, grad_fn=recorder)
        e = logreg.add(recorder.weights[-1], params, -1.0)
        mask = {k: float(np.any(np.abs(e[k]) > 0)) for k in e}
        if step == 0:
            assert all(mask.values())  # every tensor at step 0
        else:
            kept += list(mask.values())
        g_m = {k: g[k] * mask[k] for k in g}
        if logreg.norm(g_m) > 0:
            want_e = logreg.scale(g_m, rho / beta / logreg.norm(g_m))
            logreg.assert_close(e, want_e, rtol=1e-4, atol=1e-7)
            logreg.assert_close(out, logreg.grad(logreg.add(params, want_e), x, y),
                                rtol=1e-4, atol=1e-6)
    assert 0.35 < np.mean(kept) < 0.65  # 118 Bernoulli(0.5) draws


@pytest.mark.parametrize("gamma", [0.25, 0.5])
def test_second_pass_on_the_examples_whose_loss_rises_most(gamma):
    params, x, y = logreg.problem(n=32, seed=15)
    grad_fn = logreg.jax_grad_fn(x, y)
    rho = 0.5
    tx = _esam.esam(rho, beta=1.0, gamma=gamma)
    recorder = SubsetRecorder(x, y)
    losses = example_losses_fn(x, y)
    out, state = tx.update(grad_fn(params), tx.init(params), params, grad_fn=recorder,
                           example_losses=losses(params), example_losses_fn=losses)
    g = logreg.grad(params, x, y)
    e = logreg.scale(g, rho / logreg.norm(g))
    perturbed = logreg.add(params, e)
    change = logreg.example_losses(perturbed, x, y) - logreg.example_losses(params, x, y)
    count = int(gamma * len(y))
    want = set(np.argsort(-change)[:count].tolist())
    assert set(recorder.indices[-1].tolist()) == want
    chosen = sorted(want)
    logreg.assert_close(out, logreg.grad(perturbed, x[chosen], y[chosen]), rtol=1e-4,
                        atol=1e-6)
    assert float(state.info.gradient_evaluations) == pytest.approx(1 + count / len(y))


def test_selection_needs_the_per_example_losses():
    params, x, y = logreg.problem(seed=16)
    grad_fn = logreg.jax_grad_fn(x, y)
    tx = _esam.esam(0.1, gamma=0.5)
    with pytest.raises(ValueError, match="example_losses"):
        tx.update(grad_fn(params), tx.init(params), params, grad_fn=grad_fn)
