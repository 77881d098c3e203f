"""What a method of the family declares, in its own module, for the trainer.

Each method's module (sam_jax/_sam.py, _esam.py, ...) ends with a `Method`
beside its transform: its sub-config's settings with their defaults and
sources, how the transform is built from them, its cost, and what the
trainer must know about it. sam_jax/methods.py lists the declarations (the
registry); config_schema.py makes each one's sub-config from its settings,
and validate.py checks them by building the transform, whose constructor
refuses its bad values. Adding a method: its module, one registry entry, its
test file (and its public name in sam_jax/__init__.py).
"""

import dataclasses
from typing import Any, Callable, Optional

import ml_collections


@dataclasses.dataclass(frozen=True)
class Context:
    """What a method's transform is built with, beside its sub-config."""
    axis_name: object  # the device axes
    aux_init: object  # an example of grad_fn's aux
    learning_rate: Callable  # the base optimizer's schedule, step -> lr
    total_steps: int
    seed: int
    # The second pass of sam / asam / usam (and LookSAM's full step): None
    # decides inside the step; False / True: never / always, for a trainer that
    # picks a step by the method's second_pass_schedule.
    second_pass: Optional[bool] = None
    # rho_schedule's factor of the step (rho_factor below), or None: 1.
    rho_factor: Optional[Callable] = None


@dataclasses.dataclass(frozen=True)
class Setting:
    """One key of a method's sub-config: its default and what it is (with the
    default's source); the docs' config-keys page shows the text."""
    default: Any
    meaning: str


@dataclasses.dataclass(frozen=True)
class LossTerm:
    """A term a method adds to each group's training loss, against reference
    outputs (a row of logits per example) that it draws from a state the
    trainer keeps beside the weights (TrainState.loss_term_state, checkpointed):
    SAF's outputs recorded epochs earlier, MESA's averaged weights. The step
    (sam_jax/steps.py) gives each example its reference with the batch, adds
    the term to the loss every pass differentiates, and updates the state after
    the weights.
    """
    init: Callable  # (params, batch_stats) -> the state
    # (state, batch, step, predict) -> reference logits [device batch, classes];
    # predict(variables, images) -> the model's logits in evaluation mode.
    reference: Callable
    # (logits [m, classes], reference [m, classes], step) -> the term (scalar)
    term: Callable
    # (state, *, step, indices, logits, params, batch_stats) -> the next state,
    # after the step: indices [global batch] and the pass at w's logits
    # [global batch, classes] (None unless example_indices), the new weights.
    update: Callable
    example_indices: bool = False  # reads batch["index"] and the logits


@dataclasses.dataclass(frozen=True)
class Method:
    name: str  # --config.method=NAME, and the name of its sub-config
    changes: str  # what it changes against SAM or SGD
    paper: str
    transform: str  # its public transform, e.g. "sam_jax.esam"
    settings: dict  # key -> Setting: config.<name>
    build: Callable[[object, Context], Any]  # (config, Context) -> the transform
    # (gradient evaluations, sequential passes) per step, as text for the docs
    cost: Callable[[object], tuple[str, str]]
    # Config key (in its sub-config) of the radius that rho_schedule scales.
    radius: Optional[str] = None
    # The pass at w only feeds a perturbation, so Shake-Shake / ShakeDrop take
    # their true gradient there (the official code's first pass).
    clean_pass_true_gradient: bool = False
    accumulates: bool = True  # exact under gradient accumulation
    syncs: bool = False  # supports sam.sync_perturbation
    example_losses: bool = False  # needs the per-example losses (ESAM)
    # (config, schedule) -> the optimizer the method's output feeds, before
    # clipping and decoupled decay; None: the config's base optimizer.
    base: Optional[Callable] = None
    # (config, total_steps) -> (step -> whether the step makes the method's
    # second pass) where that depends on the step alone, else None; the
    # trainer compiles a step with and one without the pass and picks by it.
    second_pass_schedule: Optional[Callable] = None
    # config -> why the method cannot run under the config's other settings
    # (one line), or None; checked for the selected method only.
    refuses: Optional[Callable] = None
    # Settings outside its sub-config it needs beside the schema's defaults
    # (MSAM: SGD without Nesterov), {dotted key: value}: what a tool that runs
    # every method (the methods benchmark) sets for it.
    needs: dict = dataclasses.field(default_factory=dict)
    # (params, opt_state) -> the weights to evaluate, where the stored ones
    # are not (MSAM stores perturbed weights); None: the stored ones.
    evaluation_params: Optional[Callable] = None
    # (config, *, num_examples, num_classes, steps_per_epoch) -> the LossTerm
    # the method adds to the training loss; None: the loss is the model's.
    loss_term: Optional[Callable] = None
    # The loss term reads each example's index in the training set (batch
    # "index"), which only the in-memory data sets' pipelines give.
    example_indices: bool = False

    def sub_config(self) -> ml_collections.ConfigDict:
        return ml_collections.ConfigDict(
            {key: setting.default for key, setting in self.settings.items()})


def fixed_cost(evaluations: str, sequential: str) -> Callable:
    return lambda config: (evaluations, sequential)


def radius(value: float, ctx: Context):
    """The constant radius, or it times rho_schedule's factor of the step."""
    factor = ctx.rho_factor
    return value if factor is None else (lambda count: value * factor(count))


def common(ctx: Context) -> dict:
    """The grouped form's arguments every transform takes."""
    return dict(axis_name=ctx.axis_name, grouped=True, aux_init=ctx.aux_init)


def second_pass(ctx: Context, keyword: str = "second_pass") -> dict:
    """Context.second_pass as the transform's keyword, where it is set."""
    return {} if ctx.second_pass is None else {keyword: ctx.second_pass}


def rho_factor(config, total_steps: int, learning_rate) -> Optional[Callable]:
    """The rho schedule's factor of the step, or None when it is always 1.

    kind "lr": proportional to the learning rate (GSAM's idea for any radius);
    warmup_fraction: linear from 0 over that part of training;
    start_fraction: 0 before that part of training (late-phase SAM, Zhou et
    al., ICLR 2025: SGD first, SAM at the end).
    """
    schedule = config.rho_schedule
    if (schedule.kind == "constant" and not schedule.warmup_fraction
            and not schedule.start_fraction):
        return None
    import jax.numpy as jnp
    peak = float(learning_rate(0)) or 1.0
    warmup_steps = schedule.warmup_fraction * total_steps
    start_step = late_phase_start(config, total_steps)

    def factor(count):
        value = jnp.asarray(1.0, jnp.float32)
        if schedule.kind == "lr":
            value = value * learning_rate(count) / peak
        if warmup_steps:
            value = value * jnp.minimum(1.0, (count + 1) / warmup_steps)
        if start_step:
            value = jnp.where(count >= start_step, value, 0.0)
        return value
    return factor


def late_phase_start(config, total_steps: int) -> int:
    """The first step of late-phase SAM (rho_schedule.start_fraction); 0: all."""
    return round(config.rho_schedule.start_fraction * total_steps)


def late_phase_second_pass(config, total_steps: int) -> Optional[Callable]:
    """A second_pass_schedule: the pass from rho_factor's start step on, for
    the methods whose second pass is skipped while their radius is 0. XLA:CPU
    runs the convolutions inside a lax.cond about ten times slower (0.65
    against 7-9 SAM steps/s in experiments/review_comparison's grid), hence a
    step per phase rather than a conditional inside one."""
    start = late_phase_start(config, total_steps)
    return (lambda step: step >= start) if start else None
