"""RST, randomized sharpness-aware training (Zhao, Zhang & Hu 2022, "Randomized
Sharpness-Aware Training for Boosting Computational Efficiency in Deep
Learning", AAAI 2023): on each step a Bernoulli trial with probability p_t
picks a SAM step (two passes) or the base optimizer's plain gradient (one
pass); p_t follows a schedule.

The trial is a pure function of (seed, step), so a resumed run draws what the
uninterrupted one drew, and the trainer can know it before the step:

  u_t = jax.random.uniform(fold_in(fold_in(PRNGKey(seed), STREAM), t))  (float32)
  SAM at step t  <=>  u_t < p_t,

t the optimizer's step count (from 0) and STREAM a constant that keeps these
draws apart from the seed's other uses (dropout, RWP's noise). The schedules:
"constant", p_t = p; "linear", p_t = p + (p_end - p) t / T over the T steps of
training. The authors' JAX code (its README: `--config.hybrid_config.p=0.6
--config.schedule_function_type=constant`) was not reachable from here; the
schedule family and the default p follow the paper's abstract (SAM on about
half the steps: "saving 50% extra computation cost"), not its code.

The SAM step is `sam_jax.sam`'s, with its radius (so rho_schedule applies).
The trainer picks the step on the host (the Method's second_pass_schedule,
from the same draws): XLA:CPU runs the convolutions in a lax.cond about ten
times slower. The transform alone (second_pass=None, an optax chain without
the trainer) draws the same trial from (seed, count) itself and decides by
lax.cond.
"""

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sam_jax import _sam
from sam_jax import family
from sam_jax._radius import ScalarOrSchedule, check_rho, may_skip, rho_at
from sam_jax._step_info import StepInfo, empty_info
from sam_jax.collectives import AxisName
from sam_jax.groups import plain_form
from sam_jax.ranges import check_choice, check_number

SCHEDULES = ("constant", "linear")
# Folded into PRNGKey(seed) before the step: "RST" in ASCII.
STREAM = 0x525354


class RSTState(NamedTuple):
    count: jnp.ndarray
    info: StepInfo


def sam_probability(step, *, p: float, schedule: str = "constant", p_end: float = 1.0,
                    total_steps: Optional[int] = None):
    """p_t, the probability of a SAM step at `step` (float32)."""
    if schedule == "constant":
        return jnp.float32(p)
    fraction = jnp.minimum(jnp.asarray(step, jnp.float32) / jnp.float32(total_steps), 1.0)
    return jnp.float32(p) + (jnp.float32(p_end) - jnp.float32(p)) * fraction


def sam_step_drawn(seed: int, step, probability):
    """The trial of `step`: u_t < p_t, u_t uniform in [0, 1) from (seed, step)."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), STREAM), step)
    return jax.random.uniform(key, (), jnp.float32) < probability


def sam_steps(seed: int, total_steps: int, **schedule) -> np.ndarray:
    """Every step's trial at once (a numpy bool array of length total_steps),
    as the transform draws them one by one; `schedule` as sam_probability's."""
    def one(step):
        return sam_step_drawn(seed, step, sam_probability(
            step, total_steps=total_steps, **schedule))
    return np.asarray(jax.jit(jax.vmap(one))(jnp.arange(total_steps, dtype=jnp.int32)))


def rst(rho: ScalarOrSchedule, *, p: float = 0.5, schedule: str = "constant",
        p_end: float = 1.0, total_steps: Optional[int] = None, seed: int = 0,
        sync_perturbation: bool = False, eps: float = 1e-12,
        axis_name: AxisName = None, grouped: bool = False, aux_init=None,
        second_pass: Optional[bool] = None) -> optax.GradientTransformationExtraArgs:
    """RST: SAM with probability p_t on each step, the plain gradient otherwise.

    Args:
      rho: SAM's radius on its steps, a float >= 0 or a schedule step -> rho
        (a step where a schedule is 0 makes one pass whatever the trial).
      p: the probability of a SAM step ("constant"), or its value at step 0
        ("linear").
      schedule: "constant" or "linear" (from p at step 0 to p_end at step
        total_steps).
      p_end: the linear schedule's probability at the end of training.
      total_steps: T, the length of training ("linear" needs it).
      seed: the trials' seed (see the module docstring for the draw).
      sync_perturbation, eps, axis_name, grouped, aux_init: as in `sam_jax.sam`.
      second_pass: None: the trial decides inside the step (a lax.cond);
        False / True: the plain step / the SAM step, for a caller that draws
        the trials on the host (`sam_steps`) and compiles a step of each kind.

    Returns:
      An `optax.GradientTransformationExtraArgs` whose `update` needs
      `params` and `grad_fn`; `state.info.gradient_evaluations` is 2 on SAM
      steps and 1 on the others.
    """
    check_rho("rst", rho)
    check_number("rst.p", p, 0, 1)
    check_choice("rst.schedule", schedule, SCHEDULES)
    check_number("rst.p_end", p_end, 0, 1)
    if schedule == "linear":
        check_number("rst.total_steps", total_steps, 1, integer=True,
                     alternative='schedule "linear" runs over the training\'s steps')
    inner = dict(eps=eps, axis_name=axis_name, sync_perturbation=sync_perturbation,
                 grouped=True, aux_init=aux_init)
    sam_tx = _sam.sam(rho, second_pass=True, **inner)
    plain_tx = _sam.sam(rho, second_pass=False, **inner)
    skip = may_skip(rho)

    def init_fn(params):
        return RSTState(count=jnp.zeros([], jnp.int32), info=empty_info(params, aux_init))

    def update_fn(updates, state, params=None, *, grad_fn=None, aux=None, **extra_args):
        del extra_args
        inner_state = _sam.SAMState(count=state.count, info=state.info)

        def step_with(tx):
            out, new_state = tx.update(updates, inner_state, params, grad_fn=grad_fn,
                                       aux=aux)
            return out, new_state.info

        if second_pass is not None:
            out, info = step_with(sam_tx if second_pass else plain_tx)
        elif skip == "always":
            out, info = step_with(plain_tx)
        else:
            take = sam_step_drawn(seed, state.count, sam_probability(
                state.count, p=p, schedule=schedule, p_end=p_end,
                total_steps=total_steps))
            if skip == "when_zero":
                take = take & (rho_at(rho, state.count) > 0)
            out, info = jax.lax.cond(take, lambda _: step_with(sam_tx),
                                     lambda _: step_with(plain_tx), None)
        return out, RSTState(count=optax.safe_increment(state.count), info=info)

    return optax.GradientTransformationExtraArgs(init_fn, plain_form(update_fn, grouped))


# ------------------------------------------------- the trainer's declaration

def _schedule_of(config) -> dict:
    c = config.rst
    return dict(p=c.p, schedule=c.schedule, p_end=c.p_end)


def _build(config, ctx):
    return rst(family.radius(config.rst.rho, ctx), total_steps=ctx.total_steps,
               seed=ctx.seed, sync_perturbation=config.sam.sync_perturbation,
               **_schedule_of(config), **family.common(ctx), **family.second_pass(ctx))


def _drawn_sam_steps(config, total_steps):
    """The trials of the whole run, drawn on the host as the transform draws
    them; no SAM step before late-phase SAM's start (rho_schedule)."""
    drawn = sam_steps(config.seed, total_steps, **_schedule_of(config))
    start = family.late_phase_start(config, total_steps)
    return lambda step: bool(drawn[step]) and step >= start


def _cost(config):
    c = config.rst
    mean = c.p if c.schedule == "constant" else (c.p + c.p_end) / 2
    return f"1 + {mean:g}", f"1 + {mean:g}"


METHOD = family.Method(
    "rst", "SAM on a step with probability p (a Bernoulli trial of the seed and "
    "the step), the plain gradient otherwise", "Zhao, Zhang & Hu, AAAI 2023",
    "sam_jax.rst", {
        "rho": family.Setting(0.05, "SAM's radius on its steps (SAM's CIFAR value)"),
        "p": family.Setting(0.5, "the probability of a SAM step; linear: at step 0 "
                            "(unverified: the abstract's half of SAM's extra cost; the "
                            "authors' README example uses 0.6)"),
        "schedule": family.Setting("constant", 'p_t constant, or "linear" from p to '
                                   "p_end over training (two of the paper's "
                                   "scheduling functions)"),
        "p_end": family.Setting(1.0, "linear schedule's p at the end (ours)"),
    }, _build, _cost, radius="rst.rho", syncs=True,
    second_pass_schedule=_drawn_sam_steps)
