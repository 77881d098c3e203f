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
from sam_jax import reporting
from sam_jax import steps
from sam_jax import validate
from sam_jax.models import get_model


def learning_rate_schedule(config, total_steps: int) -> optax.Schedule:
    opt = config.optimizer
    if opt.schedule == "cosine":  # the paper's: cosine, no warm-up
        return optax.cosine_decay_schedule(opt.learning_rate, total_steps)
    return optax.constant_schedule(opt.learning_rate)


def make_optimizer(config, total_steps: int) -> optax.GradientTransformation:
    """Clipping of the (device-averaged) SAM gradient, then SGD Nesterov."""
    opt = config.optimizer
    parts = []
    if opt.grad_clip_norm:
        parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
    parts.append(optax.sgd(learning_rate_schedule(config, total_steps),
                           momentum=opt.momentum or None, nesterov=opt.nesterov))
    return optax.chain(*parts)


def initial_state(config, model, tx, image_shape) -> steps.TrainState:
    key = jax.random.PRNGKey(config.seed)
    variables = model.init({"params": key, "dropout": key},
                           jnp.zeros((1,) + tuple(image_shape), jnp.float32),
                           train=False)
    params = variables["params"]
    return steps.TrainState(step=jnp.zeros([], jnp.int32), params=params,
                            batch_stats=variables.get("batch_stats", {}),
                            opt_state=tx.init(params))


def load_data(config, spec):
    """Whole training and evaluation splits as numpy, with label noise applied.

    Returns ((train_images, train_labels), (eval_images, eval_labels), corrupted)
    where `corrupted` marks the training examples whose label noise changed.
    """
    train_split, eval_split = data.train_and_eval_splits(spec, config.validation_split)
    train_images, train_labels = data.load_split(config.dataset, train_split,
                                                 config.data_dir)
    eval_images, eval_labels = data.load_split(config.dataset, eval_split,
                                               config.data_dir)
    train_labels, corrupted = data.symmetric_label_noise(
        train_labels, config.label_noise, spec.num_classes,
        seed=config.label_noise_seed)
    return (train_images, train_labels), (eval_images, eval_labels), corrupted


def evaluate(p_eval_step, state, mesh, images, labels, spec, batch_size) -> dict:
    totals = None
    for batch in data.eval_batches(images, labels, spec=spec,
                                   global_batch_size=batch_size,
                                   process_index=jax.process_index(),
                                   process_count=jax.process_count()):
        sums = p_eval_step(state, parallel.global_batch(mesh, batch))
        totals = sums if totals is None else jax.tree_util.tree_map(
            jnp.add, totals, sums)
    totals = jax.device_get(totals)
    count = totals.pop("count")
    return {name: float(value / count) for name, value in totals.items()}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains `config` in `workdir` (resuming from its checkpoints) and evaluates.

    Returns the final evaluation metrics (also written to results.json).
    """
    num_devices = jax.device_count()
    validate.validate_config(config, num_devices)
    is_main = jax.process_index() == 0
    spec = data.get_spec(config.dataset)
    # Everything that can fail on bad input happens before the workdir is touched.
    (train_images, train_labels), (eval_images, eval_labels), corrupted = load_data(
        config, spec)
    steps_per_epoch = data.steps_per_epoch(len(train_labels), config.batch_size)
    total_steps = config.num_epochs * steps_per_epoch

    mesh = parallel.make_mesh()
    model = get_model(config.model.name, spec.num_classes)
    tx = make_optimizer(config, total_steps)
    per_device_batch = config.batch_size // num_devices
    sam_config = config.sam
    train_step = steps.make_train_step(
        model, tx, rho=sam_config.rho, adaptive=sam_config.adaptive,
        eta=sam_config.eta, sync_perturbation=sam_config.sync_perturbation,
        examples_per_perturbation=(sam_config.examples_per_perturbation
                                   or per_device_batch),
        per_device_batch=per_device_batch, group_map=sam_config.group_map,
        weight_decay=config.optimizer.weight_decay,
        label_smoothing=config.label_smoothing)
    p_train_step = parallel.shard_train_step(train_step, mesh)
    p_eval_step = parallel.jit_eval_step(steps.make_eval_step(model), mesh)

    state = jax.device_put(initial_state(config, model, tx, spec.image_shape),
                           parallel.replicated(mesh))
    os.makedirs(workdir, exist_ok=True)
    manager = checkpoint.make_manager(workdir)
    restored = checkpoint.restore_latest(manager, state)
    if restored is not None:
        state = restored
    start_step = int(jax.device_get(state.step))
    results_path = os.path.join(workdir, "results.json")
    if start_step == total_steps and os.path.exists(results_path):
        with open(results_path) as f:
            results = json.load(f)
        if is_main:
            print(f"already finished: {results_path}", flush=True)
        return results
    if is_main:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))
        if config.label_noise:  # the corrupted examples are part of the record
            np.savez_compressed(os.path.join(workdir, "label_noise.npz"),
                                corrupted_indices=np.flatnonzero(corrupted),
                                noisy_labels=train_labels[corrupted])
        print(f"{'resuming at' if start_step else 'starting'} step {start_step}"
              f"/{total_steps} ({config.num_epochs} epochs of {steps_per_epoch} "
              f"steps, {num_devices} devices, {len(train_labels)} training and "
              f"{len(eval_labels)} evaluation examples)", flush=True)

    writer = reporting.MetricsWriter(workdir, enabled=is_main)
    progress = reporting.Progress(start_step, total_steps)
    lr_fn = learning_rate_schedule(config, total_steps)
    base_key = jax.random.PRNGKey(config.seed)
    train_batches = data.train_dataset(
        train_images, train_labels, spec=spec, augmentation=config.augmentation,
        global_batch_size=config.batch_size, seed=config.seed,
        start_step=start_step, num_steps=total_steps,
        process_index=jax.process_index(), process_count=jax.process_count())

    pending = []  # device-side metrics since the last report: no host sync per step
    for step, batch in zip(range(start_step, total_steps),
                           data.as_numpy_iterator(train_batches)):
        state, metrics = p_train_step(state, parallel.global_batch(mesh, batch),
                                      base_key)
        pending.append(metrics)
        done = step + 1
        epoch_end = done % steps_per_epoch == 0
        if done % config.log_every_steps == 0 or done == total_steps:
            means = {k: float(np.mean(v)) for k, v in
                     jax.device_get(jax.tree_util.tree_map(
                         lambda *xs: jnp.stack(xs), *pending)).items()}
            pending = []
            rate, eta_seconds = progress.update(done)
            means.update(learning_rate=float(lr_fn(step)), rho=sam_config.rho,
                         steps_per_second=rate)
            writer.write(done, "train", means)
            if is_main:
                print(f"step {done}/{total_steps} epoch {done / steps_per_epoch:.2f} "
                      f"loss {means['loss']:.4f} error {means['error']:.4f} "
                      f"rho {sam_config.rho:g} lr {means['learning_rate']:.4g} "
                      f"{rate:.2f} steps/s ETA {reporting.format_duration(eta_seconds)}",
                      flush=True)
        if epoch_end and (done // steps_per_epoch) % config.eval_every_epochs == 0 \
                and done != total_steps:
            eval_metrics = evaluate(p_eval_step, state, mesh, eval_images,
                                    eval_labels, spec, config.eval_batch_size)
            writer.write(done, "eval", eval_metrics)
            if is_main:
                print(f"eval step {done} epoch {done // steps_per_epoch}: " +
                      " ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()),
                      flush=True)
        if done % config.checkpoint_every_steps == 0:
            checkpoint.save(manager, state)

    checkpoint.save(manager, state)
    manager.wait_until_finished()
    results = evaluate(p_eval_step, state, mesh, eval_images, eval_labels, spec,
                       config.eval_batch_size)
    writer.write(total_steps, "eval", results)
    writer.close()
    split_name = "validation" if config.validation_split else "test"
    results = {f"{split_name}_{k}": v for k, v in results.items()}
    results.update(steps=total_steps, epochs=config.num_epochs)
    if is_main:
        with open(results_path, "w") as f:
            json.dump(results, f, indent=2)
        print(f"final {split_name} error {100 * results[f'{split_name}_error']:.2f}% "
              f"(top-5 {100 * results[f'{split_name}_top5_error']:.2f}%) after "
              f"{total_steps} steps; results in {os.path.join(workdir, 'results.json')}",
              flush=True)
    return results
