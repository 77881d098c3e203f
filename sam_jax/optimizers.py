"""The base optimizer a config asks for: learning-rate schedule, clipping,
weight decay, and SGD, RMSProp, Adam or AdamW.

Weight decay has two places (config.optimizer.weight_decay_mode) for SGD,
RMSProp and Adam:
- "loss" (the default, the SAM paper's official code): an L2 term of the loss
  (steps.py), so it is in every gradient the method takes, the perturbation
  included (for Adam: L2 regularisation, its second moment sees it);
- "decoupled" (the authors of GSAM, LookSAM, ESAM, RWP and SAMPa): not in the
  loss; the base optimizer adds wd * w to the method's clipped gradient before
  its momentum, as torch.optim.SGD(weight_decay=wd) does in their code and
  optax.add_decayed_weights does before optax.sgd. The method's perturbation
  and stored vectors then see the loss's gradient alone.
AdamW's decay is decoupled by definition (Loshchilov & Hutter, ICLR 2019),
whatever the mode: optax.adamw subtracts lr_t * wd * w after the Adam
direction and the loss has no L2 term.
"""

from typing import Optional

import optax

from sam_jax import swa


OPTIMIZERS = ("sgd", "rmsprop", "adam", "adamw")
SCHEDULES = ("cosine", "linear", "constant")


def loss_weight_decay(config) -> float:
    """The coefficient of the loss's L2 term, 0.5 * wd * |w|^2: wd in "loss"
    mode, 0 in "decoupled" mode and for AdamW (their decay is in the update)."""
    opt = config.optimizer
    if opt.name == "adamw" or opt.weight_decay_mode != "loss":
        return 0.0
    return opt.weight_decay


def l2_equivalent_weight_decay(config) -> float:
    """The wd of an L2 term equivalent to the run's decay, in either mode
    (decoupled, the decay still adds wd * w to the gradient the optimizer
    takes, so wd * I to the Hessian the analyses measure); 0 for AdamW, whose
    decay bypasses the Adam direction."""
    return 0.0 if config.optimizer.name == "adamw" else config.optimizer.weight_decay


def decayed(config, optimizer: optax.GradientTransformation
            ) -> optax.GradientTransformation:
    """`optimizer` fed the gradient plus wd * w in "decoupled" mode (torch
    SGD's weight_decay); `optimizer` itself in "loss" mode (the decay is in
    the gradient already, so the optimizer state is as before) and for AdamW
    (optax.adamw decays by itself)."""
    opt = config.optimizer
    if opt.weight_decay_mode == "loss" or opt.name == "adamw" or not opt.weight_decay:
        return optimizer
    return optax.chain(optax.add_decayed_weights(opt.weight_decay), optimizer)


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


def make_optimizer(config, total_steps: int, steps_per_epoch: Optional[int] = None, *,
                   schedule: Optional[optax.Schedule] = None
                   ) -> optax.GradientTransformation:
    """Clipping, weight decay (decoupled mode), then the base optimizer (SGD
    with momentum, RMSProp, Adam or AdamW) at `schedule`, the run's
    learning-rate schedule (when None, learning_rate_schedule's)."""
    if schedule is None:
        schedule = learning_rate_schedule(config, total_steps, steps_per_epoch)
    return clipped(config, decayed(config, base_transform(config, schedule)))
