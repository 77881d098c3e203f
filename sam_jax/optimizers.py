"""The base optimizer a config asks for: learning-rate schedule, clipping,
weight decay (decoupled mode), SGD.

Weight decay has two places (config.optimizer.weight_decay_mode):
- "loss" (the default, the SAM paper's official code): an L2 term of the loss
  (steps.py), so it is in every gradient the method takes, the perturbation
  included; nothing here;
- "decoupled" (the authors of GSAM, LookSAM, ESAM, RWP and SAMPa): not in the
  loss; the base optimizer adds wd * w to the method's clipped gradient before
  its momentum, as torch.optim.SGD(weight_decay=wd) does in their code and
  optax.add_decayed_weights does before optax.sgd. The method's perturbation
  and stored vectors then see the loss's gradient alone.
"""

from typing import Optional

import optax

from sam_jax import swa


def learning_rate_schedule(config, total_steps: int,
                           steps_per_epoch: Optional[int] = None) -> optax.Schedule:
    """The paper's cosine (no warm-up) or a constant rate; with SWA and its own
    learning rate, SWA's schedule (swa.py; needs steps_per_epoch)."""
    opt = config.optimizer
    if opt.schedule == "cosine":
        base = optax.cosine_decay_schedule(opt.learning_rate, total_steps)
    else:
        base = optax.constant_schedule(opt.learning_rate)
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


def loss_weight_decay(config) -> float:
    """The L2 coefficient of the training loss: wd in "loss" mode, else 0."""
    if config.optimizer.weight_decay_mode == "loss":
        return config.optimizer.weight_decay
    return 0.0


def decayed(config, optimizer: optax.GradientTransformation
            ) -> optax.GradientTransformation:
    """`optimizer` fed the gradient plus wd * w in "decoupled" mode (torch
    SGD's weight_decay); `optimizer` itself in "loss" mode (the decay is in
    the gradient already), so the optimizer state is as before."""
    wd = config.optimizer.weight_decay
    if config.optimizer.weight_decay_mode == "loss" or not wd:
        return optimizer
    return optax.chain(optax.add_decayed_weights(wd), optimizer)


def base_transform(config, schedule: optax.Schedule) -> optax.GradientTransformation:
    """The base optimizer at `schedule`, unclipped: SGD with momentum, or RMSProp."""
    opt = config.optimizer
    if opt.name == "rmsprop":  # the official code's EfficientNet settings
        return optax.rmsprop(schedule, decay=0.9, eps=1e-3, momentum=opt.momentum or None)
    return optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.nesterov)


def make_optimizer(config, total_steps: int, steps_per_epoch: Optional[int] = None
                   ) -> optax.GradientTransformation:
    """Clipping, weight decay (decoupled mode), then the base optimizer (SGD
    with momentum, or RMSProp)."""
    schedule = learning_rate_schedule(config, total_steps, steps_per_epoch)
    return clipped(config, decayed(config, base_transform(config, schedule)))
