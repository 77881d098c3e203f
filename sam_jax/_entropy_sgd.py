"""Entropy-SGD (Chaudhari et al., ICLR 2017): descend the local entropy, whose
gradient comes from a Langevin inner loop.

As the authors' Lua code (ucla-vision/entropy-sgd, entropyoptim.lua), which
the README says made the paper's experiments; one outer step t = 1, 2, ...:
  gamma_t = gamma (1 + scoping)^t
  x' = x, mu = x, m = 0
  L times:
    d  = grad L(x');  m = 0.9 m + d;  d = d + 0.9 m          (Nesterov, inner)
    d  = d - gamma_t (x - x') + (noise / sqrt(0.5 inner_lr)) xi,  xi ~ N(0, I)
    x' = x' - inner_lr d
    mu = mean_decay mu + (1 - mean_decay) x'
  outer direction: (x - mu) / lr_scale
The Lua code steps x <- x - lr_outer (x - mu) without momentum, lr_outer from
1 down to 0.04; returning (x - mu) / lr_scale with lr_scale the base learning
rate's peak makes a momentum-free base SGD at its peak step to mu, as the Lua
code's first epochs do (methods.py builds that base).

Differences from the authors' code: every inner step uses the step's batch
(the code draws a new minibatch per inner step), the weight decay is inside
the loss (the code adds it after the inner momentum), and the chain is global:
each inner gradient is the mean over groups and devices.
The caller's gradient at x is not used (its pass is dead code that XLA drops,
but for what the caller logs): L gradient evaluations per step.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from sam_jax import family
from sam_jax.ranges import check_number
from sam_jax._step_info import StepInfo, check_update_args, empty_info, groups_info
from sam_jax.collectives import AxisName, per_device
from sam_jax.groups import broadcast_groups, num_groups_of, plain_form, pool, split_aux


class EntropySGDState(NamedTuple):
    count: jnp.ndarray
    info: StepInfo


def langevin_noise(key, params):
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [jax.random.normal(k, w.shape, jnp.float32) for k, w in zip(keys, leaves)])


def entropy_sgd(*, inner_steps: int = 5, gamma: float = 0.03, scoping: float = 1e-3,
                inner_lr: float = 0.1, noise: float = 1e-4, mean_decay: float = 0.75,
                inner_momentum: float = 0.9, lr_scale: float = 0.1,
                axis_name: AxisName = None, grouped: bool = False, aux_init=None,
                seed: int = 0) -> optax.GradientTransformationExtraArgs:
    """Entropy-SGD's outer direction (x - mu) / lr_scale after L Langevin steps.

    Args:
      inner_steps: L, the Langevin steps (gradient evaluations) per step.
      gamma, scoping: the coupling gamma_t = gamma (1 + scoping)^t.
      inner_lr: eta', the Langevin step size.
      noise: epsilon, the thermal noise.
      mean_decay: the running mean's decay (the code's beta1 = 0.75).
      inner_momentum: the inner loop's Nesterov momentum (0.9 in the code).
      lr_scale: see the module docstring (the base learning rate's peak).
      axis_name, grouped, aux_init: as in `sam_jax.sam`.
      seed: the noise draws, folded with the step and the inner step.
    """
    check_number("entropy_sgd.inner_steps", inner_steps, 1, integer=True)
    inner_steps = int(inner_steps)
    for name, value in (("gamma", gamma), ("scoping", scoping), ("noise", noise)):
        check_number(f"entropy_sgd.{name}", value, 0)
    for name, value in (("inner_lr", inner_lr), ("lr_scale", lr_scale)):
        check_number(f"entropy_sgd.{name}", value, 0, low_open=True)
    for name, value in (("mean_decay", mean_decay), ("inner_momentum", inner_momentum)):
        check_number(f"entropy_sgd.{name}", value, 0, 1, high_open=True)
    has_aux = aux_init is not None

    def init_fn(params):
        return EntropySGDState(count=jnp.zeros([], jnp.int32),
                               info=empty_info(params, aux_init))

    def update_fn(updates, state, params=None, *, grad_fn=None, aux=None, **extra_args):
        del aux, extra_args
        check_update_args("entropy_sgd", params, grad_fn)
        num_groups = num_groups_of(updates)
        gamma_t = gamma * (1.0 + scoping) ** (state.count + 1).astype(jnp.float32)
        key = jax.random.fold_in(jax.random.PRNGKey(seed), state.count)
        x = jax.tree_util.tree_map(lambda w: w.astype(jnp.float32), params)
        zeros = jax.tree_util.tree_map(jnp.zeros_like, x)
        noise_scale = noise / jnp.sqrt(0.5 * inner_lr)

        def inner(carry, i):
            x_prime, mu, momentum, _ = carry
            weights = jax.tree_util.tree_map(lambda a, w: a.astype(w.dtype), x_prime,
                                             params)
            grads, aux_i = split_aux(
                grad_fn(per_device(broadcast_groups(weights, num_groups), axis_name)),
                has_aux)
            d = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32),
                                       pool(grads, axis_name))
            momentum = jax.tree_util.tree_map(lambda m, a: inner_momentum * m + a,
                                              momentum, d)
            xi = langevin_noise(jax.random.fold_in(key, i), params)
            d = jax.tree_util.tree_map(
                lambda a, m, xc, xp, n: a + inner_momentum * m - gamma_t * (xc - xp)
                + noise_scale * n, d, momentum, x, x_prime, xi)
            x_prime = jax.tree_util.tree_map(lambda xp, a: xp - inner_lr * a, x_prime, d)
            mu = jax.tree_util.tree_map(
                lambda m, xp: mean_decay * m + (1 - mean_decay) * xp, mu, x_prime)
            last_aux = None if aux_i is None else pool(aux_i, axis_name)
            return (x_prime, mu, momentum, last_aux), None

        first_aux = None if aux_init is None else jax.tree_util.tree_map(
            lambda a: jnp.zeros(jnp.shape(a), jnp.result_type(a)), aux_init)
        # Unrolled: XLA:CPU runs a model's passes inside a while loop many times
        # slower than the same passes unrolled (measured: 14x for WRN-10-1 at L = 5).
        carry = (x, x, zeros, first_aux)
        for i in range(inner_steps):
            carry, _ = inner(carry, i)
        x_prime, mu, _, last_aux = carry
        out = jax.tree_util.tree_map(lambda xc, m, w: ((xc - m) / lr_scale).astype(w.dtype),
                                     x, mu, params)
        stacked = broadcast_groups(out, num_groups)
        info = groups_info(evaluations=inner_steps, rho=gamma_t, g=None, e=None,
                           out=stacked,
                           aux=None if last_aux is None else broadcast_groups(
                               last_aux, num_groups),
                           params=params, axis_name=None)
        return out, EntropySGDState(count=optax.safe_increment(state.count), info=info)

    return optax.GradientTransformationExtraArgs(init_fn, plain_form(update_fn, grouped))


def _build(config, ctx):
    c = config.entropy_sgd
    return entropy_sgd(
        inner_steps=c.inner_steps, gamma=c.gamma, scoping=c.scoping,
        inner_lr=c.inner_lr, noise=c.noise, mean_decay=c.mean_decay,
        lr_scale=config.optimizer.learning_rate, seed=ctx.seed, **family.common(ctx))


def _outer_step(config, schedule):
    """The outer step x - mu: plain SGD (no momentum), or the Adam(W) the
    config asks for."""
    from sam_jax import optimizers
    if config.optimizer.name in ("adam", "adamw"):
        return optimizers.base_transform(config, schedule)
    return optax.sgd(schedule)


METHOD = family.Method(
    "entropy_sgd", "L Langevin steps on the coupled loss; outer step x - mu",
    "Chaudhari et al., ICLR 2017", "sam_jax.entropy_sgd", {
        "inner_steps": family.Setting(5, "L (the paper's CIFAR runs: 20)"),
        "gamma": family.Setting(0.03, 'the coupling ("scope")'),
        "scoping": family.Setting(1e-3, "gamma_t = gamma (1 + scoping)^t"),
        "inner_lr": family.Setting(0.1, "eta'"),
        "noise": family.Setting(1e-4, "epsilon"),
        "mean_decay": family.Setting(0.75, "the running mean mu's decay"),
    }, _build, lambda c: (str(c.entropy_sgd.inner_steps), str(c.entropy_sgd.inner_steps)),
    accumulates=False, base=_outer_step)
