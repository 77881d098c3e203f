"""Shake-Shake and ShakeDrop: per-example random gates, different forward/backward.

Both ops mix with one scale in the forward pass and another in the backward
pass: `backward + stop_gradient(forward - backward)` has the forward value and
the backward gradient. Gates are drawn per example (shape (batch, 1, 1, 1)) from
an explicit key, so a model's output is a pure function of its "dropout" key and
SAM's two passes share the draws. Follows the official code's models/utils.py.
Gates are drawn in float32 and then cast to the activations' dtype, so a
bfloat16 model sees the float32 model's draws (rounded), not other ones.

`true_gradient=True` (the official code's flag, commit c2b0a5f "true gradient
fix") makes the backward gate equal the forward one: the exact gradient of the
forward computation. SAM's first (ascent) pass uses it; the second pass, whose
gradient is the update, keeps the independently drawn backward gate. The same
key gives the same forward draws either way.
"""

import jax
import jax.numpy as jnp


def _mix(forward, backward):
    """Value of `forward`, gradient of `backward`."""
    return backward + jax.lax.stop_gradient(forward - backward)


def _per_example_shape(x):
    return (x.shape[0],) + (1,) * (x.ndim - 1)


def _uniform(key, shape, dtype, low=0.0, high=1.0):
    """U[low, high) drawn in float32 whatever `dtype` (the draws do not depend
    on the compute dtype), then cast to it."""
    return jax.random.uniform(key, shape, jnp.float32, low, high).astype(dtype)


def shake_shake(branch_a, branch_b, forward_gate, backward_gate):
    """gate * a + (1 - gate) * b with `forward_gate` forward, `backward_gate` backward."""
    forward = branch_a * forward_gate + branch_b * (1.0 - forward_gate)
    backward = branch_a * backward_gate + branch_b * (1.0 - backward_gate)
    return _mix(forward, backward)


def shake_shake_train(branch_a, branch_b, rng, true_gradient: bool = False):
    """Shake-Shake with independent U[0, 1] per-example forward and backward
    gates (the backward gate = the forward one with `true_gradient`)."""
    forward_key, backward_key = jax.random.split(rng)
    shape = _per_example_shape(branch_a)
    forward_gate = _uniform(forward_key, shape, branch_a.dtype)
    backward_gate = (forward_gate if true_gradient else
                     _uniform(backward_key, shape, branch_a.dtype))
    return shake_shake(branch_a, branch_b, forward_gate, backward_gate)


def shake_shake_eval(branch_a, branch_b):
    """The expected gate, 0.5: an even blend of the branches."""
    return 0.5 * (branch_a + branch_b)


def shake_drop(x, forward_scale, backward_scale):
    """x * forward_scale in the forward pass, gradient through x * backward_scale."""
    return _mix(x * forward_scale, x * backward_scale)


def shake_drop_train(x, keep_prob, rng, alpha_range=(-1.0, 1.0), beta_range=(0.0, 1.0),
                     true_gradient: bool = False):
    """ShakeDrop (Yamada et al. 2018, eqn. 6): scale b + alpha - b * alpha forward,
    b + beta - b * beta backward, b ~ Bernoulli(keep_prob), per example
    (beta = alpha with `true_gradient`).

    b = 1 keeps the residual branch as is; b = 0 scales it by alpha (beta).
    """
    keep_key, alpha_key, beta_key = jax.random.split(rng, 3)
    shape = _per_example_shape(x)
    keep = jax.random.bernoulli(keep_key, keep_prob, shape).astype(x.dtype)
    alpha = _uniform(alpha_key, shape, x.dtype, *alpha_range)
    beta = (alpha if true_gradient else _uniform(beta_key, shape, x.dtype, *beta_range))
    return shake_drop(x, keep + alpha - keep * alpha, keep + beta - keep * beta)


def shake_drop_eval(x, keep_prob, alpha_range=(-1.0, 1.0)):
    """x times the expected forward scale, p + E[alpha] - p * E[alpha]."""
    mean_alpha = 0.5 * (alpha_range[0] + alpha_range[1])
    return x * (keep_prob + mean_alpha - keep_prob * mean_alpha)
