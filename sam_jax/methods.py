"""The gradient methods a config selects with `--config.method=NAME`.

Each method is an optax transform (the first element of the training chain)
built from its sub-config (`config.<name>`), plus what the trainer needs to
know: its cost, the base optimizer it steps with, and the settings it cannot
run under. `--config.method=sgd` is the base optimizer alone.

Cost: `gradient_evaluations` and `sequential_passes` per step as declared here
(the docs' cost table is generated from them); the trainer also records the
evaluations each step actually made (a late-phase or LookSAM step varies) and
the wall-clock time.
"""

import dataclasses
from typing import Callable, Optional

import jax
import optax

from sam_jax import _entropy_sgd
from sam_jax import _esam
from sam_jax import _extragradient
from sam_jax import _gsam
from sam_jax import _looksam
from sam_jax import _rwp
from sam_jax import _sam
from sam_jax import _sampa
from sam_jax import optimizers


@dataclasses.dataclass(frozen=True)
class Context:
    """What a method's transform is built with, beside its sub-config."""
    axis_name: object  # the device axes
    aux_init: object  # an example of grad_fn's aux
    learning_rate: optax.Schedule  # the base optimizer's schedule
    total_steps: int
    seed: int
    # The second pass of sam / asam / usam (and LookSAM's full step): None
    # decides inside the step; False / True: never / always, for a trainer that
    # picks a step by second_pass_schedule.
    second_pass: Optional[bool] = None


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    changes: str  # what it changes against SAM or SGD
    paper: str
    build: Callable[[object, Context], optax.GradientTransformationExtraArgs]
    # (gradient evaluations, sequential passes) per step, as text for the docs
    cost: Callable[[object], tuple[str, str]]
    # Config key (in its sub-config) of the radius that rho_schedule scales.
    radius: Optional[str] = None
    # The pass at w only feeds a perturbation, so Shake-Shake / ShakeDrop take
    # their true gradient there (the official code's first pass).
    clean_pass_true_gradient: bool = False
    accumulates: bool = True  # exact under gradient accumulation
    syncs: bool = False  # supports sam.sync_perturbation
    base: str = "sgd"  # the base optimizer: sgd | optimistic | plain
    example_losses: bool = False  # needs the per-example losses (ESAM)


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
    start_step = round(schedule.start_fraction * total_steps)

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


# Methods whose second pass is skipped while their scheduled radius is 0.
_SKIP_AT_ZERO_RADIUS = ("sam", "asam", "usam")


def second_pass_schedule(config, total_steps: int) -> Optional[Callable[[int], bool]]:
    """step -> whether the method makes its second pass at that step, for the
    methods where that depends on the step alone; None for the others.

    Late-phase SAM (sam, asam, usam with rho_schedule.start_fraction): from
    rho_factor's start step on. LookSAM: every k-th step, from step 0 (the
    optimizer's count is the step). The trainer compiles a step with and one
    without the pass (Context.second_pass) and picks by this, rather than a
    lax.cond inside one step: XLA:CPU runs the convolutions inside a
    conditional about ten times slower (0.65 against 7-9 SAM steps/s in
    experiments/review_comparison's grid)."""
    if config.method == "looksam":
        k = config.looksam.k
        return lambda step: step % k == 0
    if config.rho_schedule.start_fraction and config.method in _SKIP_AT_ZERO_RADIUS:
        start = round(config.rho_schedule.start_fraction * total_steps)  # rho_factor's
        return lambda step: step >= start
    return None


def _radius(value: float, factor):
    return value if factor is None else (lambda count: value * factor(count))


def _common(ctx: Context) -> dict:
    return dict(axis_name=ctx.axis_name, grouped=True, aux_init=ctx.aux_init)


def _second_pass(ctx: Context, keyword: str = "second_pass") -> dict:
    """Context.second_pass as the transform's keyword, where it is set."""
    return {} if ctx.second_pass is None else {keyword: ctx.second_pass}


def _factor(config, ctx):
    return rho_factor(config, ctx.total_steps, ctx.learning_rate)


def _build_sgd(config, ctx):
    return _sam.plain_gradient(**_common(ctx))


def _build_sam(config, ctx):
    c = config.sam
    return _sam.sam(_radius(c.rho, _factor(config, ctx)), adaptive=c.adaptive, eta=c.eta,
                    asam_leaves=c.asam_leaves, ball=c.ball, ascent_steps=c.ascent_steps,
                    sync_perturbation=c.sync_perturbation, seed=ctx.seed, **_common(ctx),
                    **_second_pass(ctx))


def _build_asam(config, ctx):
    c = config.asam
    return _sam.asam(_radius(c.rho, _factor(config, ctx)), eta=c.eta, leaves=c.leaves,
                     sync_perturbation=config.sam.sync_perturbation, **_common(ctx),
                     **_second_pass(ctx))


def _build_usam(config, ctx):
    return _sam.usam(_radius(config.usam.rho, _factor(config, ctx)),
                     sync_perturbation=config.sam.sync_perturbation, **_common(ctx),
                     **_second_pass(ctx))


def _build_gsam(config, ctx):
    c = config.gsam
    return _gsam.gsam(c.rho_max, rho_min=c.rho_min, alpha=c.alpha,
                      learning_rate=ctx.learning_rate, rho_factor=_factor(config, ctx),
                      **_common(ctx))


def _build_looksam(config, ctx):
    c = config.looksam
    return _looksam.looksam(c.rho, k=c.k, alpha=c.alpha, **_common(ctx),
                            **_second_pass(ctx, "full_step"))


def _build_esam(config, ctx):
    c = config.esam
    return _esam.esam(c.rho, beta=c.beta, gamma=c.gamma, seed=ctx.seed, **_common(ctx))


def _build_rwp(config, ctx):
    c = config.rwp
    return _rwp.rwp(c.sigma, mix=c.mix, seed=ctx.seed, **_common(ctx))


def _build_sampa(config, ctx):
    c = config.sampa
    fused = {"yes": True, "no": False}.get(c.fused, jax.default_backend() != "cpu")
    return _sampa.sampa(c.rho, mix=c.mix, learning_rate=ctx.learning_rate, fused=fused,
                        **_common(ctx))


def _build_extragradient(config, ctx):
    scale = config.extragradient.gamma_scale
    return _extragradient.extragradient(lambda count: scale * ctx.learning_rate(count),
                                        **_common(ctx))


def _build_entropy_sgd(config, ctx):
    c = config.entropy_sgd
    return _entropy_sgd.entropy_sgd(
        inner_steps=c.inner_steps, gamma=c.gamma, scoping=c.scoping,
        inner_lr=c.inner_lr, noise=c.noise, mean_decay=c.mean_decay,
        lr_scale=config.optimizer.learning_rate, seed=ctx.seed, **_common(ctx))


def _fixed(evaluations: str, sequential: str):
    return lambda config: (evaluations, sequential)


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("sgd", "the base optimizer alone", "-", _build_sgd, _fixed("1", "1")),
    Method("sam", "gradient at w + rho g/||g|| (options: ascent_steps, the linf "
           "ball, a random direction)", "Foret et al., ICLR 2021", _build_sam,
           lambda c: (str(1 + c.sam.ascent_steps), str(1 + c.sam.ascent_steps)),
           radius="sam.rho", clean_pass_true_gradient=True, syncs=True),
    Method("asam", "ball scaled by |w| + eta (kernels and BatchNorm scales)",
           "Kwon et al., ICML 2021", _build_asam, _fixed("2", "2"), radius="asam.rho",
           clean_pass_true_gradient=True, syncs=True),
    Method("usam", "e = rho g, unnormalised", "Andriushchenko & Flammarion, ICML "
           "2022; Dai et al., NeurIPS 2023", _build_usam, _fixed("2", "2"),
           radius="usam.rho", clean_pass_true_gradient=True, syncs=True),
    Method("gsam", "rho follows the lr; minus alpha times g's part orthogonal to the "
           "SAM gradient", "Zhuang et al., ICLR 2022", _build_gsam, _fixed("2", "2"),
           radius="gsam.rho_max", clean_pass_true_gradient=True),
    Method("looksam", "SAM every k steps; between them g + alpha ||g|| v, v the "
           "stored orthogonal direction", "Liu et al., CVPR 2022", _build_looksam,
           lambda c: (f"1 + 1/{c.looksam.k}", f"1 + 1/{c.looksam.k}"),
           accumulates=False),
    Method("esam", "perturb a random subset of tensors; second pass on the "
           "sharpest gamma of the examples", "Du et al., ICLR 2022", _build_esam,
           lambda c: (f"1 + {c.esam.gamma:g} (+1 forward)", "3"),
           radius="esam.rho", clean_pass_true_gradient=True, example_losses=True),
    Method("rwp", "gradient at w + filter-wise Gaussian noise, mixed with g",
           "Li et al. 2022; TMLR 2024", _build_rwp, _fixed("2", "1"),
           radius="rwp.sigma"),
    Method("sampa", "both gradients from last step's information: one fused pass",
           "Xie et al., NeurIPS 2024", _build_sampa, _fixed("2", "1"),
           radius="sampa.rho"),
    Method("extragradient", "gradient at w - gamma g (a descent extrapolation)",
           "Korpelevich 1976", _build_extragradient, _fixed("2", "2"),
           clean_pass_true_gradient=True),
    Method("optimistic", "(alpha + beta) g_t - beta g_{t-1} (optax's optimistic "
           "gradient) into the base optimizer",
           "Popov 1980; Daskalakis et al., ICLR 2018", _build_sgd, _fixed("1", "1"),
           base="optimistic"),
    Method("entropy_sgd", "L Langevin steps on the coupled loss; outer step x - mu",
           "Chaudhari et al., ICLR 2017", _build_entropy_sgd,
           lambda c: (str(c.entropy_sgd.inner_steps), str(c.entropy_sgd.inner_steps)),
           accumulates=False, base="plain"),
]}


def get(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; allowed: {', '.join(METHODS)}")
    return METHODS[name]


def radius_value(config, method: Method) -> Optional[float]:
    if method.radius is None:
        return None
    section, key = method.radius.split(".")
    return config[section][key]


def base_optimizer(config, total_steps: int, steps_per_epoch=None
                   ) -> optax.GradientTransformation:
    """The base optimizer the method steps with (clipping first, then the
    weight decay in "decoupled" mode)."""
    method = get(config.method)
    if method.base == "sgd":
        return optimizers.make_optimizer(config, total_steps, steps_per_epoch)
    schedule = optimizers.learning_rate_schedule(config, total_steps, steps_per_epoch)
    if method.base == "optimistic":
        # optax's optimistic gradient fed to the config's base optimizer, as
        # optax.optimistic_adam_v2 feeds Adam, so it steps with the momentum every
        # other method has; at momentum 0 this is optax.optimistic_gradient_descent.
        inner = optax.chain(
            optax.scale_by_optimistic_gradient(alpha=config.optimistic.alpha,
                                               beta=config.optimistic.beta),
            optimizers.base_transform(config, schedule))
    elif config.optimizer.name in ("adam", "adamw"):
        # Entropy-SGD's outer direction x - mu, stepped by Adam(W) instead of
        # plain SGD: the config asked for that base optimizer.
        inner = optimizers.base_transform(config, schedule)
    else:  # "plain": no momentum (Entropy-SGD's outer step)
        inner = optax.sgd(schedule)
    return optimizers.clipped(config, optimizers.decayed(config, inner))


def make_method(config, ctx: Context) -> optax.GradientTransformationExtraArgs:
    return get(config.method).build(config, ctx)


def problem(config, *, per_device_batch: int, microbatch: int) -> Optional[str]:
    """Why `config.method` cannot run as configured (one line), or None."""
    method = get(config.method)
    if config.sam.sync_perturbation and not method.syncs:
        return (f"method={config.method!r} does not support sam.sync_perturbation "
                "(sam, asam and usam do)")
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
                "(allowed: " + ", ".join(m.name for m in METHODS.values() if m.radius)
                + ")")
    del per_device_batch, microbatch
    return None
