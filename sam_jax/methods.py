"""The gradient methods a config selects with `--config.method=NAME`: the
registry of the family's declarations (sam_jax/family.py).

Each method is an optax transform (the first element of the training chain)
declared in its own module beside its transform: its sub-config
(`config.<name>`, made from its settings), how it is built, its cost, the base
optimizer it steps with and the settings it cannot run under. Adding a method
is its module, one entry in REGISTRY below and its test file.
`--config.method=sgd` is the base optimizer alone.

Cost: `gradient_evaluations` and `sequential_passes` per step as declared (the
docs' cost table is generated from them); the trainer also records the
evaluations each step actually made (a late-phase or LookSAM step varies) and
the wall-clock time.
"""

import dataclasses
from typing import Callable, Optional

import optax

from sam_jax import _aesam
from sam_jax import _entropy_sgd
from sam_jax import _esam
from sam_jax import _extragradient
from sam_jax import _gsam
from sam_jax import _ksam
from sam_jax import _looksam
from sam_jax import _msam
from sam_jax import _mesa
from sam_jax import _optimistic
from sam_jax import _rst
from sam_jax import _rwp
from sam_jax import _saf
from sam_jax import _sam
from sam_jax import _sampa
from sam_jax import family
from sam_jax import optimizers
from sam_jax.family import Context, Method, rho_factor  # noqa: F401  (the API)

REGISTRY = (
    _sam.SGD,
    _sam.SAM,
    _sam.ASAM,
    _sam.USAM,
    _gsam.METHOD,
    _looksam.METHOD,
    _rst.METHOD,
    _aesam.METHOD,
    _esam.METHOD,
    _rwp.METHOD,
    _sampa.METHOD,
    _extragradient.METHOD,
    _optimistic.METHOD,
    _entropy_sgd.METHOD,
    _msam.METHOD,
    _ksam.METHOD,
    _saf.METHOD,
    _mesa.METHOD,
)
METHODS: dict[str, Method] = {method.name: method for method in REGISTRY}


def get(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; allowed: {', '.join(METHODS)}")
    return METHODS[name]


def second_pass_schedule(config, total_steps: int) -> Optional[Callable[[int], bool]]:
    """step -> whether the method makes its second pass at that step, for the
    methods where that depends on the step alone (late-phase sam / asam /
    usam, LookSAM's every k-th step, RST's trials of the seed and the step);
    None for the others."""
    schedule = get(config.method).second_pass_schedule
    return None if schedule is None else schedule(config, total_steps)


def loss_term(config, *, num_examples: int, num_classes: int,
              steps_per_epoch: int) -> Optional[family.LossTerm]:
    """The term config.method adds to the training loss (SAF, MESA), or None."""
    make = get(config.method).loss_term
    return None if make is None else make(config, num_examples=num_examples,
                                          num_classes=num_classes,
                                          steps_per_epoch=steps_per_epoch)


def radius_value(config, method: Method) -> Optional[float]:
    if method.radius is None:
        return None
    section, key = method.radius.split(".")
    return config[section][key]


def base_optimizer(config, total_steps: int, steps_per_epoch=None, *,
                   schedule: Optional[optax.Schedule] = None
                   ) -> optax.GradientTransformation:
    """The base optimizer the method steps with (clipping first, then the
    weight decay in "decoupled" mode), at `schedule`, the run's learning-rate
    schedule (when None, optimizers.learning_rate_schedule's)."""
    if schedule is None:
        schedule = optimizers.learning_rate_schedule(config, total_steps, steps_per_epoch)
    method = get(config.method)
    if method.base is None:
        return optimizers.make_optimizer(config, total_steps, schedule=schedule)
    return optimizers.clipped(config, optimizers.decayed(config,
                                                         method.base(config, schedule)))


def make_method(config, ctx: Context) -> optax.GradientTransformationExtraArgs:
    """config.method's transform, with rho_schedule's factor (unless ctx has one)."""
    if ctx.rho_factor is None:
        ctx = dataclasses.replace(ctx, rho_factor=rho_factor(
            config, ctx.total_steps, ctx.learning_rate))
    return get(config.method).build(config, ctx)


def settings_problem(config) -> Optional[str]:
    """Why a method's sub-config is refused (one line), or None.

    Every method's transform is built from its sub-config with a stand-in
    context (constant learning rate, no rho schedule, so a constant radius is
    checked); its constructor refuses its bad values with a ValueError naming
    the key (sam_jax/ranges.py's message), which becomes the CLI's error."""
    rate = config.optimizer.learning_rate
    ctx = Context(axis_name=None, aux_init=None, learning_rate=lambda count: rate,
                  total_steps=1, seed=0)
    for method in REGISTRY:
        try:
            method.build(config, ctx)
        except (ValueError, TypeError) as error:
            return str(error).splitlines()[0]
    return None


def problem(config, *, per_device_batch: int, microbatch: int) -> Optional[str]:
    """Why `config.method` cannot run as configured (one line), or None."""
    method = get(config.method)
    if config.sam.sync_perturbation and not method.syncs:
        return (f"method={config.method!r} does not support sam.sync_perturbation "
                "(" + ", ".join(m.name for m in REGISTRY if m.syncs) + " do)")
    if config.sam.sync_perturbation and config.grad_accum_steps > 1:
        return ("sam.sync_perturbation averages g over the whole batch, which "
                "gradient accumulation never holds at once; use grad_accum_steps=1")
    if config.grad_accum_steps > 1 and not method.accumulates:
        return (f"method={config.method!r} keeps state from the whole batch's "
                f"gradient, which grad_accum_steps={config.grad_accum_steps} splits; "
                "use grad_accum_steps=1")
    if method.radius is None and (config.rho_schedule.start_fraction
                                  or config.rho_schedule.warmup_fraction
                                  or config.rho_schedule.kind != "constant"):
        return (f"rho_schedule applies to a radius; method={config.method!r} has none "
                "(allowed: " + ", ".join(m.name for m in REGISTRY if m.radius) + ")")
    if method.example_indices:
        from sam_jax.data.specs import get_spec
        if not get_spec(config.dataset).in_memory:
            return (f"method={config.method!r} records each training example's "
                    "outputs by its index in the training set, which the streamed "
                    f"data set {config.dataset!r} does not give; use an in-memory "
                    "data set or method='mesa'")
    del per_device_batch, microbatch
    return None if method.refuses is None else method.refuses(config)
