"""Momentum-SAM (Becker, Altrock & Risse 2024, "Momentum-SAM: Sharpness Aware
Minimization without Computational Overhead"): the perturbation is along the
negative normalised momentum, so a step needs no ascent pass.

As the authors' SGD rule (MarlonBecker/MSAM, optimizer/msam.py, commit
780fa4f), the stored weights are the perturbed ones,
  w~_t = w_t - rho v_t / (||v_t|| + 1e-12),   (v_0 = 0: w~_0 = w_0)
and the one gradient g is taken at w~_t. A step un-perturbs, steps with torch
SGD's momentum (v_{t+1} = mu v_t + g + wd w~_t, w_{t+1} = w_t - lr v_{t+1}; the
weight decay, in either of our modes, sees the stored w~_t as theirs does) and
perturbs again with the new momentum. Evaluation is at the un-perturbed w_t
(their main.py moves back before each test), which `unperturbed` recovers from
the optimizer state. Only SGD with momentum and without Nesterov is theirs
(their AdamW_MSAM is a separate rule, not implemented here).

The method's own transform is the plain gradient; the rule is a wrapper of
the base optimizer (`msam`), so its state (the momentum and the stored
perturbation's scale) is the optimizer's and resumes with it.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from sam_jax import _sam
from sam_jax import family
from sam_jax import optimizers
from sam_jax import swa
from sam_jax._radius import check_rho
from sam_jax._trees import tree_norm


class MSAMState(NamedTuple):
    inner: Any  # the wrapped SGD's state (its momentum, the trace)
    scale: jnp.ndarray  # rho / (||v|| + eps): the stored w~ = w - scale * v


def momentum(inner_state):
    """v: the wrapped optimizer's momentum (optax.trace's `trace`)."""
    return optax.tree_utils.tree_get(inner_state, "trace")


def msam(inner: optax.GradientTransformation, rho: float, *,
         eps: float = 1e-12) -> optax.GradientTransformation:
    """`inner` (optax.sgd with momentum) stepping at the un-perturbed weights,
    its output moving the stored, perturbed weights.

    Args:
      inner: the base optimizer; its state must hold one optax.trace.
      rho: the radius of the perturbation along -v / ||v||.
      eps: added to ||v|| (the authors' 1e-12).
    """
    check_rho("msam", rho)

    def init_fn(params):
        return MSAMState(inner=inner.init(params), scale=jnp.zeros([], jnp.float32))

    def update_fn(updates, state, params=None):
        old = momentum(state.inner)
        at_w = None if params is None else unperturbed_weights(params, state)
        step, inner_state = inner.update(updates, state.inner, at_w)
        new = momentum(inner_state)
        scale = (rho / (tree_norm(new) + eps)).astype(jnp.float32)
        # w~_{t+1} - w~_t = step + scale_t v_t - scale_{t+1} v_{t+1}
        out = jax.tree_util.tree_map(
            lambda u, a, b: (u + state.scale * a - scale * b).astype(u.dtype),
            step, old, new)
        return out, MSAMState(inner=inner_state, scale=scale)

    return optax.GradientTransformation(init_fn, update_fn)


def unperturbed_weights(params, state: MSAMState):
    """w = w~ + scale v."""
    return jax.tree_util.tree_map(
        lambda w, v: (w + state.scale * v).astype(w.dtype), params,
        momentum(state.inner))


def unperturbed(params, opt_state):
    """The un-perturbed weights of the stored `params`, from the training
    chain's state (which holds one MSAMState): what is evaluated."""
    found = [s for s in jax.tree_util.tree_leaves(
        opt_state, is_leaf=lambda x: isinstance(x, MSAMState))
        if isinstance(s, MSAMState)]
    if len(found) != 1:
        raise ValueError(f"msam: the optimizer state holds {len(found)} MSAM states")
    return unperturbed_weights(params, found[0])


def _build(config, ctx):
    check_rho("msam", config.msam.rho)
    return _sam.plain_gradient(**family.common(ctx))


def _base(config, schedule):
    problem = _refuses(config)
    if problem:  # (validation says so first)
        raise ValueError(problem)
    return msam(optimizers.base_transform(config, schedule), config.msam.rho)


def _refuses(config):
    opt = config.optimizer
    if opt.name != "sgd" or not opt.momentum or opt.nesterov:
        return ("method='msam' perturbs along SGD's momentum: it needs "
                "optimizer.name='sgd' with momentum > 0 and nesterov=False (got "
                f"name={opt.name!r}, momentum={opt.momentum!r}, "
                f"nesterov={opt.nesterov!r})")
    if swa.enabled(config):
        return ("method='msam' stores perturbed weights, which SWA would average; "
                "leave swa.start_fraction unset")
    return None


METHOD = family.Method(
    "msam", "gradient at w - rho v/||v||, v the base SGD's momentum (no ascent pass)",
    "Becker, Altrock & Risse 2024", "sam_jax.msam", {
        "rho": family.Setting(3.0, "the radius along the momentum (the authors' "
                              "configs/default.ini and README: 3)"),
    }, _build, family.fixed_cost("1", "1"), base=_base, refuses=_refuses,
    evaluation_params=unperturbed, needs={"optimizer.nesterov": False})
