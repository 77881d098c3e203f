"""Loss landscapes: random filter-normalised slices and paths between solutions.

Filter normalisation (Li, Xu, Taylor, Studer & Goldstein, NeurIPS 2018): a
Gaussian direction d is rescaled filter by filter, d_f <- d_f ||w_f|| / ||d_f||,
so that a step along d is equally large, relative to the weights, in every
layer, whatever their scale (BatchNorm makes a network invariant to the scale
of the filters before it, so raw directions would mislead).
Convention here (flax layouts, output units on the LAST axis):
- a filter is one output unit of a weight with >= 2 axes: a conv kernel
  [kh, kw, in, out] has `out` filters of kh * kw * in weights; a dense kernel
  [in, out] has `out` neurons of `in` weights;
- parameters with <= 1 axis (biases, BatchNorm scales and offsets) get a zero
  direction: they stay at their trained values (Li et al.'s "ignore biasbn");
- BatchNorm running statistics are not parameters: `loss_fn` keeps them fixed.
Losses follow `hessian.py`: mean over the examples of `batches`.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sam_jax.analysis.hessian import as_batches, as_partial, batch_size


def filter_normalized_direction(params, seed: int = 0):
    """A random direction shaped like `params`, filter-normalised (see above)."""
    rng = np.random.default_rng(seed)

    def direction(w):
        w = np.asarray(w)
        if w.ndim <= 1:
            return jnp.zeros(w.shape, w.dtype)
        d = rng.standard_normal(w.shape)
        axes = tuple(range(w.ndim - 1))
        w_norm = np.sqrt(np.sum(np.square(w.astype(np.float64)), axis=axes))
        d_norm = np.sqrt(np.sum(np.square(d), axis=axes))
        return jnp.asarray(d * (w_norm / np.maximum(d_norm, 1e-30)), w.dtype)

    return jax.tree_util.tree_map(direction, params)


@jax.jit
def _combination_loss(loss_fn, trees, coefficients, batch):
    # sum_i c_i tree_i, so that coefficients (1, 0, ...) or (0, 1) reproduce a
    # tree bit for bit (0 * x = 0, 1 * x = x, x + 0 = x).
    combined = jax.tree_util.tree_map(
        lambda *xs: sum((c * x).astype(x.dtype) for c, x in zip(coefficients, xs)),
        *trees)
    return loss_fn(combined, batch)


def _mean_combination_loss(loss_fn, trees, coefficients, batches) -> float:
    total, count = 0.0, 0
    coefficients = jnp.asarray(coefficients, jnp.float32)
    for batch in as_batches(batches):
        n = batch_size(batch)
        total += n * float(_combination_loss(loss_fn, trees, coefficients, batch))
        count += n
    if not count:
        raise ValueError("batches is empty")
    return total / count


def landscape_1d(loss_fn, params, batches, direction,
                 alphas: Sequence[float]) -> np.ndarray:
    """Mean loss at params + alpha * direction for each alpha, [len(alphas)]."""
    loss_fn = as_partial(loss_fn)
    return np.array([_mean_combination_loss(loss_fn, (params, direction), (1.0, a),
                                            batches) for a in alphas])


def landscape_2d(loss_fn, params, batches, d1, d2, alphas: Sequence[float],
                 betas: Sequence[float]) -> np.ndarray:
    """Mean loss at params + alpha d1 + beta d2, [len(alphas), len(betas)]."""
    loss_fn = as_partial(loss_fn)
    return np.array([[_mean_combination_loss(loss_fn, (params, d1, d2), (1.0, a, b),
                                             batches) for b in betas] for a in alphas])


def interpolate(loss_fn, params_a, params_b, batches,
                alphas: Sequence[float]) -> np.ndarray:
    """Mean loss at (1 - alpha) params_a + alpha params_b, [len(alphas)].

    alpha = 0 and 1 are the two solutions exactly; alphas outside [0, 1]
    extrapolate. `params_*` are whatever `loss_fn` takes: pass whole flax
    variables ({"params", "batch_stats"}) to interpolate the BatchNorm running
    statistics along with the weights (the convention of `run_io`).
    """
    loss_fn = as_partial(loss_fn)
    return np.array([_mean_combination_loss(loss_fn, (params_a, params_b),
                                            (1.0 - a, a), batches) for a in alphas])
