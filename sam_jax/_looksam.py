"""LookSAM (Liu et al., CVPR 2022): SAM's second pass only every k steps.

On every k-th step (step 0 included) a full SAM step, which also stores the
direction of g_v, the component of the SAM gradient g_s orthogonal to g:
  g_v = g_s - <g_s, g> / ||g||^2 g,   v = g_v / ||g_v||.
On the steps between, one pass: g + alpha ||g|| v (the stored direction,
scaled to the current gradient's norm). The paper's authors released no code;
this follows the community implementation MarlonBecker/MSAM (optimizer/
looksam.py), whose g, g_s and g_v are global (pooled over groups and devices),
while the full steps perturb per group as SAM does here.
"""

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from sam_jax import family
from sam_jax.ranges import check_number
from sam_jax import _sam
from sam_jax._radius import check_rho
from sam_jax._step_info import StepInfo, check_update_args, empty_info, groups_info
from sam_jax._trees import tree_norm, tree_vdot
from sam_jax.collectives import AxisName, pmean
from sam_jax.groups import add_to_groups, evaluate, plain_form, pool


class LookSAMState(NamedTuple):
    count: jnp.ndarray
    direction: Any  # v = g_v / ||g_v|| of the last full step (float32, like params)
    info: StepInfo


def looksam(rho: float, *, k: int = 5, alpha: float = 0.7, eps: float = 1e-12,
            axis_name: AxisName = None, grouped: bool = False, aux_init=None,
            full_step: Optional[bool] = None) -> optax.GradientTransformationExtraArgs:
    """LookSAM: a SAM step every k steps; between them, the stored component.

    Args:
      rho: SAM's radius on the full steps.
      k: the period of full steps (1: SAM on every step).
      alpha: the scale of the reused component.
      eps, axis_name, grouped, aux_init: as in `sam_jax.sam`.
      full_step: None: a full step where the count is a multiple of k (a
        lax.cond in the step); False / True: never / always, for a caller that
        compiles a step of each kind and picks by the step, as `sam`'s
        second_pass (XLA:CPU runs the convolutions in a conditional about ten
        times slower).
    """
    check_rho("looksam", rho)
    check_number("looksam.k", k, 1, integer=True)
    k = int(k)
    check_number("looksam.alpha", alpha, 0)
    has_aux = aux_init is not None

    def init_fn(params):
        return LookSAMState(
            count=jnp.zeros([], jnp.int32),
            direction=jax.tree_util.tree_map(lambda w: jnp.zeros(w.shape, jnp.float32),
                                             params),
            info=empty_info(params, aux_init))

    def update_fn(updates, state, params=None, *, grad_fn=None, aux=None, **extra_args):
        del extra_args
        check_update_args("looksam", params, grad_fn, has_aux=has_aux, aux=aux,
                          needs_aux=True)
        aux = aux if has_aux else None  # the caller may pass it regardless
        g = updates

        def full():
            e = jax.vmap(lambda g_k: _sam.perturbation(g_k, params, rho, eps=eps))(g)
            g_s, aux_out = evaluate(grad_fn, add_to_groups(params, e), axis_name,
                                    has_aux)
            g_s = optax.tree.cast_like(g_s, g)
            g_mean, gs_mean = pool(g, axis_name), pool(g_s, axis_name)
            scale = tree_vdot(gs_mean, g_mean) / (jnp.square(tree_norm(g_mean)) + eps)
            g_v = jax.tree_util.tree_map(
                lambda a, b: a.astype(jnp.float32) - scale * b.astype(jnp.float32),
                gs_mean, g_mean)
            direction = jax.tree_util.tree_map(
                lambda x: x / jnp.maximum(tree_norm(g_v), 1e-30), g_v)
            info = groups_info(evaluations=2, rho=rho, g=g, e=e, out=g_s, aux=aux_out,
                               params=params, axis_name=axis_name)
            return gs_mean, direction, info

        def reuse():
            g_mean = pool(g, axis_name)
            norm = tree_norm(g_mean)
            out = jax.tree_util.tree_map(
                lambda x, v: (x.astype(jnp.float32) + alpha * norm * v).astype(x.dtype),
                g_mean, state.direction)
            info = groups_info(evaluations=1, rho=0.0, g=g, e=None,
                               out=jax.tree_util.tree_map(
                                   lambda x: jnp.broadcast_to(x, (g_leading(g),) + x.shape),
                                   out), aux=aux, params=params, axis_name=axis_name)
            return out, state.direction, info

        if full_step is None:
            out, direction, info = jax.lax.cond(state.count % k == 0,
                                                lambda _: full(), lambda _: reuse(), None)
        else:
            out, direction, info = full() if full_step else reuse()
        return pmean(out, axis_name), LookSAMState(
            count=optax.safe_increment(state.count), direction=direction, info=info)

    return optax.GradientTransformationExtraArgs(init_fn, plain_form(update_fn, grouped))


def g_leading(stacked) -> int:
    return jax.tree_util.tree_leaves(stacked)[0].shape[0]


def _build(config, ctx):
    c = config.looksam
    return looksam(c.rho, k=c.k, alpha=c.alpha, **family.common(ctx),
                   **family.second_pass(ctx, "full_step"))


def _every_kth_step(config, total_steps):
    """A full step every k-th step from step 0 (the optimizer's count is the step)."""
    k = config.looksam.k
    return lambda step: step % k == 0


METHOD = family.Method(
    "looksam", "SAM every k steps; between them g + alpha ||g|| v, v the stored "
    "orthogonal direction", "Liu et al., CVPR 2022", "sam_jax.looksam", {
        "rho": family.Setting(0.05, "the radius of its full SAM steps"),
        "k": family.Setting(5, "a full SAM step every k steps"),
        "alpha": family.Setting(0.7, "weight of the stored direction between them"),
    }, _build, lambda c: (f"1 + 1/{c.looksam.k}", f"1 + 1/{c.looksam.k}"),
    accumulates=False, second_pass_schedule=_every_kth_step)
