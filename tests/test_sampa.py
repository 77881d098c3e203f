"""SAMPa (sam_jax._sampa) against a numpy loop of the paper's recursion."""

import jax
import numpy as np
import optax

import logreg
from sam_jax import _sampa


def numpy_sampa(params, x, y, *, rho, mix, lr, steps, eps=1e-12):
    """x~_t = x_t + rho h/||h||; y_{t+1} = x_t - lr h; out = (1-mix) g(x~) + mix g(y);
    h <- g(y_{t+1}); x <- x - lr out (plain SGD). Returns each step's out."""
    h = {k: np.zeros_like(np.asarray(v, np.float64)) for k, v in params.items()}
    outs = []
    for _ in range(steps):
        perturbed = logreg.add(params, h, rho / (logreg.norm(h) + eps))
        optimistic = logreg.add(params, h, -lr)
        g_perturbed = logreg.grad(perturbed, x, y)
        h = logreg.grad(optimistic, x, y)
        out = logreg.add(logreg.scale(g_perturbed, 1 - mix), h, mix)
        outs.append(out)
        params = logreg.add(params, out, -lr)
    return outs


def test_recursion_over_steps_and_step_zero_is_sgd():
    params, x, y = logreg.problem(seed=11)
    rho, mix, lr, steps = 0.2, 0.2, 0.3, 5
    want = numpy_sampa(logreg.as64(params), x, y, rho=rho, mix=mix, lr=lr, steps=steps)
    tx = _sampa.sampa(rho, mix=mix, learning_rate=lr)
    grad_fn = logreg.jax_grad_fn(x, y)
    state = tx.init(params)
    for t in range(steps):
        out, state = tx.update(grad_fn(params), state, params, grad_fn=grad_fn)
        logreg.assert_close(out, want[t], rtol=1e-4, atol=1e-6)
        if t == 0:  # h = 0: both points are x_0, the plain gradient
            logreg.assert_close(out, logreg.grad(params, x, y))
        params = optax.apply_updates(params, {k: -lr * v for k, v in out.items()})
    assert float(state.info.gradient_evaluations) == 2


def test_gradient_at_w_is_not_used():
    # SAMPa never reads the caller's gradient at w: garbage there changes nothing.
    params, x, y = logreg.problem(seed=12)
    tx = _sampa.sampa(0.1, learning_rate=0.1)
    grad_fn = logreg.jax_grad_fn(x, y)
    garbage = jax.tree_util.tree_map(lambda v: np.full_like(v, 1e6), params)
    state = tx.init(params)
    a, _ = tx.update(grad_fn(params), state, params, grad_fn=grad_fn)
    b, _ = tx.update(garbage, state, params, grad_fn=grad_fn)
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(u, v)


def test_fused_and_sequential_evaluation_agree():
    params, x, y = logreg.problem(seed=22)
    grad_fn = logreg.jax_grad_fn(x, y)
    outs = []
    for fused in (True, False):
        tx = _sampa.sampa(0.2, mix=0.3, learning_rate=0.1, fused=fused)
        state = tx.init(params)
        for _ in range(3):
            out, state = tx.update(grad_fn(params), state, params, grad_fn=grad_fn)
        outs.append(out)
    for a, b in zip(jax.tree_util.tree_leaves(outs[0]), jax.tree_util.tree_leaves(outs[1])):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
