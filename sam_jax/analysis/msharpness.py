"""m-sharpness (Foret et al. 2021, Sec. 4.1): sharpness measured m examples at a time.

For a set S of m examples with mean loss L_S,
    sharpness_S = max_{||e||_2 <= rho} L_S(w + e) - L_S(w),
and m-sharpness is its mean over the disjoint sets S of a batch. The maximum is
approximated by projected gradient ascent: the first step is SAM's,
e_1 = rho g / ||g||; each later step moves `step_size` along the normalised
gradient at w + e_t and projects back onto the ball. The estimate is the best
value seen over the iterates and e = 0 (all feasible), so it is >= 0, exactly 0
for rho = 0, and never decreases when steps are added.
The loss conventions (mean loss, BatchNorm in evaluation mode) are those of
`hessian.py`; per-set losses with batch statistics would mix sets and `e`.
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sam_jax import _sam
from sam_jax._sam import project_to_ball
from sam_jax._trees import tree_norm
from sam_jax.analysis.hessian import as_partial, batch_size


def _ascent(loss_fn, params, batch, rho, step_size, num_steps: int):
    """(best perturbation, best loss increase) for one set of examples."""
    def loss_at(e):
        return loss_fn(jax.tree_util.tree_map(jnp.add, params, e), batch)

    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    clean_loss, g = jax.value_and_grad(loss_at)(zeros)
    e = _sam.perturbation(g, params, rho)  # the SAM step rho g / ||g||
    best, best_e = jnp.zeros([], jnp.float32), zeros  # e = 0 is feasible
    for t in range(num_steps):
        last = t == num_steps - 1
        if last:
            loss = loss_at(e)
        else:
            loss, g = jax.value_and_grad(loss_at)(e)
        gain = (loss - clean_loss).astype(jnp.float32)
        better = gain > best
        best = jnp.where(better, gain, best)
        best_e = jax.tree_util.tree_map(lambda a, b: jnp.where(better, a, b), e, best_e)
        if not last:
            step = optax.tree.cast_like(
                optax.tree.scale(step_size / (tree_norm(g) + 1e-12), g), g)
            e = project_to_ball(jax.tree_util.tree_map(jnp.add, e, step), rho)
    # The ball of radius 0 is {w}: exactly 0, whatever the rounding of two passes.
    return best_e, jnp.where(rho > 0, best, 0.0)


@functools.partial(jax.jit, static_argnames=("num_steps",))
def _jit_ascent(loss_fn, params, batch, rho, step_size, num_steps):
    return _ascent(loss_fn, params, batch, rho, step_size, num_steps)


@functools.partial(jax.jit, static_argnames=("num_steps", "sets_per_call"))
def _sharpness_per_set(loss_fn, params, sets, rho, step_size, num_steps,
                       sets_per_call):
    return jax.lax.map(
        lambda s: _ascent(loss_fn, params, s, rho, step_size, num_steps)[1],
        sets, batch_size=sets_per_call)


def _check(rho, num_steps):
    if not rho >= 0:
        raise ValueError(f"rho={rho!r} must be >= 0")
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps!r} must be >= 1")


def ascent_perturbation(loss_fn, params, batch, rho: float, num_steps: int = 1,
                        step_size: Optional[float] = None):
    """(e, L(w + e) - L(w)): the worst perturbation found in the rho-ball, on `batch`.

    `num_steps` loss evaluations at perturbed weights (the first at SAM's e);
    `step_size` (default rho) is the length of each later ascent step.
    ||e|| <= rho always. The increase is >= 0 (e = 0 when nothing beats w).
    """
    _check(rho, num_steps)
    step_size = rho if step_size is None else step_size
    e, gain = _jit_ascent(as_partial(loss_fn), params, batch, jnp.float32(rho),
                          jnp.float32(step_size), num_steps)
    return e, float(gain)


def m_sharpness_per_set(loss_fn, params, batch, m: int, rho: float,
                        num_steps: int = 1, step_size: Optional[float] = None,
                        sets_per_call: Optional[int] = None) -> np.ndarray:
    """Sharpness of each consecutive set of m examples of `batch`, [N // m].

    The batch's N examples must be a multiple of m. `sets_per_call` sets are
    vectorised together (memory grows with it; default: about 64 examples'
    worth, at least one set); the rest runs in sequence.
    """
    _check(rho, num_steps)
    n = batch_size(batch)
    if m < 1 or n % m:
        raise ValueError(f"m={m} must be >= 1 and divide the {n} examples of the batch")
    num_sets = n // m
    sets = jax.tree_util.tree_map(
        lambda x: jnp.reshape(x, (num_sets, m) + tuple(np.shape(x)[1:])), batch)
    sets_per_call = min(num_sets, sets_per_call or max(1, 64 // m))
    step_size = rho if step_size is None else step_size
    values = _sharpness_per_set(as_partial(loss_fn), params, sets, jnp.float32(rho),
                                jnp.float32(step_size), num_steps, sets_per_call)
    return np.asarray(values, np.float64)


def m_sharpness(loss_fn, params, batch, m: int, rho: float, num_steps: int = 1,
                step_size: Optional[float] = None,
                sets_per_call: Optional[int] = None) -> float:
    """The paper's m-sharpness on `batch`: the mean over its sets of m examples."""
    return float(np.mean(m_sharpness_per_set(
        loss_fn, params, batch, m, rho, num_steps=num_steps, step_size=step_size,
        sets_per_call=sets_per_call)))
