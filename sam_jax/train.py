"""train_and_evaluate(config, workdir): the one training loop.

Every run, whatever the model, data set or optimizer variant, goes through this
loop; configs in configs/ select what differs. A run is a pure function of its
config: data order, augmentation, label noise and random draws derive from
(seed, step), so a run restarted from its latest checkpoint continues exactly
where it stopped.
"""

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from sam_jax import checkpoint
from sam_jax import data
from sam_jax import parallel
from sam_jax import preemption
from sam_jax import pretrained
from sam_jax import reporting
from sam_jax import steps
from sam_jax import validate
from sam_jax import workdir as workdir_lib
from sam_jax.models import get_model


def learning_rate_schedule(config, total_steps: int) -> optax.Schedule:
    opt = config.optimizer
    if opt.schedule == "cosine":  # the paper's: cosine, no warm-up
        return optax.cosine_decay_schedule(opt.learning_rate, total_steps)
    return optax.constant_schedule(opt.learning_rate)


def make_optimizer(config, total_steps: int) -> optax.GradientTransformation:
    """Clipping of the (device-averaged) SAM gradient, then the base optimizer.

    Weight decay is not here: it is an L2 term of the loss (see steps.py).
    """
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


def initial_state(config, model, tx, image_shape) -> steps.TrainState:
    key = jax.random.PRNGKey(config.seed)
    variables = model.init({"params": key, "dropout": key},
                           jnp.zeros((1,) + tuple(image_shape), jnp.float32),
                           train=False)
    params = variables["params"]
    return steps.new_train_state(params, variables.get("batch_stats", {}),
                                 tx.init(params))


def from_pretrained(config, state: steps.TrainState, tx) -> tuple[steps.TrainState, bool]:
    """`state` (fresh, step 0) with config.pretrained's weights; see pretrained.py.

    Returns (state, head_kept): head_kept is False when the classifier was
    re-initialised for another number of classes. Raises ConfigError when the
    checkpoint cannot be read or does not fit the model.
    """
    params, batch_stats, head_kept = pretrained.load(config, state.params,
                                                     state.batch_stats)
    return steps.new_train_state(params, batch_stats, tx.init(params)), head_kept


def train_step_from_config(config, model, tx, num_devices: int):
    """The per-device training step (steps.make_train_step) the config asks for."""
    per_device_batch = config.batch_size // num_devices
    sam_config = config.sam
    return steps.make_train_step(
        model, tx, rho=sam_config.rho, adaptive=sam_config.adaptive,
        eta=sam_config.eta, sync_perturbation=sam_config.sync_perturbation,
        examples_per_perturbation=(sam_config.examples_per_perturbation
                                   or per_device_batch),
        per_device_batch=per_device_batch, group_map=sam_config.group_map,
        weight_decay=config.optimizer.weight_decay,
        label_smoothing=config.label_smoothing,
        skip_nonfinite=config.skip_nonfinite_steps,
        freeze_batch_norm=config.freeze_batch_norm)


def has_checkpoint(workdir: str) -> bool:
    """Whether `workdir` holds a saved step (looked up without writing anything)."""
    directory = os.path.join(workdir, checkpoint.CHECKPOINT_DIR)
    return os.path.isdir(directory) and any(d.isdigit() for d in os.listdir(directory))


class NonFiniteError(RuntimeError):
    """The loss or gradient stopped being finite; the message names the step."""


def evaluate(p_eval_step, state, mesh, inputs: data.RunInputs) -> dict:
    totals = None
    for batch in inputs.eval_batches():
        sums = p_eval_step(state, parallel.global_batch(mesh, batch))
        totals = sums if totals is None else jax.tree_util.tree_map(
            jnp.add, totals, sums)
    totals = jax.device_get(totals)
    count = totals.pop("count")
    return {name: float(value / count) for name, value in totals.items()}


def _check_finite(state, workdir: str, manager) -> None:
    """Raises NonFiniteError if a step since the start was not finite."""
    first = int(jax.device_get(state.first_nonfinite_step))
    if first >= 0:
        # Let an asynchronous save of the last good state finish, so the
        # checkpoint the message names exists.
        manager.wait_until_finished()
        last_good = manager.latest_step()
        kept = ("no checkpoint was saved before it" if last_good is None else
                f"the last good checkpoint, step {last_good} in {workdir}, is kept")
        raise NonFiniteError(
            f"non-finite loss or gradient at step {first}; {kept}; set "
            "--config.skip_nonfinite_steps=True to skip such steps instead")


def sharpness_epoch(epoch: int, every_epochs: int) -> bool:
    """Whether sharpness is measured after `epoch`: the first, and every N-th."""
    return every_epochs > 0 and (epoch == 1 or epoch % every_epochs == 0)


def _report_train(state, done, lr_fn, rho, progress, writer, is_main,
                  total_steps, steps_per_epoch):
    """Writes and prints the metrics summed since the last report; resets them."""
    sums = jax.device_get(state.metrics_sum)
    num = max(float(sums.pop("steps")), 1.0)
    means = {k: float(v) / num for k, v in sums.items()}
    rate, eta_seconds = progress.update(done)
    means.update(learning_rate=float(lr_fn(done - 1)), rho=rho,
                 skipped_steps=int(jax.device_get(state.nonfinite_steps)),
                 steps_per_second=rate)
    writer.write(done, "train", means)
    if is_main:
        print(f"step {done}/{total_steps} epoch {done / steps_per_epoch:.2f} "
              f"loss {means['loss']:.4f} error {means['error']:.4f} "
              f"rho {rho:g} lr {means['learning_rate']:.4g} "
              f"{rate:.2f} steps/s ETA {reporting.format_duration(eta_seconds)}",
              flush=True)
    # From host values, as in starting_state (train_and_evaluate).
    zeros = jax.device_put(jax.device_get(steps.zero_metrics_sum()), state.step.sharding)
    return state.replace(metrics_sum=zeros)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       overwrite: bool = False) -> dict[str, Any]:
    """Trains `config` in `workdir` (resuming from its checkpoints) and evaluates.

    Every check of the input (config values, data availability, a workdir that
    holds another config's run, a pretrained checkpoint that is missing or does
    not fit the model) comes before anything is written. A finetuning run
    (config.pretrained.path) starts from the pretrained weights; resumed, it
    continues from its own checkpoint and does not read them again. Raises
    `validate.ConfigError` / `data.DatasetUnavailableError` on bad input,
    `NonFiniteError` when the loss or gradient is not finite (unless
    config.skip_nonfinite_steps), and `preemption.Preempted` after saving a
    checkpoint on SIGTERM.

    Returns the final evaluation metrics (also written to results.json).
    """
    num_devices = jax.device_count()
    validate.validate_config(config, num_devices)
    resuming = has_checkpoint(workdir)
    if not resuming:
        validate.validate_pretrained(config)
    is_main = jax.process_index() == 0
    inputs = data.prepare_inputs(config, jax.process_index(), jax.process_count())
    spec = inputs.spec
    workdir_lib.check_workdir(config, workdir, overwrite)
    steps_per_epoch = data.steps_per_epoch(inputs.num_train_examples, config.batch_size)
    total_steps = config.num_steps or config.num_epochs * steps_per_epoch

    mesh = parallel.make_mesh()
    model = get_model(config.model.name, spec.num_classes)
    tx = make_optimizer(config, total_steps)
    sam_config = config.sam
    p_train_step = parallel.shard_train_step(
        train_step_from_config(config, model, tx, num_devices), mesh)
    p_eval_step = parallel.jit_eval_step(steps.make_eval_step(model), mesh)

    def starting_state(finetune: bool):
        """The step-0 state, replicated, and a note on where finetuning starts."""
        state, note = initial_state(config, model, tx, inputs.image_shape), None
        if finetune:
            state, head_kept = from_pretrained(config, state, tx)
            note = (f"from pretrained {config.pretrained.path} (" +
                    ("its head kept)" if head_kept else
                     f"a new {spec.num_classes}-class head)"))
        # From host values: with one device per process, device_put of a
        # jax.Array onto the global mesh gives an array whose shards cannot be
        # read (JAX 0.10.2), and orbax's first save failed.
        return jax.device_put(jax.device_get(state), parallel.replicated(mesh)), note

    # A finetuning run's checkpoint is read and checked here, before writing.
    state, finetune_note = starting_state(bool(config.pretrained.path) and not resuming)
    os.makedirs(workdir, exist_ok=True)
    restored = checkpoint.restore_latest(workdir, state)
    if restored is not None:
        state = restored
    elif config.pretrained.path and resuming:  # its checkpoints were all unreadable
        validate.validate_pretrained(config)
        state, finetune_note = starting_state(True)
    manager = checkpoint.make_manager(workdir)
    start_step = int(jax.device_get(state.step))
    results_path = os.path.join(workdir, "results.json")
    if start_step == total_steps and os.path.exists(results_path):
        with open(results_path) as f:
            results = json.load(f)
        if is_main:
            print(f"already finished: {results_path}", flush=True)
        return results
    if is_main:
        workdir_lib.write_config(config, workdir)
        workdir_lib.trim_metrics(workdir, start_step)
        if inputs.corrupted is not None:  # the noisy labels are part of the record
            np.savez_compressed(os.path.join(workdir, "label_noise.npz"),
                                corrupted_indices=np.flatnonzero(inputs.corrupted),
                                noisy_labels=inputs.noisy_labels)
        print(f"{'resuming at' if start_step else 'starting'} step {start_step}"
              f"/{total_steps} ({total_steps / steps_per_epoch:g} epochs of {steps_per_epoch} "
              f"steps, {num_devices} devices, {inputs.num_train_examples} training "
              f"and {inputs.num_eval_examples} evaluation examples)"
              + (f" {finetune_note}" if finetune_note else ""), flush=True)

    writer = reporting.MetricsWriter(workdir, enabled=is_main)
    progress = reporting.Progress(start_step, total_steps)
    lr_fn = learning_rate_schedule(config, total_steps)
    base_key = jax.random.PRNGKey(config.seed)
    train_batches = inputs.train_batches(start_step, total_steps)

    def check_finite(state):
        if not config.skip_nonfinite_steps:  # skipped steps changed nothing
            _check_finite(state, workdir, manager)

    def save_checkpoint(state):
        check_finite(state)  # a non-finite state never replaces a good checkpoint
        checkpoint.save(manager, state)

    def measure_sharpness(state, done):
        from sam_jax import analysis  # imported on use: most runs never need it
        sharp = config.sharpness
        images, labels = inputs.training_examples(sharp.num_examples)
        metrics = analysis.sharpness_metrics(
            model, state, images, labels, num_examples=sharp.num_examples,
            top_k=sharp.top_k, m=sharp.m, rho=sharp.rho, seed=config.seed,
            num_iterations=sharp.num_iterations)
        # The epoch is in the record so a table can read it before the run ends.
        writer.write(done, "sharpness", {**metrics, "epoch": done // steps_per_epoch})
        if is_main:
            print(f"sharpness step {done} epoch {done // steps_per_epoch}: " +
                  " ".join(f"{k} {v:.4g}" for k, v in metrics.items()), flush=True)

    with preemption.SigtermWatcher() as sigterm:
        for step, batch in zip(range(start_step, total_steps),
                               data.as_numpy_iterator(train_batches)):
            state = p_train_step(state, parallel.global_batch(mesh, batch), base_key)
            done = step + 1
            if done % config.log_every_steps == 0 or done == total_steps:
                check_finite(state)
                state = _report_train(state, done, lr_fn, sam_config.rho, progress,
                                      writer, is_main, total_steps, steps_per_epoch)
            if (done % steps_per_epoch == 0 and done != total_steps and
                    (done // steps_per_epoch) % config.eval_every_epochs == 0):
                eval_metrics = evaluate(p_eval_step, state, mesh, inputs)
                writer.write(done, "eval", eval_metrics)
                if is_main:
                    print(f"eval step {done} epoch {done // steps_per_epoch}: " +
                          " ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()),
                          flush=True)
            if (config.sharpness.every_epochs and done % steps_per_epoch == 0 and
                    sharpness_epoch(done // steps_per_epoch,
                                    config.sharpness.every_epochs)):
                measure_sharpness(state, done)
            if done % config.checkpoint_every_steps == 0:
                save_checkpoint(state)
            if sigterm.should_stop(done) and done != total_steps:
                save_checkpoint(state)
                manager.wait_until_finished()
                writer.close()
                raise preemption.Preempted(done)

    save_checkpoint(state)
    manager.wait_until_finished()
    results = evaluate(p_eval_step, state, mesh, inputs)
    writer.write(total_steps, "eval", results)
    writer.close()
    split_name = "validation" if config.validation_split else "test"
    results = {f"{split_name}_{k}": v for k, v in results.items()}
    results.update(steps=total_steps, epochs=total_steps / steps_per_epoch,
                   skipped_steps=int(jax.device_get(state.nonfinite_steps)))
    if is_main:
        with open(results_path, "w") as f:
            json.dump(results, f, indent=2)
        print(f"final {split_name} error {100 * results[f'{split_name}_error']:.2f}% "
              f"(top-5 {100 * results[f'{split_name}_top5_error']:.2f}%) after "
              f"{total_steps} steps; results in {results_path}", flush=True)
    return results
