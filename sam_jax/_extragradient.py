"""The extragradient method (Korpelevich 1976), the review's closest relative.

  g_half = grad L(w - gamma_t g),   then the base optimizer steps at w with g_half.

SAM is the same map with the extrapolation replaced by a normalised ascent step
(+rho g / ||g||): opposite sign, fixed length. By default gamma_t is tied to
the learning rate (gamma_t = gamma_scale * lr_t), as in Korpelevich.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from sam_jax import family
from sam_jax.ranges import check_number
from sam_jax._radius import ScalarOrSchedule, check_rho
from sam_jax._step_info import StepInfo, check_update_args, empty_info, groups_info
from sam_jax.collectives import AxisName, pmean
from sam_jax.groups import add_to_groups, evaluate, group_mean, plain_form


class ExtragradientState(NamedTuple):
    count: jnp.ndarray
    info: StepInfo


def extragradient(gamma: ScalarOrSchedule, *, axis_name: AxisName = None,
                  grouped: bool = False, aux_init=None
                  ) -> optax.GradientTransformationExtraArgs:
    """The gradient at the extrapolated point w - gamma_t g.

    Args:
      gamma: the extrapolation step, a constant or a schedule step -> gamma_t
        (methods.py passes gamma_scale * the learning-rate schedule).
      axis_name, grouped, aux_init: as in `sam_jax.sam`; each group (device)
        extrapolates with its own gradient, like SAM's per-device perturbation.
    """
    check_rho("extragradient", gamma, "gamma")
    has_aux = aux_init is not None

    def init_fn(params):
        return ExtragradientState(count=jnp.zeros([], jnp.int32),
                                  info=empty_info(params, aux_init))

    def update_fn(updates, state, params=None, *, grad_fn=None, aux=None, **extra_args):
        del aux, extra_args
        check_update_args("extragradient", params, grad_fn)
        gamma_t = jnp.asarray(gamma(state.count) if callable(gamma) else gamma,
                              jnp.float32)
        g = updates
        e = jax.tree_util.tree_map(lambda x: -gamma_t * x.astype(jnp.float32), g)
        out, aux_out = evaluate(grad_fn, add_to_groups(params, e), axis_name, has_aux)
        out = optax.tree.cast_like(out, g)
        info = groups_info(evaluations=2, rho=gamma_t, g=g, e=e, out=out, aux=aux_out,
                           params=params, axis_name=axis_name)
        return pmean(group_mean(out), axis_name), ExtragradientState(
            count=optax.safe_increment(state.count), info=info)

    return optax.GradientTransformationExtraArgs(init_fn, plain_form(update_fn, grouped))


def _build(config, ctx):
    scale = config.extragradient.gamma_scale
    check_number("extragradient.gamma_scale", scale, 0)
    return extragradient(lambda count: scale * ctx.learning_rate(count),
                         **family.common(ctx))


METHOD = family.Method(
    "extragradient", "gradient at w - gamma g (a descent extrapolation)",
    "Korpelevich 1976", "sam_jax.extragradient", {
        "gamma_scale": family.Setting(1.0, "gamma_t = gamma_scale * lr_t"),
    }, _build, family.fixed_cost("2", "2"), clean_pass_true_gradient=True)
