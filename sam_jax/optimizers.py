"""The base optimizer a config asks for: learning-rate schedule, clipping, SGD.

Weight decay is not here: it is an L2 term of the loss (see steps.py), as in
the official code, so it enters SAM's perturbation too.
"""

import optax


def learning_rate_schedule(config, total_steps: int) -> optax.Schedule:
    opt = config.optimizer
    if opt.schedule == "cosine":  # the paper's: cosine, no warm-up
        return optax.cosine_decay_schedule(opt.learning_rate, total_steps)
    return optax.constant_schedule(opt.learning_rate)


def make_optimizer(config, total_steps: int) -> optax.GradientTransformation:
    """Clipping of the (device-averaged) gradient, then the base optimizer."""
    opt = config.optimizer
    schedule = learning_rate_schedule(config, total_steps)
    parts = []
    if opt.grad_clip_norm:
        parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
    if opt.name == "rmsprop":  # the official code's EfficientNet settings
        parts.append(optax.rmsprop(schedule, decay=0.9, eps=1e-3,
                                   momentum=opt.momentum or None))
    else:
        parts.append(optax.sgd(schedule, momentum=opt.momentum or None,
                               nesterov=opt.nesterov))
    return optax.chain(*parts)
