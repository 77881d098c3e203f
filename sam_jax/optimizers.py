"""The base optimizer a config asks for: learning-rate schedule, clipping, and
SGD, RMSProp, Adam or AdamW.

Weight decay is an L2 term of the loss (see steps.py), as in the official
code, so it enters SAM's perturbation too; for every optimizer but AdamW.
AdamW's decay is decoupled by definition (Loshchilov & Hutter, ICLR 2019):
optax.adamw subtracts lr_t * weight_decay * w after the Adam direction, the
loss has no L2 term (`loss_weight_decay` is 0) and SAM's perturbation sees
none. Adam keeps the L2 term in the loss (Adam with L2 regularisation, the
pre-AdamW practice), so its second moment sees the decay's gradient.
"""

from typing import Optional

import optax

from sam_jax import swa


OPTIMIZERS = ("sgd", "rmsprop", "adam", "adamw")
SCHEDULES = ("cosine", "linear", "constant")


def loss_weight_decay(config) -> float:
    """The coefficient of the loss's L2 term, 0.5 * wd * |w|^2: the config's
    weight decay, except for AdamW, whose decay is decoupled (in the update)."""
    return 0.0 if config.optimizer.name == "adamw" else config.optimizer.weight_decay


def _decay_schedule(kind: str, peak: float, decay_steps: int) -> optax.Schedule:
    if kind == "cosine":
        return optax.cosine_decay_schedule(peak, decay_steps)
    if kind == "linear":
        return optax.linear_schedule(peak, 0.0, decay_steps)
    return optax.constant_schedule(peak)


def learning_rate_schedule(config, total_steps: int,
                           steps_per_epoch: Optional[int] = None) -> optax.Schedule:
    """A linear warm-up from 0 over optimizer.warmup_steps (0: none), then the
    paper's cosine, a linear decay to 0 or a constant rate over the remaining
    steps; with SWA and its own learning rate, SWA's schedule (swa.py; needs
    steps_per_epoch). Without warm-up the cosine is the paper's, as before."""
    opt = config.optimizer
    warmup = opt.warmup_steps
    if not warmup:
        base = _decay_schedule(opt.schedule, opt.learning_rate, total_steps)
    else:
        base = optax.join_schedules(
            [optax.linear_schedule(0.0, opt.learning_rate, warmup),
             _decay_schedule(opt.schedule, opt.learning_rate,
                             max(total_steps - warmup, 1))], [warmup])
    if swa.enabled(config) and config.swa.learning_rate is not None:
        if not steps_per_epoch:
            raise ValueError("SWA's learning-rate schedule needs steps_per_epoch")
        return swa.learning_rate_schedule(config, base, total_steps, steps_per_epoch)
    return base


def clipped(config, optimizer: optax.GradientTransformation
            ) -> optax.GradientTransformation:
    """Clipping by global norm (config.optimizer.grad_clip_norm; 0: none) of the
    device-averaged gradient, then `optimizer`: the official code's order."""
    norm = config.optimizer.grad_clip_norm
    parts = [optax.clip_by_global_norm(norm)] if norm else []
    return optax.chain(*parts, optimizer)


def base_transform(config, schedule: optax.Schedule) -> optax.GradientTransformation:
    """The base optimizer at `schedule`, unclipped: SGD with momentum, RMSProp,
    Adam or AdamW (optax's; b1, b2, eps from the config; AdamW decays every
    parameter by lr_t * weight_decay, as optax.adamw does without a mask)."""
    opt = config.optimizer
    if opt.name == "rmsprop":  # the official code's EfficientNet settings
        return optax.rmsprop(schedule, decay=0.9, eps=1e-3, momentum=opt.momentum or None)
    if opt.name == "adam":
        return optax.adam(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps)
    if opt.name == "adamw":
        return optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                           weight_decay=opt.weight_decay)
    return optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.nesterov)


def make_optimizer(config, total_steps: int, steps_per_epoch: Optional[int] = None
                   ) -> optax.GradientTransformation:
    """Clipping, then the base optimizer (SGD with momentum, RMSProp, Adam or
    AdamW)."""
    schedule = learning_rate_schedule(config, total_steps, steps_per_epoch)
    return clipped(config, base_transform(config, schedule))
