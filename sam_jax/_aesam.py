"""AE-SAM (Jiang, Yang, Zhang & Kwok, ICLR 2023, "An Adaptive Policy to Employ
Sharpness-Aware Minimization"): SAM only on the steps whose squared stochastic
gradient norm is large against its running statistics, the plain gradient
otherwise.

The rule (the paper's Algorithm 1, as restated in junaidaliop/zij's
docs/math/aesam.md at 96144ac; the authors released no code that could be
found): with g_t the batch gradient at w_t and G_t = ||g_t||^2,

  mu_t      = delta mu_{t-1} + (1 - delta) G_t                     (mu_{-1} = 0)
  sigma2_t  = delta sigma2_{t-1} + (1 - delta) (G_t - mu_t)^2      (sigma2_{-1} = 0)
  c_t       = (t / T) c_end + (1 - t / T) c_start                  (the paper's
              lambda_1 = c_end, lambda_2 = c_start)
  SAM at step t  <=>  G_t >= mu_t + c_t sqrt(sigma2_t),

t the step count from 0 and T the training's steps. The statistics are
updated on every step, before the decision. Here g_t is the gradient of the
step's whole batch: the mean over groups and devices, so every device
decides alike; a SAM step perturbs per group as `sam_jax.sam` does.

mu and sigma2 live in the optax state, so a resumed run decides as the
uninterrupted one did. The decision needs the step's own gradient, so it
cannot be made on the host: the SAM pass sits in a lax.cond inside the step,
and XLA:CPU runs the convolutions inside a conditional about ten times
slower than outside one (measured for the sam / late-phase steps, see
family.late_phase_second_pass); on CPU an AE-SAM step can cost more than a
SAM step. Not measured for this method.
"""

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from sam_jax import _sam
from sam_jax import family
from sam_jax._radius import ScalarOrSchedule, check_rho, may_skip, rho_at
from sam_jax._step_info import StepInfo, empty_info
from sam_jax._trees import tree_norm
from sam_jax.collectives import AxisName
from sam_jax.groups import plain_form, pool
from sam_jax.ranges import check_number


class AESAMState(NamedTuple):
    count: jnp.ndarray
    mean: jnp.ndarray  # mu_t, the running mean of ||g||^2 (float32)
    variance: jnp.ndarray  # sigma2_t, its running variance (float32)
    info: StepInfo


def threshold_factor(step, *, c_start: float, c_end: float, total_steps: Optional[int]):
    """c_t: linear from c_start at step 0 to c_end at step total_steps."""
    if total_steps is None:
        return jnp.float32(c_start)
    fraction = jnp.asarray(step, jnp.float32) / jnp.float32(total_steps)
    return fraction * jnp.float32(c_end) + (1.0 - fraction) * jnp.float32(c_start)


def aesam(rho: ScalarOrSchedule, *, decay: float = 0.9, c_start: float = 1.0,
          c_end: float = -1.0, total_steps: Optional[int] = None,
          sync_perturbation: bool = False, eps: float = 1e-12,
          axis_name: AxisName = None, grouped: bool = False,
          aux_init=None) -> optax.GradientTransformationExtraArgs:
    """AE-SAM: SAM where ||g||^2 >= mu + c_t sigma, the plain gradient elsewhere.

    Args:
      rho: SAM's radius on its steps, a float >= 0 or a schedule step -> rho
        (a step where a schedule is 0 makes one pass whatever the rule says).
      decay: delta, the statistics' exponential moving average factor.
      c_start, c_end: c_t at step 0 and at step total_steps (the paper's
        lambda_2 and lambda_1).
      total_steps: T, the length of training; needed where c_start != c_end.
      sync_perturbation, eps, axis_name, grouped, aux_init: as in `sam_jax.sam`.

    Returns:
      An `optax.GradientTransformationExtraArgs` whose `update` needs
      `params` and `grad_fn`; `state.info.gradient_evaluations` is 2 on SAM
      steps and 1 on the others. The decision is a lax.cond in the step (see
      the module docstring for its cost on XLA:CPU).
    """
    check_rho("aesam", rho)
    check_number("aesam.decay", decay, 0, 1, high_open=True)
    check_number("aesam.c_start", c_start, -math.inf)
    check_number("aesam.c_end", c_end, -math.inf)
    if c_start != c_end:
        check_number("aesam.total_steps", total_steps, 1, integer=True,
                     alternative="c_t moves from c_start to c_end over the training")
    else:
        total_steps = None
    inner = dict(eps=eps, axis_name=axis_name, sync_perturbation=sync_perturbation,
                 grouped=True, aux_init=aux_init)
    sam_tx = _sam.sam(rho, second_pass=True, **inner)
    plain_tx = _sam.sam(rho, second_pass=False, **inner)
    skip = may_skip(rho)

    def init_fn(params):
        zero = jnp.zeros([], jnp.float32)
        return AESAMState(count=jnp.zeros([], jnp.int32), mean=zero, variance=zero,
                          info=empty_info(params, aux_init))

    def update_fn(updates, state, params=None, *, grad_fn=None, aux=None, **extra_args):
        del extra_args
        squared_norm = jnp.square(tree_norm(pool(updates, axis_name)))
        mean = decay * state.mean + (1 - decay) * squared_norm
        variance = decay * state.variance + (1 - decay) * jnp.square(squared_norm - mean)
        c_t = threshold_factor(state.count, c_start=c_start, c_end=c_end,
                               total_steps=total_steps)
        take = squared_norm >= mean + c_t * jnp.sqrt(variance)
        if skip == "when_zero":
            take = take & (rho_at(rho, state.count) > 0)
        inner_state = _sam.SAMState(count=state.count, info=state.info)

        def step_with(tx):
            out, new_state = tx.update(updates, inner_state, params, grad_fn=grad_fn,
                                       aux=aux)
            return out, new_state.info

        if skip == "always":  # rho = 0: the base optimizer alone
            out, info = step_with(plain_tx)
        else:
            out, info = jax.lax.cond(take, lambda _: step_with(sam_tx),
                                     lambda _: step_with(plain_tx), None)
        return out, AESAMState(count=optax.safe_increment(state.count), mean=mean,
                               variance=variance, info=info)

    return optax.GradientTransformationExtraArgs(init_fn, plain_form(update_fn, grouped))


# ------------------------------------------------- the trainer's declaration

def _build(config, ctx):
    c = config.aesam
    return aesam(family.radius(c.rho, ctx), decay=c.decay, c_start=c.c_start,
                 c_end=c.c_end, total_steps=ctx.total_steps,
                 sync_perturbation=config.sam.sync_perturbation, **family.common(ctx))


METHOD = family.Method(
    "aesam", "SAM only where ||g||^2 >= its running mean + c_t running std (c_t "
    "linear over training), the plain gradient otherwise",
    "Jiang, Yang, Zhang & Kwok, ICLR 2023", "sam_jax.aesam", {
        "rho": family.Setting(0.05, "SAM's radius on its steps (SAM's CIFAR value)"),
        "decay": family.Setting(0.9, "delta, the moving averages' factor (unverified: "
                                "a third-party restatement of the paper; its text "
                                "could not be read here)"),
        "c_start": family.Setting(1.0, "c_t at the start (the paper's lambda_2; value "
                                  "unverified, as decay)"),
        "c_end": family.Setting(-1.0, "c_t at the end (the paper's lambda_1; value "
                                "unverified, as decay)"),
    }, _build, family.fixed_cost("1 + fraction of SAM steps (adaptive)",
                                 "1 + fraction of SAM steps (adaptive)"),
    radius="aesam.rho", accumulates=False, syncs=True)
