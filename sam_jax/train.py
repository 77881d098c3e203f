"""train_and_evaluate(config, workdir): the one training loop.

Every run, whatever the model, data set or optimizer variant, goes through this
loop; configs in configs/ select what differs. A run is a pure function of its
config: data order, augmentation, label noise and random draws derive from
(seed, step), so a run restarted from its latest checkpoint continues exactly
where it stopped.
"""

import functools
import os
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import optax

from sam_jax import checkpoint
from sam_jax import data
from sam_jax import methods
from sam_jax import optimizers
from sam_jax import parallel
from sam_jax import periodic
from sam_jax import preemption
from sam_jax import pretrained
from sam_jax import reporting
from sam_jax import steps
from sam_jax import swa
from sam_jax import validate
from sam_jax import workdir as workdir_lib
from sam_jax.errors import BadInputError
from sam_jax import models
from sam_jax.models import get_model


def from_pretrained(config, state: steps.TrainState, tx, loss_term=None
                    ) -> tuple[steps.TrainState, bool]:
    """`state` (fresh, step 0) with config.pretrained's weights; see pretrained.py.

    Returns (state, head_kept): head_kept is False when the classifier was
    re-initialised for another number of classes. Raises BadInputError when the
    checkpoint cannot be read or does not fit the model.
    """
    params, batch_stats, head_kept = pretrained.load(config, state.params,
                                                     state.batch_stats)
    return steps.new_train_state(params, batch_stats, tx.init(params),
                                 with_swa=state.swa is not None,
                                 loss_term=loss_term), head_kept


def examples_per_perturbation(config, per_device_batch: int) -> int:
    """m: config.sam.examples_per_perturbation, or the per-device batch."""
    return config.sam.examples_per_perturbation or per_device_batch


def grad_accum_steps(config, per_device_batch: int) -> int:
    """Microbatches per device and step; group_map "sequential" is one per group."""
    if config.sam.group_map == "sequential":
        return per_device_batch // examples_per_perturbation(config, per_device_batch)
    return config.grad_accum_steps


class TrainingChain(NamedTuple):
    """optax.chain(method, base): what the training step applies."""
    method: optax.GradientTransformationExtraArgs
    base: optax.GradientTransformation
    tx: optax.GradientTransformationExtraArgs


def training_chain(config, total_steps: int, steps_per_epoch: Optional[int] = None,
                   second_pass: Optional[bool] = None, *,
                   schedule: Optional[optax.Schedule] = None) -> TrainingChain:
    """The method (grouped form, per-device axis) and the base optimizer, both
    at `schedule`, the run's learning-rate schedule (when None,
    optimizers.learning_rate_schedule's); `second_pass` as methods.Context's."""
    if schedule is None:
        schedule = optimizers.learning_rate_schedule(config, total_steps, steps_per_epoch)
    method = methods.make_method(config, methods.Context(
        axis_name=steps.AXIS, aux_init=steps.aux_example(), learning_rate=schedule,
        total_steps=total_steps, seed=config.seed, second_pass=second_pass))
    base = methods.base_optimizer(config, total_steps, schedule=schedule)
    return TrainingChain(method, base, optax.chain(method, base))


def train_step_from_config(config, model, chain: TrainingChain, num_devices: int,
                           loss_term=None):
    """The per-device training step (steps.make_train_step) the config asks for;
    `loss_term`: the method's (methods.loss_term), if it has one."""
    per_device_batch = config.batch_size // num_devices
    method = methods.get(config.method)
    return steps.make_train_step(
        model, chain.method, chain.base,
        examples_per_perturbation=examples_per_perturbation(config, per_device_batch),
        per_device_batch=per_device_batch,
        grad_accum_steps=grad_accum_steps(config, per_device_batch),
        weight_decay=optimizers.loss_weight_decay(config),
        label_smoothing=config.label_smoothing,
        clean_pass_true_gradient=method.clean_pass_true_gradient,
        example_losses=method.example_losses,
        batch_norm_over=config.sam.batch_norm,
        grad_clip_norm=config.optimizer.grad_clip_norm,
        skip_nonfinite=config.skip_nonfinite_steps,
        freeze_batch_norm=config.freeze_batch_norm, loss_term=loss_term,
        # "sequential" is microbatches of one group (grad_accum_steps above).
        group_loop="auto" if config.sam.group_map == "sequential" else config.sam.group_map)


class NonFiniteError(RuntimeError):
    """The loss or gradient stopped being finite; the message names the step."""


def evaluate(p_eval_step, state, mesh, batches) -> dict:
    """Metrics over every example of `batches()` (padded, masked batches)."""
    totals = None
    for batch in batches():
        sums = p_eval_step(state, batch)
        totals = sums if totals is None else jax.tree_util.tree_map(
            jnp.add, totals, sums)
    totals = jax.device_get(totals)
    count = totals.pop("count")
    return {name: float(value / count) for name, value in totals.items()}


def stability_radius(config, step: int, total_steps: int,
                     lr_fn) -> tuple[Optional[float], bool]:
    """(rho at `step`, unnormalised) of the methods with a closed-form edge of
    stability: SAM on the l2 ball with one ascent step (not ASAM), and USAM;
    (None, False) for the others."""
    c = config.sam
    if config.method == "sam" and c.ball == "l2" and not c.adaptive and c.ascent_steps == 1:
        rho, unnormalised = c.rho, False
    elif config.method == "usam":
        rho, unnormalised = config.usam.rho, True
    else:
        return None, False
    factor = methods.rho_factor(config, total_steps, lr_fn)
    return (rho * (1.0 if factor is None else float(factor(step)))), unnormalised


class _Run(NamedTuple):
    """What the periodic actions and the final evaluation of one run read."""
    config: ml_collections.ConfigDict
    workdir: str
    model: Any
    inputs: Any  # data.RunInputs
    mesh: Any
    p_eval_step: Any
    learning_rate: optax.Schedule  # the run's schedule: the one training steps with
    total_steps: int
    steps_per_epoch: int
    manager: Any  # the checkpoint manager
    writer: reporting.MetricsWriter
    stopwatch: periodic.Stopwatch
    is_main: bool
    # (params, opt_state) -> the weights evaluated, where the method declares
    # them (MSAM's un-perturbed ones), jitted; None: the state's own.
    evaluation_params: Optional[Callable] = None


def _check_finite(run: _Run, state) -> None:
    """Raises NonFiniteError if a step since the start was not finite (never
    with skip_nonfinite_steps: the steps skipped changed nothing)."""
    if run.config.skip_nonfinite_steps:
        return
    first = int(jax.device_get(state.first_nonfinite_step))
    if first >= 0:
        # Let an asynchronous save of the last good state finish, so the
        # checkpoint the message names exists.
        run.manager.wait_until_finished()
        last_good = run.manager.latest_step()
        kept = ("no checkpoint was saved before it" if last_good is None else
                f"the last good checkpoint, step {last_good} in {run.workdir}, is kept")
        raise NonFiniteError(
            f"non-finite loss or gradient at step {first}; {kept}; set "
            "--config.skip_nonfinite_steps=True to skip such steps instead")


def _with_seconds(state, seconds: float):
    """`state` holding train_seconds; with several processes, process 0's."""
    seconds = np.float32(seconds)
    if jax.process_count() > 1:  # one value on every process: process 0's clock
        seconds = np.float32(multihost_utils.broadcast_one_to_all(seconds))
    return state.replace(train_seconds=jax.device_put(seconds, state.step.sharding))


def _save_checkpoint(run: _Run, state, done: Optional[int] = None):
    """`state` with its train_seconds, saved (asynchronously); the clock is
    left stopped. `done` is the periodic action's argument (the state's step)."""
    del done
    _check_finite(run, state)  # a non-finite state never replaces a good checkpoint
    jax.block_until_ready(state)
    run.stopwatch.pause()
    state = _with_seconds(state, run.stopwatch.read())
    checkpoint.save(run.manager, state)
    return state


def _report_train(run: _Run, progress: reporting.Progress, state, done: int):
    """Writes and prints the metrics summed since the last report; resets them."""
    _check_finite(run, state)
    sums = jax.device_get(state.metrics_sum)
    num = max(float(sums.pop("steps")), 1.0)
    means = {k: float(v) / num for k, v in sums.items()}
    rate, eta_seconds = progress.update(done)
    means.update(learning_rate=float(run.learning_rate(done - 1)),
                 skipped_steps=int(jax.device_get(state.nonfinite_steps)),
                 steps_per_second=rate,
                 total_gradient_evaluations=float(
                     jax.device_get(state.gradient_evaluations)),
                 train_seconds=run.stopwatch.read())
    run.writer.write(done, "train", means)
    if run.is_main:
        print(f"step {done}/{run.total_steps} epoch {done / run.steps_per_epoch:.2f} "
              f"loss {means['loss']:.4f} error {means['error']:.4f} "
              f"rho {means['rho']:g} lr {means['learning_rate']:.4g} "
              f"{rate:.2f} steps/s ETA {reporting.format_duration(eta_seconds)}",
              flush=True)
    # From host values, as in _starting_state.
    zeros = jax.device_put(jax.device_get(steps.zero_metrics_sum(
        name for name in state.metrics_sum if name != "steps")), state.step.sharding)
    return state.replace(metrics_sum=zeros)


def _evaluated_states(run: _Run, state, done: int):
    """("", the state, at the method's evaluation weights where it declares
    them) and, with SWA, ("swa_", the average with its BatchNorm statistics
    recomputed (swa.py) on the training batches of the epoch that ends at
    `done`)."""
    yield "", state if run.evaluation_params is None else state.replace(
        params=run.evaluation_params(state.params, state.opt_state))
    if state.swa is None or int(jax.device_get(state.swa["count"])) == 0:
        return
    epoch_start = max(done - run.steps_per_epoch, 0)
    batch_stats = swa.batch_norm_statistics(
        run.model, state.swa["params"], state.batch_stats,
        run.inputs.train_batches(epoch_start, epoch_start + run.steps_per_epoch),
        seed=run.config.seed)
    yield "swa_", state.replace(params=state.swa["params"], batch_stats=batch_stats)


def _evaluations(run: _Run, state, done: int, final: bool = False):
    """(split, metrics): "eval" of the weights and "swa_eval" of the SWA
    average on the evaluation split; at the end (`final`) also each of
    inputs.final_eval_sets under its name (with "swa_" for the average)."""
    for prefix, evaluated in _evaluated_states(run, state, done):
        yield f"{prefix}eval", evaluate(run.p_eval_step, evaluated, run.mesh,
                                        run.inputs.eval_batches)
        for name, batches in (run.inputs.final_eval_sets.items() if final else ()):
            yield f"{prefix}{name}", evaluate(run.p_eval_step, evaluated, run.mesh, batches)


def _report_evaluations(run: _Run, state, done: int):
    """Writes and prints the evaluations during training (not the final one)."""
    for split, eval_metrics in _evaluations(run, state, done):
        run.writer.write(done, split, eval_metrics)
        if run.is_main:
            print(f"{split} step {done} epoch {done // run.steps_per_epoch}: " +
                  " ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()), flush=True)
    return state


def _measure_sharpness(run: _Run, state, done: int):
    from sam_jax import analysis  # imported on use: most runs never need it
    sharp = run.config.sharpness
    images, labels = run.inputs.training_examples(sharp.num_examples)
    metrics = analysis.sharpness_metrics(
        run.model, state, images, labels, num_examples=sharp.num_examples,
        top_k=sharp.top_k, m=sharp.m, rho=sharp.rho, seed=run.config.seed,
        num_iterations=sharp.num_iterations)
    # The epoch is in the record so a table can read it before the run ends.
    epoch = done // run.steps_per_epoch
    run.writer.write(done, "sharpness", {**metrics, "epoch": epoch})
    if run.is_main:
        print(f"sharpness step {done} epoch {epoch}: " +
              " ".join(f"{k} {v:.4g}" for k, v in metrics.items()), flush=True)
    return state


def _stability_tracker(config, model, inputs):
    """analysis.StabilityTracker on the config's fixed examples, or None when
    sharpness.every_steps is 0."""
    sharp = config.sharpness
    if not sharp.every_steps:
        return None
    from sam_jax import analysis  # imported on use: most runs never need it
    images, labels = inputs.training_examples(max(sharp.num_examples, sharp.rank_examples))
    return analysis.StabilityTracker(
        model, images[:sharp.num_examples], labels[:sharp.num_examples],
        weight_decay=optimizers.l2_equivalent_weight_decay(config),
        label_smoothing=config.label_smoothing,
        freeze_batch_norm=config.freeze_batch_norm,
        num_iterations=sharp.lambda_max_iterations, trace_probes=sharp.trace_probes,
        rank_images=images[:sharp.rank_examples] if sharp.rank_examples else None,
        seed=config.seed)


def _measure_stability(run: _Run, tracker, state, done: int):
    # The learning rate and rho of the step just taken (of the first, at 0).
    last = max(done - 1, 0)
    rho, unnormalised = stability_radius(run.config, last, run.total_steps,
                                         run.learning_rate)
    record = tracker(state, float(run.learning_rate(last)), rho=rho,
                     unnormalised=unnormalised)
    run.writer.write(done, "stability", {**record, "epoch": done / run.steps_per_epoch})
    if run.is_main:
        print(f"stability step {done}: " +
              " ".join(f"{k} {v:.4g}" for k, v in record.items()), flush=True)
    return state


def _periodic_actions(run: _Run, progress: reporting.Progress,
                      tracker) -> list[periodic.Action]:
    """What runs between steps, in this order: the progress report (and at
    the end), the evaluation (not at the end: the final one is apart),
    sharpness (after the first epoch too), the edge of stability (before the
    first step too) and the checkpoint."""
    config, total, per_epoch = run.config, run.total_steps, run.steps_per_epoch
    sharp = config.sharpness
    actions = [
        periodic.Action("report", periodic.every_steps(config.log_every_steps, at_end=total),
                        functools.partial(_report_train, run, progress)),
        periodic.Action("evaluate", periodic.every_epochs(
            config.eval_every_epochs, per_epoch, except_at=total),
            functools.partial(_report_evaluations, run)),
        periodic.Action("sharpness", periodic.every_epochs(
            sharp.every_epochs, per_epoch, first=True),
            functools.partial(_measure_sharpness, run))]
    if tracker is not None:
        actions.append(periodic.Action(
            "stability", periodic.every_steps(sharp.every_steps, at_start=True),
            functools.partial(_measure_stability, run, tracker)))
    actions.append(periodic.Action(
        "checkpoint", periodic.every_steps(config.checkpoint_every_steps),
        functools.partial(_save_checkpoint, run)))
    return actions


@functools.partial(jax.jit, donate_argnums=0)
def _with_weights_averaged(state):
    """`state` whose weights joined the SWA average."""
    return state.replace(swa=swa.add(state.swa, state.params))


def _starting_state(config, model, tx, inputs, mesh, finetune: bool, loss_term=None):
    """The step-0 state, replicated, and a note on where finetuning starts."""
    state = steps.initial_state(config.seed, model, tx, inputs.image_shape,
                                with_swa=swa.enabled(config), loss_term=loss_term)
    note = None
    if finetune:
        state, head_kept = from_pretrained(config, state, tx, loss_term)
        note = (f"from pretrained {config.pretrained.path} (" +
                ("its head kept)" if head_kept else
                 f"a new {inputs.spec.num_classes}-class head)"))
    # From host values: with one device per process, device_put of a
    # jax.Array onto the global mesh gives an array whose shards cannot be
    # read (JAX 0.10.2), and orbax's first save failed.
    return jax.device_put(jax.device_get(state), parallel.replicated(mesh)), note



def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       overwrite: bool = False) -> dict[str, Any]:
    """Trains `config` in `workdir` (resuming from its checkpoints) and evaluates.

    Every check of the input (config values, data availability, a workdir that
    holds another config's run, a pretrained checkpoint that is missing or does
    not fit the model) comes before anything is written. A finetuning run
    (config.pretrained.path) starts from the pretrained weights; resumed, it
    continues from its own checkpoint and does not read them again. Raises
    `errors.BadInputError` on bad input,
    `NonFiniteError` when the loss or gradient is not finite (unless
    config.skip_nonfinite_steps), and `preemption.Preempted` /
    `preemption.Interrupted` after saving a checkpoint on SIGTERM / SIGINT.

    Returns the final evaluation metrics (also written to results.json).
    """
    validate.validate_config(config, jax.device_count())
    # One run per workdir, and the workdir checked before the data are loaded
    # (first without writing: a refused command leaves the directory as it was).
    if jax.process_count() == 1:  # (several: under the lock, all stop together)
        workdir_lib.check_workdir(config, workdir, overwrite, read_only=True)
    with workdir_lib.exclusive(workdir, jax.process_index()):
        refusal = None
        if jax.process_index() == 0:
            try:
                workdir_lib.check_workdir(config, workdir, overwrite)
            except BadInputError as e:
                refusal = e
        if jax.process_count() > 1:  # every process stops, or none
            refused = multihost_utils.broadcast_one_to_all(np.array(refusal is not None))
            if refused and refusal is None:
                refusal = BadInputError(f"process 0 refused workdir {workdir!r} "
                                        "(its error says why)")
        if refusal is not None:
            raise refusal
        return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config, workdir: str) -> dict[str, Any]:
    num_devices = jax.device_count()
    resuming = checkpoint.latest_step(workdir) is not None
    if not resuming:
        validate.validate_pretrained(config)
    is_main = jax.process_index() == 0
    mesh = parallel.make_mesh()
    try:
        inputs = data.prepare_inputs(config, mesh, steps.AXIS)
        steps_per_epoch = data.steps_per_epoch(inputs.num_train_examples,
                                               config.batch_size)
    except ValueError as e:  # a batch larger than the data set
        if "larger than the dataset" not in str(e):
            raise
        raise BadInputError(f"batch_size={config.batch_size}: {e}") from None
    spec = inputs.spec
    total_steps = config.num_steps or config.num_epochs * steps_per_epoch
    problem = swa.never_averages(config, total_steps, steps_per_epoch)
    if problem:  # said before training, not found missing from results.json
        raise BadInputError(problem)
    sharp = config.sharpness
    for key, used in (("num_examples", sharp.every_steps or sharp.every_epochs),
                      ("rank_examples", sharp.every_steps)):
        if used and sharp[key] > inputs.num_train_examples:
            raise BadInputError(f"sharpness.{key}={sharp[key]!r} is more than the "
                                f"{inputs.num_train_examples} training examples")

    model = get_model(config.model.name, spec.num_classes, config.dtype,
                      **models.options_from_config(config))
    # Late-phase SAM and LookSAM: a step with the second pass and one without,
    # picked by the step (methods.second_pass_schedule); they share the state.
    second_pass_at = methods.second_pass_schedule(config, total_steps)
    # The one learning-rate schedule of the run: the method's, the base
    # optimizer's, and what the reports and measurements say.
    learning_rate = optimizers.learning_rate_schedule(config, total_steps, steps_per_epoch)
    chain = training_chain(config, total_steps, steps_per_epoch,
                           second_pass=None if second_pass_at is None else True,
                           schedule=learning_rate)
    tx = chain.tx
    num_epochs = total_steps // steps_per_epoch
    # SAF / MESA: a term of the loss whose state the trainer keeps.
    loss_term = methods.loss_term(config, num_examples=inputs.num_train_examples,
                                  num_classes=spec.num_classes,
                                  steps_per_epoch=steps_per_epoch)
    p_train_step = parallel.shard_train_step(
        train_step_from_config(config, model, chain, num_devices, loss_term), mesh)
    p_one_pass_step = None if second_pass_at is None else parallel.shard_train_step(
        train_step_from_config(config, model, training_chain(
            config, total_steps, steps_per_epoch, second_pass=False,
            schedule=learning_rate), num_devices, loss_term), mesh)
    p_eval_step = parallel.jit_eval_step(steps.make_eval_step(model), mesh)

    # A finetuning run's checkpoint is read and checked here, before writing.
    state, finetune_note = _starting_state(config, model, tx, inputs, mesh,
                                           bool(config.pretrained.path) and not resuming,
                                           loss_term)
    os.makedirs(workdir, exist_ok=True)
    try:
        restored = checkpoint.restore_latest(workdir, state)
    except checkpoint.CheckpointMismatchError as e:
        diffs = workdir_lib.checkpoints_config_differences(config, workdir)
        owner = (f"a run whose config differs ({'; '.join(diffs[:3])})" if diffs
                 else "another config's run")
        raise BadInputError(f"{e}; it belongs to {owner}: use another workdir, or "
                            "--overwrite to delete that run") from None
    if restored is not None:
        state = restored
    elif config.pretrained.path and resuming:  # its checkpoints were all unreadable
        validate.validate_pretrained(config)
        state, finetune_note = _starting_state(config, model, tx, inputs, mesh, True,
                                               loss_term)
    manager = checkpoint.make_manager(workdir)
    start_step = int(jax.device_get(state.step))
    results_path = workdir_lib.path(workdir, workdir_lib.RESULTS_FILE)
    results = workdir_lib.read_results(workdir)
    if is_main:  # (again: a damaged config.json is replaced)
        workdir_lib.write_config(config, workdir)
    if start_step == total_steps and results is not None:
        if is_main:
            print(f"already finished: {results_path}", flush=True)
        return results
    if is_main:
        if start_step == total_steps and os.path.exists(results_path):
            workdir_lib.warn(f"{results_path} is damaged; the run is evaluated again")
        # At the end, the final evaluation is made (and logged) again.
        # (From scratch, nothing of an earlier attempt stands: not even its
        # step-0 records, which this run writes again.)
        workdir_lib.trim_metrics(workdir, start_step if start_step else -1,
                                 final_evaluation=start_step == total_steps)
        if inputs.corrupted is not None:  # the noisy labels are part of the record
            noise_path = workdir_lib.path(workdir, workdir_lib.LABEL_NOISE_FILE)
            np.savez_compressed(noise_path + ".tmp.npz",  # then renamed: atomic
                                corrupted_indices=np.flatnonzero(inputs.corrupted),
                                noisy_labels=inputs.noisy_labels)
            os.replace(noise_path + ".tmp.npz", noise_path)
        print(f"{'resuming at' if start_step else 'starting'} step {start_step}"
              f"/{total_steps} ({total_steps / steps_per_epoch:g} epochs of {steps_per_epoch} "
              f"steps, {num_devices} devices, {inputs.num_train_examples} training "
              f"and {inputs.num_eval_examples} evaluation examples, "
              f"{inputs.pipeline} input pipeline)"
              + (f" {finetune_note}" if finetune_note else ""), flush=True)

    writer = reporting.MetricsWriter(workdir, enabled=is_main)
    progress = reporting.Progress(start_step, total_steps)
    base_key = jax.random.PRNGKey(config.seed)
    train_batches = inputs.train_batches(start_step, total_steps)
    # Compiled before the clock starts: train_seconds leave compilation out.
    batch_shapes = parallel.batch_shapes(mesh, config.batch_size, inputs.image_shape,
                                         example_indices=inputs.example_indices)
    compiled_step = p_train_step.lower(state, batch_shapes, base_key).compile()
    # Compiled only if a step still to run needs it (not when resuming late-phase
    # SAM after its start).
    compiled_one_pass_step = (
        p_one_pass_step.lower(state, batch_shapes, base_key).compile()
        if p_one_pass_step is not None and not all(
            second_pass_at(step) for step in range(start_step, total_steps)) else None)
    stopwatch = periodic.Stopwatch(float(jax.device_get(state.train_seconds)))
    declared = methods.get(config.method).evaluation_params
    run = _Run(config, workdir, model, inputs, mesh, p_eval_step, learning_rate,
               total_steps, steps_per_epoch, manager, writer, stopwatch, is_main,
               None if declared is None else jax.jit(declared))
    actions = _periodic_actions(run, progress, _stability_tracker(config, model, inputs))

    with preemption.SigtermWatcher() as sigterm, checkpoint.saves_finished_on_error(manager):
        if start_step == 0:  # what is measured before the first step
            state = periodic.run_due(actions, state, 0, stopwatch)
        stopwatch.start()
        for step, batch in zip(range(start_step, total_steps), train_batches):
            if second_pass_at is None or second_pass_at(step):
                state = compiled_step(state, batch, base_key)
            else:
                state = compiled_one_pass_step(state, batch, base_key)
            done = step + 1
            # Part of the step: the clock runs, and the actions (evaluation,
            # checkpoint) see the new average.
            if swa.is_averaging_step(config, done, steps_per_epoch, num_epochs):
                state = _with_weights_averaged(state)
            state = periodic.run_due(actions, state, done, stopwatch)
            stop = sigterm.stop(done)
            if stop is not None and done != total_steps:
                _save_checkpoint(run, state)
                manager.wait_until_finished()
                writer.close()
                raise stop(done)

    state = _save_checkpoint(run, state)
    manager.wait_until_finished()
    split_name = "validation" if config.validation_split else "test"
    results = {}
    for split, eval_metrics in _evaluations(run, state, total_steps, final=True):
        writer.write(total_steps, split, eval_metrics)
        prefix = {"eval": split_name, "swa_eval": f"swa_{split_name}"}.get(split, split)
        results.update({f"{prefix}_{k}": v for k, v in eval_metrics.items()})
    writer.close()
    results.update(steps=total_steps, epochs=total_steps / steps_per_epoch,
                   skipped_steps=int(jax.device_get(state.nonfinite_steps)),
                   method=config.method,
                   gradient_evaluations=float(jax.device_get(state.gradient_evaluations)),
                   train_seconds=float(jax.device_get(state.train_seconds)))
    if is_main:
        workdir_lib.write_json_atomic(results_path, results)
        print(f"final {split_name} error {100 * results[f'{split_name}_error']:.2f}% "
              f"(top-5 {100 * results[f'{split_name}_top5_error']:.2f}%) after "
              f"{total_steps} steps; results in {results_path}", flush=True)
    return results
