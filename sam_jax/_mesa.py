"""MESA (Du et al., NeurIPS 2022, "Sharpness-Aware Training for Free", the
memory-efficient variant of SAF): SAF's trajectory loss against the outputs of
an exponential moving average of the weights on the same batch, instead of
outputs recorded epochs earlier. One gradient evaluation and one forward pass
(of the average, in evaluation mode) per step; the average is trainer state
(checkpointed), the size of the weights and BatchNorm statistics.

As the authors' code (AngusDujw/SAF at 6e85600, MESA_train.py, with timm's
ModelEmaV2, timm/utils/model_ema.py):
- the average starts as a copy of the initial model, weights and BatchNorm
  statistics both, and after every optimizer step (from the first, whether or
  not the term is on yet) becomes decay x average + (1 - decay) x model;
- its logits on the step's batch come from a forward pass in evaluation mode
  (BatchNorm with the average's statistics, no dropout), without gradient;
- in the epochs after `start_epoch` (counted from 0) the loss adds
  lambda T^2 mean_i KL(softmax(r_i / T) || softmax(z_i / T)), r_i the average's
  logits (_saf.trajectory_loss).
Their --model-ema-decay default, 0.9998, is the average's decay here. They
evaluate and select checkpoints by the average's accuracy; this trainer
evaluates the weights.
"""

import jax
import jax.numpy as jnp

from sam_jax import family
from sam_jax import _sam
from sam_jax._saf import check_trajectory_settings, trajectory_term
from sam_jax.ranges import check_number


def moving_average(average, new, decay: float):
    """decay x average + (1 - decay) x new, leaf by leaf (timm's ModelEmaV2.update)."""
    return jax.tree_util.tree_map(
        lambda a, x: (decay * a + (1.0 - decay) * x).astype(a.dtype), average, new)


def _check_decay(decay) -> None:
    check_number("mesa.decay", decay, 0, 1, high_open=True)


def mesa_loss_term(*, weight: float = 0.8, temperature: float = 5.0,
                   start_epoch: int = 5, decay: float = 0.9998,
                   steps_per_epoch: int) -> family.LossTerm:
    """MESA's trajectory loss against an exponential moving average's outputs.

    Args:
      weight: lambda, the term's weight in the loss.
      temperature: T of the softmaxes (the term is scaled by T^2).
      start_epoch: the term is added in the epochs after this one (from 0).
      decay: the moving average's decay per step.
      steps_per_epoch: of the run (a step's epoch is step // steps_per_epoch).

    Returns:
      A `family.LossTerm` whose state is {"params", "batch_stats"}: the average.
    """
    check_trajectory_settings("mesa", weight, temperature, start_epoch)
    _check_decay(decay)
    check_number("mesa.steps_per_epoch", steps_per_epoch, 1, integer=True)

    def init(params, batch_stats):
        # Copies: a state whose leaves share buffers cannot be donated to the step.
        return jax.tree_util.tree_map(jnp.copy, {"params": params,
                                                 "batch_stats": batch_stats})

    def reference(state, batch, step, predict):
        del step
        return jax.lax.stop_gradient(predict(state, batch["image"]))

    def update(state, *, step, indices, logits, params, batch_stats):
        del step, indices, logits
        return moving_average(state, {"params": params, "batch_stats": batch_stats},
                              decay)

    return family.LossTerm(init=init, reference=reference, update=update,
                           term=trajectory_term(weight, temperature, start_epoch,
                                                steps_per_epoch))


def _build(config, ctx):
    c = config.mesa  # the loss term's settings, refused where the config is checked
    check_trajectory_settings("mesa", c.weight, c.temperature, c.start_epoch)
    _check_decay(c.decay)
    return _sam.plain_gradient(**family.common(ctx))


def _loss_term(config, *, num_examples, num_classes, steps_per_epoch):
    del num_examples, num_classes
    c = config.mesa
    return mesa_loss_term(weight=c.weight, temperature=c.temperature,
                          start_epoch=c.start_epoch, decay=c.decay,
                          steps_per_epoch=steps_per_epoch)


METHOD = family.Method(
    "mesa", "no second pass: SAF's KL trajectory loss against the outputs of an "
    "exponential moving average of the weights (one extra forward pass)",
    "Du et al., NeurIPS 2022", "sam_jax.mesa_loss_term", {
        "weight": family.Setting(0.8, "lambda, the trajectory loss's weight (the "
                                 "authors' --reinforce: 0.8 in their README and "
                                 "run.sh)"),
        "temperature": family.Setting(5.0, "T of the softmaxes, the term scaled by "
                                      "T^2 (the authors' --temperature, 5)"),
        "start_epoch": family.Setting(5, "the term is added in the epochs after "
                                      "this one, counted from 0 (the authors' "
                                      "--kl_start_epoch, 5); the average is "
                                      "updated from the first step"),
        "decay": family.Setting(0.9998, "the moving average's decay per step (timm's "
                                "--model-ema-decay default, which the authors' "
                                "run.sh keeps)"),
    }, _build, family.fixed_cost("1 (+1 forward)", "1"), loss_term=_loss_term)
