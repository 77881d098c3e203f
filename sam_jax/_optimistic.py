"""The optimistic gradient (Popov 1980; Daskalakis et al., ICLR 2018) as a
method of the family: the gradient at w, fed to optax's optimistic gradient,
(alpha + beta) g_t - beta g_{t-1}, and that to the config's base optimizer, as
optax.optimistic_adam_v2 feeds Adam, so it steps with the momentum every other
method has; at momentum 0 this is optax.optimistic_gradient_descent."""

import optax

from sam_jax import _sam
from sam_jax import family
from sam_jax import optimizers
from sam_jax.ranges import check_number


def _build(config, ctx):
    for key in ("alpha", "beta"):
        check_number(f"optimistic.{key}", config.optimistic[key], 0)
    return _sam.plain_gradient(**family.common(ctx))


def _optimistic_base(config, schedule):
    return optax.chain(
        optax.scale_by_optimistic_gradient(alpha=config.optimistic.alpha,
                                           beta=config.optimistic.beta),
        optimizers.base_transform(config, schedule))


METHOD = family.Method(
    "optimistic", "(alpha + beta) g_t - beta g_{t-1} (optax's optimistic gradient) "
    "into the base optimizer", "Popov 1980; Daskalakis et al., ICLR 2018",
    "optax.scale_by_optimistic_gradient", {
        "alpha": family.Setting(1.0, "(alpha + beta) g_t - beta g_{t-1}"),
        "beta": family.Setting(1.0, "the weight of the last gradient"),
    }, _build, family.fixed_cost("1", "1"), base=_optimistic_base)
