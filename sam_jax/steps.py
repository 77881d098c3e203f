"""The training and evaluation steps: pure functions of (state, batch, key).

The training step is written for ONE device and is run under
`jax.shard_map` over the mesh axis `AXIS` (see `parallel.py`), which gives the
official code's per-device semantics:
- each device (or each group of m examples, see `grouped_sam_gradient`)
  perturbs the weights with its own gradient; only the SAM gradient is averaged;
- BatchNorm normalises with the statistics of each device's (group's) batch;
  both passes start from the same pre-step statistics and only the first
  (unperturbed) pass's updated statistics are kept. They are averaged over
  devices every step, which equals the official code's averaging of per-device
  running statistics at evaluation time, since the moving average is linear.
  With `freeze_batch_norm` (finetuning) both passes normalise with the running
  statistics instead and those stay as they are (see batch_norm.py);
- both passes share the random draws (dropout, ShakeDrop): the key depends on
  (step, global group index) only;
- weight decay is an L2 term inside the loss, so it enters the perturbation too;
- the logged training loss and error come from the perturbed pass when SAM is on.
"""

import contextlib
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from sam_jax import _sam
from sam_jax.batch_norm import frozen_batch_norm

AXIS = "batch"


METRIC_NAMES = ("loss", "error", "clean_loss", "clean_error", "grad_norm")


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue bit-for-bit from a checkpoint.

    metrics_sum: training metrics summed since the last report, plus "steps",
      the number of (finite) steps summed, so a report after a resume averages
      the same steps as an uninterrupted run.
    nonfinite_steps / first_nonfinite_step: count and first step (-1: none) whose
      loss or gradient was not finite; checked on the host only at reports and
      checkpoints, so the loop never waits on the device.
    """
    step: jnp.ndarray
    params: Any
    batch_stats: Any
    opt_state: Any
    metrics_sum: Any
    nonfinite_steps: jnp.ndarray
    first_nonfinite_step: jnp.ndarray


def zero_metrics_sum():
    return {name: jnp.zeros([], jnp.float32) for name in METRIC_NAMES + ("steps",)}


def new_train_state(params, batch_stats, opt_state) -> TrainState:
    return TrainState(step=jnp.zeros([], jnp.int32), params=params,
                      batch_stats=batch_stats, opt_state=opt_state,
                      metrics_sum=zero_metrics_sum(),
                      nonfinite_steps=jnp.zeros([], jnp.int32),
                      first_nonfinite_step=jnp.full([], -1, jnp.int32))


def initial_state(seed: int, model, tx: optax.GradientTransformation,
                  image_shape) -> TrainState:
    """The step-0 state: the model initialised from `seed`, the optimizer's state."""
    key = jax.random.PRNGKey(seed)
    variables = model.init({"params": key, "dropout": key},
                           jnp.zeros((1,) + tuple(image_shape), jnp.float32),
                           train=False)
    params = variables["params"]
    return new_train_state(params, variables.get("batch_stats", {}), tx.init(params))


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
    """Per-example cross entropy with optional label smoothing."""
    num_classes = logits.shape[-1]
    targets = jax.nn.one_hot(labels, num_classes)
    if label_smoothing:
        targets = (1 - label_smoothing) * targets + label_smoothing / num_classes
    return -jnp.sum(targets * jax.nn.log_softmax(logits), axis=-1)


def l2_penalty(params):
    """0.5 * sum of squares of every parameter (biases and BN included)."""
    return 0.5 * sum(jnp.sum(jnp.square(p)) for p in jax.tree_util.tree_leaves(params))


def top_k_correct(logits, labels, k: int):
    """Per-example 1.0 where the label is among the k largest logits."""
    k = min(k, logits.shape[-1])
    label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    # Rank = number of classes with a strictly larger logit.
    rank = jnp.sum(logits > label_logit, axis=-1)
    return (rank < k).astype(jnp.float32)


def make_train_step(model, tx: optax.GradientTransformation, *, rho: float,
                    adaptive: bool, eta: float, sync_perturbation: bool,
                    examples_per_perturbation: int, per_device_batch: int,
                    group_map: str, weight_decay: float, label_smoothing: float,
                    skip_nonfinite: bool = False, freeze_batch_norm: bool = False):
    """Returns `train_step(state, batch, key) -> state` for one device.

    With `freeze_batch_norm`, BatchNorm layers use their running statistics in
    both SAM passes and `state.batch_stats` is never changed. With
    `skip_nonfinite`, a step whose loss or gradient is not finite leaves the
    weights, optimizer and BatchNorm state unchanged (the step counter and so
    the data still advance); otherwise it is applied and the loop stops at its
    next check.
    """
    num_groups = per_device_batch // examples_per_perturbation

    def train_step(state: TrainState, batch, key):
        step_key = jax.random.fold_in(key, state.step)
        first_group = jax.lax.axis_index(AXIS) * num_groups

        def loss_fn(params, group, group_index):
            # Same key in both passes; independent of the device count.
            rng = jax.random.fold_in(step_key, first_group + group_index)
            frozen = frozen_batch_norm() if freeze_batch_norm else contextlib.nullcontext()
            with frozen:
                logits, mutated = model.apply(
                    {"params": params, "batch_stats": state.batch_stats},
                    group["image"], train=True, mutable=["batch_stats"],
                    rngs={"dropout": rng})
            ce = cross_entropy(logits, group["label"], label_smoothing).mean()
            error = jnp.mean(jnp.argmax(logits, -1) != group["label"])
            loss = ce + weight_decay * l2_penalty(params)
            return loss, (mutated["batch_stats"], ce, error)

        out = _sam.grouped_sam_gradient(
            loss_fn, state.params, batch, rho=rho,
            examples_per_perturbation=examples_per_perturbation,
            adaptive=adaptive, eta=eta, axis_name=AXIS,
            sync_perturbation=sync_perturbation, group_map=group_map)

        def mean_over_groups_and_devices(tree):
            return jax.lax.pmean(
                jax.tree_util.tree_map(lambda x: jnp.mean(x, axis=0), tree), AXIS)

        batch_stats = (state.batch_stats if freeze_batch_norm else
                       mean_over_groups_and_devices(out.clean_aux[0]))
        updates, opt_state = tx.update(out.grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        _, ce, error = out.perturbed_aux
        metrics = mean_over_groups_and_devices({
            "loss": ce, "error": error, "clean_loss": out.clean_aux[1],
            "clean_error": out.clean_aux[2]})
        metrics["grad_norm"] = optax.tree.norm(out.grads)
        finite = (jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["clean_loss"])
                  & jnp.isfinite(metrics["grad_norm"]))
        if skip_nonfinite:
            keep = lambda new, old: jax.tree_util.tree_map(
                lambda a, b: jnp.where(finite, a, b), new, old)
            params = keep(params, state.params)
            opt_state = keep(opt_state, state.opt_state)
            batch_stats = keep(batch_stats, state.batch_stats)
        metrics["steps"] = jnp.float32(1.0)
        metrics_sum = jax.tree_util.tree_map(
            lambda total, x: total + jnp.where(finite, x, 0.0),
            state.metrics_sum, metrics)
        return state.replace(
            step=state.step + 1, params=params, batch_stats=batch_stats,
            opt_state=opt_state, metrics_sum=metrics_sum,
            nonfinite_steps=state.nonfinite_steps + (~finite).astype(jnp.int32),
            first_nonfinite_step=jnp.where(
                (state.first_nonfinite_step < 0) & ~finite, state.step,
                state.first_nonfinite_step))

    return train_step


def make_eval_step(model, top_k: int = 5):
    """Returns `eval_step(state, batch) -> sums` over the unmasked examples."""

    def eval_step(state: TrainState, batch):
        logits = model.apply({"params": state.params,
                              "batch_stats": state.batch_stats},
                             batch["image"], train=False)
        mask = batch["mask"]
        labels = batch["label"]
        return {
            "count": jnp.sum(mask),
            "loss": jnp.sum(cross_entropy(logits, labels) * mask),
            "error": jnp.sum((1.0 - top_k_correct(logits, labels, 1)) * mask),
            f"top{top_k}_error": jnp.sum(
                (1.0 - top_k_correct(logits, labels, top_k)) * mask),
        }

    return eval_step
