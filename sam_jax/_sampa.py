"""SAMPa (Xie, Pethick & Cevher, NeurIPS 2024): SAM parallelised.

The paper's recursion (the authors' README, LIONS-EPFL/SAMPa):
  x~_t    = x_t + rho h_t / ||h_t||,      h_t = grad f(y_t) (kept from step t-1)
  y_{t+1} = x_t - lr_t h_t
  out     = (1 - mix) grad f(x~_t) + mix grad f(y_{t+1})
and the base optimizer steps at x_t with `out`; h_{t+1} = grad f(y_{t+1}).
Both gradients depend only on points known at the start of the step, so they
run as one pass over the stacked pair of weights (vmap): one sequential pass.
The gradient at x_t itself is not used (a caller's clean pass is then dead
code that XLA drops, but for what the caller logs). At step 0, h = 0: both
points are x_0, plain SGD.

Differences from the authors' code, kept for one protocol across methods:
both gradients use the step's batch (the code takes grad f(x~) on the previous
one), and y steps with the learning rate alone (the code adds momentum and
weight decay to that step). h is the mean over groups and devices: the
perturbation is not per group.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from sam_jax import family
from sam_jax.ranges import check_choice, check_number
from sam_jax._radius import ScalarOrSchedule, check_rho
from sam_jax._step_info import StepInfo, check_update_args, empty_info, groups_info
from sam_jax._trees import tree_norm
from sam_jax.collectives import AxisName, per_device
from sam_jax.groups import broadcast_groups, num_groups_of, plain_form, pool, split_aux


class SAMPaState(NamedTuple):
    count: jnp.ndarray
    previous_gradient: Any  # h_t = grad f(y_t), float32, like params
    info: StepInfo


def sampa(rho: float, *, mix: float = 0.2, learning_rate: ScalarOrSchedule = 0.1,
          fused: bool = True, eps: float = 1e-12, axis_name: AxisName = None,
          grouped: bool = False, aux_init=None) -> optax.GradientTransformationExtraArgs:
    """SAMPa: SAM's two gradients from last step's information, in one pass.

    Args:
      rho: the radius of the perturbation along h.
      mix: the weight of grad f(y_{t+1}) (the authors' lambda, "og", 0.2).
      learning_rate: the base optimizer's learning rate (schedule), for y.
      fused: evaluate the two gradients as one pass over the stacked pair
        (vmap); False: one after the other (the same numbers; faster on
        XLA:CPU, whose convolutions with a batch of weight sets are slow).
      eps, axis_name, grouped, aux_init: as in `sam_jax.sam`.
    """
    check_rho("sampa", rho)
    check_number("sampa.mix", mix, 0, 1)
    has_aux = aux_init is not None

    def init_fn(params):
        return SAMPaState(
            count=jnp.zeros([], jnp.int32),
            previous_gradient=jax.tree_util.tree_map(
                lambda w: jnp.zeros(w.shape, jnp.float32), params),
            info=empty_info(params, aux_init))

    def update_fn(updates, state, params=None, *, grad_fn=None, aux=None, **extra_args):
        del aux, extra_args
        check_update_args("sampa", params, grad_fn)
        num_groups = num_groups_of(updates)
        lr = jnp.asarray(learning_rate(state.count) if callable(learning_rate)
                         else learning_rate, jnp.float32)
        h = state.previous_gradient
        scale = rho / (tree_norm(h) + eps)
        perturbed = jax.tree_util.tree_map(
            lambda w, x: (w.astype(jnp.float32) + scale * x).astype(w.dtype), params, h)
        optimistic = jax.tree_util.tree_map(
            lambda w, x: (w.astype(jnp.float32) - lr * x).astype(w.dtype), params, h)
        points = [per_device(broadcast_groups(p, num_groups), axis_name)
                  for p in (perturbed, optimistic)]
        evaluate = lambda weights: split_aux(grad_fn(weights), has_aux)
        if fused:
            pair = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), *points)
            grads, aux_pair = jax.vmap(evaluate)(pair)
        else:
            outputs = [evaluate(weights) for weights in points]
            grads, aux_pair = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *outputs)
        g_perturbed = jax.tree_util.tree_map(lambda x: x[0], grads)
        g_optimistic = jax.tree_util.tree_map(lambda x: x[1], grads)
        out = jax.tree_util.tree_map(
            lambda a, b: (1 - mix) * a.astype(jnp.float32) + mix * b.astype(jnp.float32),
            g_perturbed, g_optimistic)
        out = optax.tree.cast_like(out, g_perturbed)
        aux_out = None if aux_pair is None else jax.tree_util.tree_map(
            lambda x: x[0], aux_pair)
        e = broadcast_groups(jax.tree_util.tree_map(lambda x: scale * x, h), num_groups)
        info = groups_info(evaluations=2, rho=rho, g=None, e=e, out=out, aux=aux_out,
                           params=params, axis_name=axis_name)
        new_h = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32),
                                       pool(g_optimistic, axis_name))
        return pool(out, axis_name), SAMPaState(
            count=optax.safe_increment(state.count), previous_gradient=new_h, info=info)

    return optax.GradientTransformationExtraArgs(init_fn, plain_form(update_fn, grouped))


FUSED = ("auto", "yes", "no")  # config.sampa.fused


def _build(config, ctx):
    c = config.sampa
    check_choice("sampa.fused", c.fused, FUSED)
    if c.fused == "auto":
        import jax  # the backend, only when asked
        fused = jax.default_backend() != "cpu"
    else:
        fused = c.fused == "yes"
    return sampa(c.rho, mix=c.mix, learning_rate=ctx.learning_rate, fused=fused,
                 **family.common(ctx))


METHOD = family.Method(
    "sampa", "both gradients from last step's information: one fused pass",
    "Xie et al., NeurIPS 2024", "sam_jax.sampa", {
        "rho": family.Setting(0.1, "the radius"),
        "mix": family.Setting(0.2, "weight of the optimistic gradient (the authors' "
                              "lambda)"),
        "fused": family.Setting("auto", 'the two gradients as one vmapped pass ("yes"), '
                                'one after the other ("no"), or "auto": fused except '
                                "on CPU, where XLA's convolutions with a batch of "
                                "weight sets are slower than two passes"),
    }, _build, family.fixed_cost("2", "1"), radius="sampa.rho")
