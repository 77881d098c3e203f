"""The training and evaluation steps: pure functions of (state, batch, key).

The training step is written for ONE device and is run under `jax.shard_map`
over the mesh axis `AXIS` (see `parallel.py`). It applies the training chain
`optax.chain(method, base)`: the method (sam_jax.methods) turns the gradients
of the device's groups of m examples into one gradient, the base optimizer
(clipping, SGD) steps with it. The two elements are applied in turn, so the
step sees the method's gradient (for the logs and for gradient accumulation).
The official code's semantics are kept:
- each group of m examples (m = the per-device batch by default) perturbs
  the weights with its own gradient; only the method's gradient is averaged
  over groups and devices;
- BatchNorm normalises with the statistics of each group's batch; both
  passes start from the same pre-step statistics and only the first
  (unperturbed) pass's updated statistics are kept, averaged over groups and
  devices every step (the official code averages the per-device running
  statistics at evaluation: the same, since the moving average is linear).
  With `config.sam.batch_norm = "device"` every pass normalises with the
  statistics of the whole device batch instead, each group's examples
  through its own weights, and the gradient flows through them (see
  batch_norm.pooled_batch_statistics): with rho = 0 any m is then the step of
  m = the device batch. With
  `freeze_batch_norm` (finetuning) both passes use the running statistics,
  which stay as they are;
- both passes share the random draws (dropout, Shake-Shake, ShakeDrop): the
  key depends on (step, global group index) only; the pass at w takes the
  true gradient of Shake-Shake / ShakeDrop when it only feeds a perturbation
  (the official code's `true_gradient=True`);
- weight decay is an L2 term inside the loss, so it enters the perturbation;
- gradient clipping after the mean over devices;
- a method's loss term (SAF, MESA: family.LossTerm) is added to every pass's
  loss against each example's reference outputs, drawn from
  state.loss_term_state before the passes and updated after the weights;
- the logged training loss and error come from the pass whose gradient the
  method returned (the perturbed one for SAM); clean_loss / clean_error from
  the pass at w.
With `grad_accum_steps` = K, each device's batch runs as K microbatches one
after another (lax.scan), each with its own groups; the method's gradients and
the first pass's BatchNorm statistics are averaged over them and one update
is applied.
"""

import contextlib
import functools
import inspect
from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import optax

from sam_jax import batch_norm
from sam_jax.collectives import gather_in_device_order, per_device, pmean
from sam_jax.groups import group_mean

AXIS = "batch"
# The vmap axis of a device's groups of m examples.
GROUP_AXIS = "group"

# Training metrics summed between reports (with "steps"); the step info of the
# method adds perturbation_share/<top-level parameter group> entries.
METRIC_NAMES = ("loss", "error", "clean_loss", "clean_error", "sharpness",
                "grad_norm", "grad_norm_before_clip", "clean_grad_norm",
                "perturbation_norm", "cosine", "rho", "gradient_evaluations")
SHARE_PREFIX = "perturbation_share/"


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue bit-for-bit from a checkpoint.

    opt_state: the chain's state, (method state, base optimizer state).
    metrics_sum: training metrics summed since the last report, plus "steps",
      the number of (finite) steps summed, so a report after a resume averages
      the same steps as an uninterrupted run.
    gradient_evaluations: forward + backward passes so far (the cost ledger).
    train_seconds: wall-clock seconds of training so far (compilation,
      evaluation and checkpoints left out), set by the loop at reports and
      checkpoints.
    swa: with Stochastic Weight Averaging (swa.py), {"params": the average,
      "count": the weights averaged}; None without it.
    nonfinite_steps / first_nonfinite_step: count and first step (-1: none) whose
      loss or gradient was not finite; checked on the host only at reports and
      checkpoints, so the loop never waits on the device.
    loss_term_state: the state of the method's loss term (family.LossTerm:
      SAF's recorded outputs, MESA's averaged weights); None without one.
    """
    step: jnp.ndarray
    params: Any
    batch_stats: Any
    opt_state: Any
    metrics_sum: Any
    gradient_evaluations: jnp.ndarray
    train_seconds: jnp.ndarray
    nonfinite_steps: jnp.ndarray
    first_nonfinite_step: jnp.ndarray
    swa: Any = None
    loss_term_state: Any = None


def metric_names(params) -> tuple:
    keys = list(params.keys()) if isinstance(params, dict) else []
    return METRIC_NAMES + tuple(SHARE_PREFIX + k for k in keys)


def zero_metrics_sum(names):
    return {name: jnp.zeros([], jnp.float32) for name in tuple(names) + ("steps",)}


def new_train_state(params, batch_stats, opt_state, with_swa: bool = False,
                    loss_term=None) -> TrainState:
    from sam_jax import swa  # the average's empty state
    return TrainState(step=jnp.zeros([], jnp.int32), params=params,
                      batch_stats=batch_stats, opt_state=opt_state,
                      metrics_sum=zero_metrics_sum(metric_names(params)),
                      gradient_evaluations=jnp.zeros([], jnp.float32),
                      train_seconds=jnp.zeros([], jnp.float32),
                      nonfinite_steps=jnp.zeros([], jnp.int32),
                      first_nonfinite_step=jnp.full([], -1, jnp.int32),
                      swa=swa.empty(params) if with_swa else None,
                      loss_term_state=None if loss_term is None
                      else loss_term.init(params, batch_stats))


def initial_state(seed: int, model, tx: optax.GradientTransformation,
                  image_shape, with_swa: bool = False, loss_term=None) -> TrainState:
    """The step-0 state: the model initialised from `seed`, the optimizer's state."""
    key = jax.random.PRNGKey(seed)
    variables = model.init({"params": key, "dropout": key},
                           jnp.zeros((1,) + tuple(image_shape), jnp.float32),
                           train=False)
    params = variables["params"]
    return new_train_state(params, variables.get("batch_stats", {}), tx.init(params),
                           with_swa, loss_term)


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
    """Per-example cross entropy with optional label smoothing, in float32."""
    logits = logits.astype(jnp.float32)
    num_classes = logits.shape[-1]
    targets = jax.nn.one_hot(labels, num_classes)
    if label_smoothing:
        targets = (1 - label_smoothing) * targets + label_smoothing / num_classes
    return -jnp.sum(targets * jax.nn.log_softmax(logits), axis=-1)


def l2_penalty(params):
    """0.5 * sum of squares of every parameter (biases and BN included)."""
    return 0.5 * sum(jnp.sum(jnp.square(p.astype(jnp.float32)))
                     for p in jax.tree_util.tree_leaves(params))


def top_k_correct(logits, labels, k: int):
    """Per-example 1.0 where the label is among the k largest logits."""
    k = min(k, logits.shape[-1])
    label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    # Rank = number of classes with a strictly larger logit.
    rank = jnp.sum(logits > label_logit, axis=-1)
    return (rank < k).astype(jnp.float32)


def takes_true_gradient(model) -> bool:
    """Whether the model has Shake-Shake / ShakeDrop's `true_gradient` switch."""
    return "true_gradient" in inspect.signature(type(model).__call__).parameters


def aux_example() -> dict:
    """The aux the training step's grad_fn returns beside each gradient."""
    zero = jnp.zeros([], jnp.float32)
    return {"loss": zero, "error": zero}


GROUP_LOOPS = ("vmap", "unrolled")
# "auto" unrolls up to this many groups per microbatch: the program, and so its
# compilation time, grows with each group. Only 2 to 4 groups were timed
# (experiments/benchmarks/cpu_step.md); above the cap vmap is kept unmeasured.
MAX_UNROLLED_GROUPS = 8


def auto_group_loop(groups_per_microbatch: int, device_statistics: bool,
                    backend: Optional[str] = None) -> str:
    """"unrolled" on the CPU for 2 to MAX_UNROLLED_GROUPS groups with BatchNorm
    over the group, else "vmap". A vmap over groups with their own weights makes
    every convolution a grouped one (each group its own kernel), which XLA:CPU
    runs several times slower than the same convolutions one group at a time;
    other backends batch them well (experiments/benchmarks/cpu_step.md)."""
    backend = backend or jax.default_backend()
    if (backend == "cpu" and not device_statistics
            and 1 < groups_per_microbatch <= MAX_UNROLLED_GROUPS):
        return "unrolled"
    return "vmap"


def _map_groups(fn, loop: str):
    """fn over the leading (group) axis of its arguments, outputs stacked:
    "vmap" batches the groups along GROUP_AXIS (pooled BatchNorm's
    collectives need it); "unrolled" traces one call per group, in one
    program (not a loop: XLA:CPU runs convolutions inside a while loop
    several times slower)."""
    if loop == "vmap":
        return jax.vmap(fn, axis_name=GROUP_AXIS)

    def unrolled(*args):
        count = jax.tree_util.tree_leaves(args)[0].shape[0]
        outputs = [fn(*jax.tree_util.tree_map(lambda x, i=i: x[i], args))
                   for i in range(count)]
        return jax.tree_util.tree_map(lambda *ys: jnp.stack(ys), *outputs)
    return unrolled


def _split_groups(tree, num_microbatches: int, groups_per_microbatch: int):
    """[B, ...] -> [K, G_k, m, ...]."""
    return jax.tree_util.tree_map(
        lambda x: x.reshape((num_microbatches, groups_per_microbatch, -1) + x.shape[1:]),
        tree)


def _mean_of_states(states, num_microbatches: int):
    """The mean over microbatches of their method states: float leaves averaged
    (a state linear in the gradients stays exact), the others (counts, which
    every microbatch advances alike) from the last."""
    def reduce(x):
        if jnp.issubdtype(x.dtype, jnp.floating):
            return jnp.mean(x, axis=0).astype(x.dtype)
        return x[num_microbatches - 1]
    return jax.tree_util.tree_map(reduce, states)


def _advance_counters_only(new, old, keep_new):
    """Where the step is skipped (keep_new False), the old optimizer state, but
    with the new step counters, so schedules stay in step with the state's
    step, and the new step reports (they describe the skipped step)."""
    def choose(path, a, b):
        names = [getattr(k, "name", getattr(k, "key", None)) for k in path]
        if "info" in names or not jnp.issubdtype(a.dtype, jnp.floating):
            return a
        return jnp.where(keep_new, a, b)
    return jax.tree_util.tree_map_with_path(choose, new, old)


def make_train_step(model, method_tx, base_tx, *, examples_per_perturbation: int,
                    per_device_batch: int, grad_accum_steps: int = 1,
                    weight_decay: float, label_smoothing: float,
                    clean_pass_true_gradient: bool = False,
                    example_losses: bool = False, batch_norm_over: str = "group",
                    grad_clip_norm: float = 0.0, skip_nonfinite: bool = False,
                    freeze_batch_norm: bool = False, group_loop: str = "vmap",
                    loss_term=None):
    """Returns `train_step(state, batch, key) -> state` for one device.

    Args:
      model: the flax module.
      method_tx: the method (grouped form; sam_jax.methods.make_method).
      base_tx: the base optimizer (clipping included).
      examples_per_perturbation: m; it divides the microbatch.
      per_device_batch: examples per device and step.
      grad_accum_steps: K microbatches per device and step.
      weight_decay, label_smoothing: of the loss.
      clean_pass_true_gradient: the pass at w takes Shake-Shake / ShakeDrop's
        true gradient (if the model has the switch).
      example_losses: the method needs per-example losses (ESAM).
      batch_norm_over: "group" or "device" (see the module docstring).
      grad_clip_norm: the base optimizer's clipping norm (for the log of the
        clipped gradient's norm; 0: no clipping).
      skip_nonfinite: a step whose loss or gradient is not finite leaves the
        weights, optimizer and BatchNorm state unchanged (the step counter,
        the optimizer's step counters and so the data and schedules still
        advance); otherwise it is applied and the loop stops at its next check.
      freeze_batch_norm: BatchNorm layers use their running statistics in every
        pass and `state.batch_stats` is never changed.
      group_loop: how a microbatch's groups run in one program (`_map_groups`):
        "vmap", "unrolled", or "auto" (`auto_group_loop`). The same numbers up
        to float reassociation.
      loss_term: the method's family.LossTerm, or None: each example's
        reference outputs join the batch before it is split into groups, every
        pass adds the term to its group's loss, and its state
        (state.loss_term_state) is updated after the weights, from the pass at
        w's logits of the whole global batch (gathered over the devices).
    """
    m = examples_per_perturbation
    microbatch = per_device_batch // grad_accum_steps
    groups_per_microbatch = microbatch // m
    num_groups = per_device_batch // m
    true_gradient = clean_pass_true_gradient and takes_true_gradient(model)
    device_statistics = batch_norm_over == "device" and not freeze_batch_norm
    loop = group_loop
    if loop == "auto":
        loop = auto_group_loop(groups_per_microbatch, device_statistics)
    if loop not in GROUP_LOOPS or (loop == "unrolled" and device_statistics):
        raise ValueError(f"group_loop={group_loop!r}; allowed: {', '.join(GROUP_LOOPS)}, "
                         "auto (unrolled only with BatchNorm over the group)")
    map_groups = functools.partial(_map_groups, loop=loop)

    def train_step(state: TrainState, batch, key):
        step_key = jax.random.fold_in(key, state.step)
        first_group = jax.lax.axis_index(AXIS) * num_groups
        method_state, base_state = state.opt_state
        if loss_term is not None:
            def predict(variables, images):
                return model.apply(variables, images, train=False).astype(jnp.float32)
            batch = dict(batch, reference=loss_term.reference(
                state.loss_term_state, batch, state.step, predict))

        def apply(params, images, group_index, first_pass):
            rng = jax.random.fold_in(step_key, first_group + group_index)
            if freeze_batch_norm:
                context = batch_norm.frozen_batch_norm()
            elif device_statistics:
                context = batch_norm.pooled_batch_statistics(GROUP_AXIS)
            else:
                context = contextlib.nullcontext()
            extra = {"true_gradient": True} if first_pass and true_gradient else {}
            with context:
                return model.apply({"params": params, "batch_stats": state.batch_stats},
                                   images, train=True, mutable=["batch_stats"],
                                   rngs={"dropout": rng}, **extra)

        def group_loss(params, group, group_index, first_pass):
            logits, mutated = apply(params, group["image"], group_index, first_pass)
            example_ce = cross_entropy(logits, group["label"], label_smoothing)
            ce = example_ce.mean()
            error = jnp.mean(jnp.argmax(logits, -1) != group["label"])
            loss = ce + weight_decay * l2_penalty(params)
            aux = {"batch_stats": mutated["batch_stats"], "loss": ce, "error": error,
                   "example_loss": example_ce}
            if loss_term is not None:
                loss = loss + loss_term.term(logits, group["reference"], state.step)
                aux["logits"] = logits.astype(jnp.float32)
            return loss, aux

        value_and_grad = jax.value_and_grad(group_loss, has_aux=True)

        def microbatch_update(groups, indices):
            """The method's gradient for one microbatch of G_k groups.

            The groups are vmapped along GROUP_AXIS. With BatchNorm over the
            device (pooled statistics), the transpose of the pooling adds every
            group's loss into each group's gradient: a group's gradient is then
            G_k times that of the microbatch's mean loss with respect to the
            group's weights, so their mean is the microbatch's gradient."""
            params_per_device = per_device(state.params, AXIS)

            def clean(group, index):
                return value_and_grad(params_per_device, group, index, True)
            (_, aux), g = map_groups(clean)(groups, indices)
            clean_metrics = {"loss": aux["loss"], "error": aux["error"]}

            def grad_fn(weights, indices_of_examples=None):
                def one(w, group, index, chosen):
                    if chosen is not None:
                        group = jax.tree_util.tree_map(lambda x: x[chosen], group)
                    (_, p_aux), p_grads = value_and_grad(w, group, index, False)
                    return p_grads, {"loss": p_aux["loss"], "error": p_aux["error"]}
                return map_groups(one)(weights, groups, indices, indices_of_examples)

            extra = {}
            if example_losses:
                extra["example_losses"] = aux["example_loss"]
                extra["example_losses_fn"] = lambda weights: map_groups(
                    lambda w, group, index: group_loss(w, group, index,
                                                       False)[1]["example_loss"])(
                    weights, groups, indices)
            direction, new_method_state = method_tx.update(
                g, method_state, state.params,
                grad_fn=lambda w, indices=None: grad_fn(w, indices),
                aux=clean_metrics, **extra)
            # Pooled statistics: every group updated them alike.
            batch_stats = group_mean(aux["batch_stats"])
            return (direction, new_method_state, batch_stats, group_mean(clean_metrics),
                    aux.get("logits"))

        groups = _split_groups(batch, grad_accum_steps, groups_per_microbatch)
        indices = jnp.arange(num_groups, dtype=jnp.int32).reshape(
            grad_accum_steps, groups_per_microbatch)
        if grad_accum_steps == 1:
            direction, method_state, batch_stats, clean, logits = microbatch_update(
                jax.tree_util.tree_map(lambda x: x[0], groups), indices[0])
        else:
            outputs = jax.lax.map(lambda xs: microbatch_update(*xs), (groups, indices))
            direction, batch_stats, clean = jax.tree_util.tree_map(
                lambda x: jnp.mean(x, axis=0).astype(x.dtype),
                (outputs[0], outputs[2], outputs[3]))
            method_state = _mean_of_states(outputs[1], grad_accum_steps)
            logits = outputs[4]
        batch_stats, clean = pmean((batch_stats, clean), AXIS)
        if freeze_batch_norm:
            batch_stats = state.batch_stats

        updates, base_state = base_tx.update(direction, base_state, state.params)
        params = optax.apply_updates(state.params, updates)
        opt_state = (method_state, base_state)
        loss_term_state = state.loss_term_state
        if loss_term is not None:
            example_indices = example_logits = None
            if loss_term.example_indices:  # [K, G_k, m, C] -> the device batch's rows
                example_indices, example_logits = gather_in_device_order(
                    (batch["index"], logits.reshape((-1, logits.shape[-1]))), AXIS)
            loss_term_state = loss_term.update(
                state.loss_term_state, step=state.step, indices=example_indices,
                logits=example_logits, params=params, batch_stats=batch_stats)

        info = method_state.info
        grad_norm = optax.tree.norm(direction)
        metrics = {
            "loss": info.aux["loss"], "error": info.aux["error"],
            "clean_loss": clean["loss"], "clean_error": clean["error"],
            "sharpness": info.aux["loss"] - clean["loss"],
            "grad_norm_before_clip": grad_norm,
            "grad_norm": (jnp.minimum(grad_norm, grad_clip_norm) if grad_clip_norm
                          else grad_norm),
            "clean_grad_norm": info.grad_norm,
            "perturbation_norm": info.perturbation_norm, "cosine": info.cosine,
            "rho": info.rho, "gradient_evaluations": info.gradient_evaluations,
            **{SHARE_PREFIX + k: v for k, v in info.perturbation_share.items()},
        }
        metrics = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), metrics)
        finite = (jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["clean_loss"])
                  & jnp.isfinite(grad_norm))
        if skip_nonfinite:
            keep = lambda new, old: jax.tree_util.tree_map(
                lambda a, b: jnp.where(finite, a, b), new, old)
            params = keep(params, state.params)
            opt_state = _advance_counters_only(opt_state, state.opt_state, finite)
            batch_stats = keep(batch_stats, state.batch_stats)
            loss_term_state = keep(loss_term_state, state.loss_term_state)
        metrics["steps"] = jnp.float32(1.0)
        metrics_sum = jax.tree_util.tree_map(
            lambda total, x: total + jnp.where(finite, x, 0.0),
            state.metrics_sum, metrics)
        return state.replace(
            step=state.step + 1, params=params, batch_stats=batch_stats,
            opt_state=opt_state, metrics_sum=metrics_sum, loss_term_state=loss_term_state,
            gradient_evaluations=state.gradient_evaluations
            + metrics["gradient_evaluations"],
            nonfinite_steps=state.nonfinite_steps + (~finite).astype(jnp.int32),
            first_nonfinite_step=jnp.where(
                (state.first_nonfinite_step < 0) & ~finite, state.step,
                state.first_nonfinite_step))

    # Pooling BatchNorm over the vmapped groups is a collective over a vmap
    # axis, which the varying-axes check of JAX 0.10's shard_map refuses
    # (parallel.shard_train_step reads this).
    train_step.check_vma = not device_statistics
    return train_step


def make_eval_step(model, top_k: int = 5):
    """Returns `eval_step(state, batch) -> sums` over the unmasked examples."""

    def eval_step(state: TrainState, batch):
        logits = model.apply({"params": state.params,
                              "batch_stats": state.batch_stats},
                             batch["image"], train=False)
        logits = logits.astype(jnp.float32)
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
