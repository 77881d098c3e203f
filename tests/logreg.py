"""An independent reference problem for the SAM family's tests: logistic
regression, y in {-1, +1}, L(w, b) = mean log(1 + exp(-y (x.w + b))), with its
closed-form gradient in numpy float64, and the same loss in JAX.

The weights are named like a flax Dense layer ({"kernel", "bias"}) so that
rules that depend on the parameter's name (ASAM's) can be tested.
"""

import jax
import jax.numpy as jnp
import numpy as np


def problem(n=64, d=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = np.where(rng.normal(size=n) + x[:, 0] > 0, 1.0, -1.0).astype(np.float32)
    params = {"kernel": rng.normal(size=d).astype(np.float32) * 0.5,
              "bias": np.float32(0.3)}
    return params, x, y


def as64(params):
    return {k: np.asarray(v, np.float64) for k, v in params.items()}


def example_losses(params, x, y):
    z = x @ np.asarray(params["kernel"], np.float64) + np.float64(params["bias"])
    return np.logaddexp(0.0, -y * z)


def grad(params, x, y):
    """Closed-form gradient of the mean loss, float64."""
    w, b = np.asarray(params["kernel"], np.float64), np.float64(params["bias"])
    z = x @ w + b
    s = -y / (1.0 + np.exp(y * z))  # dL/dz per example
    return {"kernel": x.T @ s / len(y), "bias": np.mean(s)}


def norm(tree):
    return np.sqrt(sum(np.sum(np.square(v)) for v in tree.values()))


def vdot(a, b):
    return sum(np.sum(a[k] * b[k]) for k in a)


def add(a, b, scale=1.0):
    return {k: np.asarray(a[k], np.float64) + scale * np.asarray(b[k], np.float64)
            for k in a}


def scale(a, factor):
    return {k: factor * np.asarray(v, np.float64) for k, v in a.items()}


def jax_loss(params, x, y):
    z = x @ params["kernel"] + params["bias"]
    return jnp.mean(jnp.logaddexp(0.0, -y * z))


def jax_grad_fn(x, y):
    return lambda p: jax.grad(jax_loss)(p, x, y)


def run_updates(tx, params, x, y, steps=1):
    """`steps` updates of `tx` at the same params (the transform's own state
    advances): ([each update's output], the final state)."""
    grad_fn = jax_grad_fn(x, y)
    state = tx.init(params)
    outs = []
    for _ in range(steps):
        out, state = tx.update(grad_fn(params), state, params, grad_fn=grad_fn)
        outs.append(out)
    return outs, state


def assert_close(a, b, rtol=1e-5, atol=1e-6):
    for k in b:
        np.testing.assert_allclose(np.asarray(a[k], np.float64), b[k], rtol=rtol,
                                   atol=atol, err_msg=k)


class Recorder:
    """grad_fn that records the weights it is asked about (call update eagerly)."""

    def __init__(self, x, y):
        self.x, self.y, self.weights = x, y, []

    def __call__(self, params, **kwargs):
        self.weights.append({k: np.asarray(v, np.float64) for k, v in params.items()})
        return jax.grad(jax_loss)(params, self.x, self.y)
