"""GSAM (Zhuang et al., ICLR 2022): surrogate-gap guided SAM.

As big_vision's `gsam_gradient` (trainers/proj/gsam/gsam.py), per group:
  rho_t  = rho_min + (rho_max - rho_min) (lr_t - lr_min) / (lr_max - lr_min)
           (rho_max when lr_max = lr_min; clamped at 0, which big_vision is not)
  e      = rho_t g / (||g|| + eps)
  g_p    = grad L(w + e)
  g_perp = g - <g, u> u,   u = g_p / ||g_p||   (g's part orthogonal to g_p)
  out    = g_p - alpha g_perp
Descending g_p - alpha g_perp ascends along g_perp, which lowers the surrogate
gap L(w + e) - L(w). With rho_max = rho_min and alpha = 0 it is SAM exactly.

One departure, documented: lr_t is the learning rate of the step being taken
(the schedule at the optimizer's count t). big_vision's loop counts steps from
1 and computes rho from `sched_fn(step)` while its optax schedule counts from 0,
so its rho_t follows the next step's learning rate, lr_{t+1}. The two differ
by one step of the schedule: on a cosine decay to 0 over T steps, by at most
(rho_max - rho_min) pi / (2 T): 2e-4 at T = 200 and the defaults, 5e-7 over
200 CIFAR epochs of 391 steps. Negligible; kept, as lr_t is the rate the
step actually uses.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from sam_jax import family
from sam_jax.ranges import check_number
from sam_jax import _sam
from sam_jax._radius import ScalarOrSchedule, check_rho
from sam_jax._step_info import StepInfo, check_update_args, empty_info, groups_info
from sam_jax._trees import tree_norm, tree_vdot
from sam_jax.collectives import AxisName, pmean
from sam_jax.groups import add_to_groups, evaluate, group_mean, plain_form


class GSAMState(NamedTuple):
    count: jnp.ndarray
    info: StepInfo


def gsam_rho(count, *, rho_max: float, rho_min: float, learning_rate: ScalarOrSchedule,
             lr_max: float, lr_min: float):
    """rho_t, linear in the learning rate between (lr_min, rho_min) and
    (lr_max, rho_max); rho_max when the learning rate is constant."""
    if lr_max == lr_min:
        return jnp.asarray(rho_max, jnp.float32)
    lr = learning_rate(count) if callable(learning_rate) else learning_rate
    rho = rho_min + (rho_max - rho_min) * (lr - lr_min) / (lr_max - lr_min)
    return jnp.maximum(jnp.asarray(rho, jnp.float32), 0.0)


def gsam(rho_max: float, *, rho_min=None, alpha: float = 0.0,
         learning_rate: ScalarOrSchedule = 1.0, lr_max=None, lr_min=None,
         rho_factor=None, eps: float = 1e-12, axis_name: AxisName = None,
         grouped: bool = False, aux_init=None) -> optax.GradientTransformationExtraArgs:
    """GSAM: SAM whose radius follows the learning rate, minus alpha times the
    clean gradient's component orthogonal to the perturbed one.

    Args:
      rho_max, rho_min: the radius at lr_max and at lr_min (rho_min defaults
        to rho_max: a constant radius).
      alpha: weight of the orthogonal component (0: SAM's update).
      learning_rate: the learning-rate schedule (or constant) the base
        optimizer follows; lr_max / lr_min default to it at step 0 / its
        value 0 (a schedule that decays to 0).
      rho_factor: step -> a factor on rho_t (a warm-up, say), or None.
      eps, axis_name, grouped, aux_init: as in `sam_jax.sam`.
    """
    rho_min = rho_max if rho_min is None else rho_min
    check_rho("gsam", rho_max, "rho_max")
    check_rho("gsam", rho_min, "rho_min")
    check_number("gsam.alpha", alpha, 0)
    if lr_max is None:
        lr_max = float(learning_rate(0)) if callable(learning_rate) else learning_rate
    if lr_min is None:
        lr_min = 0.0 if callable(learning_rate) else learning_rate
    has_aux = aux_init is not None

    def init_fn(params):
        return GSAMState(count=jnp.zeros([], jnp.int32), info=empty_info(params, aux_init))

    def update_fn(updates, state, params=None, *, grad_fn=None, aux=None, **extra_args):
        del aux, extra_args
        check_update_args("gsam", params, grad_fn)
        rho_t = gsam_rho(state.count, rho_max=rho_max, rho_min=rho_min,
                         learning_rate=learning_rate, lr_max=lr_max, lr_min=lr_min)
        if rho_factor is not None:
            rho_t = rho_t * rho_factor(state.count)
        g = updates
        e = jax.vmap(lambda g_k: _sam.perturbation(g_k, params, rho_t, eps=eps))(g)
        g_p, aux_out = evaluate(grad_fn, add_to_groups(params, e), axis_name, has_aux)
        g_p = optax.tree.cast_like(g_p, g)

        def decompose(g_k, gp_k):
            u_scale = 1.0 / jnp.maximum(tree_norm(gp_k), 1e-30)
            projection = tree_vdot(g_k, gp_k) * u_scale
            return jax.tree_util.tree_map(
                lambda gp, gc: (gp.astype(jnp.float32) - alpha * (
                    gc.astype(jnp.float32) - projection * u_scale * gp.astype(jnp.float32))
                                ).astype(gp.dtype), gp_k, g_k)
        out = jax.vmap(decompose)(g, g_p)
        info = groups_info(evaluations=2, rho=rho_t, g=g, e=e, out=out, aux=aux_out,
                           params=params, axis_name=axis_name)
        return pmean(group_mean(out), axis_name), GSAMState(
            count=optax.safe_increment(state.count), info=info)

    return optax.GradientTransformationExtraArgs(init_fn, plain_form(update_fn, grouped))


def _build(config, ctx):
    c = config.gsam
    return gsam(c.rho_max, rho_min=c.rho_min, alpha=c.alpha,
                learning_rate=ctx.learning_rate, rho_factor=ctx.rho_factor,
                **family.common(ctx))


METHOD = family.Method(
    "gsam", "rho follows the lr; minus alpha times g's part orthogonal to the SAM "
    "gradient", "Zhuang et al., ICLR 2022", "sam_jax.gsam", {
        "rho_max": family.Setting(0.05, "the radius at the peak learning rate"),
        "rho_min": family.Setting(0.025, "... and at the last one (the paper's ratio)"),
        "alpha": family.Setting(0.01, "the paper's value for SGD-trained ResNets"),
    }, _build, family.fixed_cost("2", "2"), radius="gsam.rho_max",
    clean_pass_true_gradient=True)
