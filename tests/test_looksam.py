"""LookSAM (sam_jax._looksam) against a numpy loop of its update rule."""

import optax
import pytest

import logreg
from sam_jax import _looksam


def numpy_looksam(params, x, y, *, rho, k, alpha, lr, steps):
    """The rule over `steps` steps of plain SGD; returns each step's gradient."""
    outs, direction = [], None
    for t in range(steps):
        g = logreg.grad(params, x, y)
        if t % k == 0:
            g_s = logreg.grad(logreg.add(params, logreg.scale(g, rho / logreg.norm(g))),
                              x, y)
            g_v = logreg.add(g_s, g, -logreg.vdot(g_s, g) / logreg.norm(g) ** 2)
            direction = logreg.scale(g_v, 1.0 / logreg.norm(g_v))
            out = g_s
        else:
            out = logreg.add(g, direction, alpha * logreg.norm(g))
        outs.append(out)
        params = logreg.add(params, out, -lr)
    return outs


@pytest.mark.parametrize("k", [1, 3])
def test_full_step_every_k_and_reuse_between(k):
    params, x, y = logreg.problem(seed=10)
    rho, alpha, lr, steps = 0.3, 0.7, 0.5, 7
    want = numpy_looksam(logreg.as64(params), x, y, rho=rho, k=k, alpha=alpha, lr=lr,
                         steps=steps)
    tx = _looksam.looksam(rho, k=k, alpha=alpha)
    grad_fn = logreg.jax_grad_fn(x, y)
    state = tx.init(params)
    evaluations = []
    for t in range(steps):
        out, state = tx.update(grad_fn(params), state, params, grad_fn=grad_fn,
                               aux={})
        logreg.assert_close(out, want[t], rtol=1e-4, atol=1e-6)
        evaluations.append(float(state.info.gradient_evaluations))
        params = optax.apply_updates(params, {k_: -lr * v for k_, v in out.items()})
    assert evaluations == [2.0 if t % k == 0 else 1.0 for t in range(steps)]


def test_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="k=0"):
        _looksam.looksam(0.05, k=0)
    with pytest.raises(ValueError, match="alpha"):
        _looksam.looksam(0.05, alpha=-1.0)
