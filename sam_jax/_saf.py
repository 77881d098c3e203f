"""SAF (Du, Zhou, Feng, Tan & Zhou, NeurIPS 2022, "Sharpness-Aware Training
for Free"): SAM's second pass replaced by a trajectory loss, the KL divergence
between the model's current outputs on an example and its outputs on the same
example E epochs earlier. One gradient evaluation per step; the price is the
recorded outputs, E x N x classes float32 for N training examples, kept in the
trainer's state (checkpointed; replicated on every device).

As the authors' code (AngusDujw/SAF at 6e85600, SAF_train.py, train_one_epoch):
- each example's logits from the step's pass (training mode) are recorded each
  time it is seen, by its index in the training set;
- in the epochs after `start_epoch` (epochs counted from 0: their
  `epoch > kl_start_epoch`) the loss adds
    lambda T^2 mean_i KL(softmax(r_i / T) || softmax(z_i / T)),
  z_i the current logits, r_i example i's logits recorded E epochs earlier (a
  constant: they were detached);
- the update is the base optimizer's on that loss's gradient (the `sgd`
  method's plain gradient here).
The authors keep E + 1 records per example (write slot e mod (E + 1), read
(e - E) mod (E + 1)); we keep E and read slot e mod E in a step before writing
it: the same outputs whenever an example is seen every epoch. An epoch leaves
out the examples of its last partial batch (theirs too: timm drops it), whose
record then stays older, and an example never seen yet compares with zero
logits (a uniform distribution), in either scheme. We compute the KL from
log_softmax (theirs: softmax(.).log(), which is -inf where a probability
underflows).
"""

import jax
import jax.numpy as jnp

from sam_jax import family
from sam_jax import _sam
from sam_jax.ranges import check_number


def trajectory_loss(logits, reference, temperature: float):
    """T^2 times the mean over examples of KL(softmax(reference / T) ||
    softmax(logits / T)), the reference held constant (the authors'
    F.kl_div(log softmax(z / T), softmax(r / T)).sum(-1).mean() * T^2). Its
    gradient with respect to the logits is T (softmax(z / T) - softmax(r / T))
    / number of examples."""
    reference = jax.lax.stop_gradient(jnp.asarray(reference, jnp.float32))
    log_p = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32) / temperature)
    log_q = jax.nn.log_softmax(reference / temperature)
    kl = jnp.sum(jnp.exp(log_q) * (log_q - log_p), axis=-1)
    return temperature ** 2 * jnp.mean(kl)


def check_trajectory_settings(name: str, weight, temperature, start_epoch) -> None:
    check_number(f"{name}.weight", weight, 0)
    check_number(f"{name}.temperature", temperature, 0, low_open=True)
    check_number(f"{name}.start_epoch", start_epoch, 0, integer=True)


def _check_delay(delay_epochs, start_epoch) -> None:
    check_number("saf.delay_epochs", delay_epochs, 1, start_epoch + 1, integer=True,
                 alternative="at most saf.start_epoch + 1: the outputs it compares "
                 "with are recorded from epoch 0 on")


def trajectory_term(weight: float, temperature: float, start_epoch: int,
                    steps_per_epoch: int):
    """(logits, reference, step) -> weight x trajectory_loss in the epochs after
    start_epoch, else 0 (a select, so nothing of the term reaches the gradient
    before)."""
    def term(logits, reference, step):
        active = step // steps_per_epoch > start_epoch
        return jnp.where(active, weight * trajectory_loss(logits, reference, temperature),
                         0.0)
    return term


def saf_loss_term(*, weight: float = 0.3, temperature: float = 5.0,
                  start_epoch: int = 5, delay_epochs: int = 3, num_examples: int,
                  num_classes: int, steps_per_epoch: int) -> family.LossTerm:
    """SAF's trajectory loss against the outputs recorded `delay_epochs` earlier.

    Args:
      weight: lambda, the term's weight in the loss.
      temperature: T of the softmaxes (the term is scaled by T^2).
      start_epoch: the term is added in the epochs after this one (from 0).
      delay_epochs: E, how many epochs back the compared outputs were recorded.
      num_examples, num_classes: of the training set (the records' shape).
      steps_per_epoch: of the run (a step's epoch is step // steps_per_epoch).

    Returns:
      A `family.LossTerm` whose state is {"outputs": float32 [E, N, classes]}.
    """
    check_trajectory_settings("saf", weight, temperature, start_epoch)
    _check_delay(delay_epochs, start_epoch)
    check_number("saf.num_examples", num_examples, 1, integer=True)
    check_number("saf.steps_per_epoch", steps_per_epoch, 1, integer=True)

    def slot(step):
        return (step // steps_per_epoch) % delay_epochs

    def init(params, batch_stats):
        del params, batch_stats
        return {"outputs": jnp.zeros((delay_epochs, num_examples, num_classes),
                                     jnp.float32)}

    def reference(state, batch, step, predict):
        del predict
        return state["outputs"][slot(step)][batch["index"]]

    def update(state, *, step, indices, logits, params, batch_stats):
        del params, batch_stats
        return {"outputs": state["outputs"].at[slot(step), indices].set(
            jnp.asarray(logits, jnp.float32))}

    return family.LossTerm(init=init, reference=reference, update=update,
                           term=trajectory_term(weight, temperature, start_epoch,
                                                steps_per_epoch),
                           example_indices=True)


def _build(config, ctx):
    c = config.saf  # the loss term's settings, refused where the config is checked
    check_trajectory_settings("saf", c.weight, c.temperature, c.start_epoch)
    _check_delay(c.delay_epochs, c.start_epoch)
    return _sam.plain_gradient(**family.common(ctx))


def _loss_term(config, *, num_examples, num_classes, steps_per_epoch):
    c = config.saf
    return saf_loss_term(weight=c.weight, temperature=c.temperature,
                         start_epoch=c.start_epoch, delay_epochs=c.delay_epochs,
                         num_examples=num_examples, num_classes=num_classes,
                         steps_per_epoch=steps_per_epoch)


METHOD = family.Method(
    "saf", "no second pass: a KL trajectory loss against each example's outputs "
    "recorded E epochs earlier (stores E x N x classes floats)",
    "Du et al., NeurIPS 2022", "sam_jax.saf_loss_term", {
        "weight": family.Setting(0.3, "lambda, the trajectory loss's weight (the "
                                 "authors' --reinforce: 0.3 in their README and "
                                 "run.sh)"),
        "temperature": family.Setting(5.0, "T of the softmaxes, the term scaled by "
                                      "T^2 (the authors' --temperature, 5)"),
        "start_epoch": family.Setting(5, "the term is added in the epochs after "
                                      "this one, counted from 0 (the authors' "
                                      "--kl_start_epoch, 5)"),
        "delay_epochs": family.Setting(3, "E, the epochs between the recorded and "
                                       "the current outputs (the authors' "
                                       "--minus_epoch: 3 in SAF_train.py, 2 in "
                                       "run.sh); at most start_epoch + 1"),
    }, _build, family.fixed_cost("1", "1"), loss_term=_loss_term, example_indices=True)
