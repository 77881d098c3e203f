"""A finished (or running) training run, read back for analysis.

`load_run(workdir)` rebuilds the run's config from its config.json, the model,
and the latest checkpointed state; `training_examples` gives the first N
training examples as the model saw them minus augmentation (label noise
applied, normalised, no crop or flip); `make_loss_fn` gives the evaluation-mode
loss the analysis functions take. Nothing here writes to the workdir.
"""

import dataclasses
import functools
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.tree_util import Partial

from sam_jax import checkpoint
from sam_jax import config_schema
from sam_jax import data
from sam_jax import optimizers
from sam_jax import steps
from sam_jax import workdir as workdir_lib
from sam_jax.errors import BadInputError
from sam_jax.models import get_model


# A workdir that cannot be analysed (the message is one line): bad input.
RunError = BadInputError


@dataclasses.dataclass(frozen=True)
class Run:
    """A run's config, model and latest checkpointed weights (on one device)."""
    workdir: str
    config: ml_collections.ConfigDict
    spec: data.DatasetSpec
    model: Any
    step: int
    params: Any
    batch_stats: Any

    @property
    def variables(self) -> dict:
        return {"params": self.params, "batch_stats": self.batch_stats}


def _merge(config: ml_collections.ConfigDict, values: dict) -> None:
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(config.get(key),
                                                  ml_collections.ConfigDict):
            _merge(config[key], value)
        else:
            with config.ignore_type():
                config[key] = value


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The run's config: config.json over today's defaults (for keys added since)."""
    path = os.path.join(workdir, workdir_lib.CONFIG_FILE)
    if not os.path.isfile(path):
        raise RunError(f"no {workdir_lib.CONFIG_FILE} in {workdir!r}: not a training "
                       "workdir")
    try:
        with open(path) as f:
            values = json.load(f)
    except (OSError, ValueError) as e:
        raise RunError(f"cannot read {path!r}: {e}".replace("\n", " ")) from e
    config = config_schema.base_config()
    _merge(config, values)
    return config


def load_run(workdir: str) -> Run:
    """The run in `workdir` at its latest readable checkpoint; RunError if none.

    Restores only step, params and batch_stats (a partial restore), so the
    optimizer and bookkeeping parts of the training state may differ between
    the trainer that wrote the checkpoint and this one. The restore target is
    the trainer's own initial state (`steps.initial_state`), so a checkpoint
    of another model fails loudly.
    """
    config = load_config(workdir)
    if checkpoint.latest_step(workdir) is None:
        raise RunError(f"no checkpoint in {workdir!r} (nothing in "
                       f"{workdir_lib.CHECKPOINT_DIR}/)")
    try:
        spec = data.get_spec(config.dataset)
        model = get_model(config.model.name, spec.num_classes, config.dtype)
    except ValueError as e:
        raise RunError(f"{workdir!r}: {e}") from e
    # Streamed data sets may be resized (config.image_size); parameter shapes
    # rarely depend on it, but the trainer initialises at that size.
    image_shape = tuple(spec.image_shape)
    if config.get("image_size"):
        image_shape = (config.image_size, config.image_size, image_shape[-1])
    # Shapes only (nothing is computed), placed on the default device.
    state = jax.eval_shape(lambda: steps.initial_state(
        config.seed, model, optimizers.make_optimizer(config, 1), image_shape))
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
        {"step": state.step, "params": state.params, "batch_stats": state.batch_stats})
    try:
        step, restored = checkpoint.restore_parts(workdir, target)
    except checkpoint.CheckpointMismatchError as e:
        raise RunError(str(e).replace(":", f" is not a {config.model.name}:", 1)) from e
    except FileNotFoundError as e:
        raise RunError(str(e)) from e
    return Run(workdir=workdir, config=config, spec=spec, model=model, step=step,
               params=restored["params"], batch_stats=restored["batch_stats"])


def training_examples(config, spec: data.DatasetSpec,
                      num_examples: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `num_examples` training examples: float32 normalised images, labels.

    The run's training split with the trainer's label noise (the trainer's
    own loader, `run_inputs.in_memory_arrays`), without augmentation. RunError
    if the data set is not held in memory (streamed ImageNet-scale sets) or
    has fewer examples.
    """
    from sam_jax.data import device_augment
    from sam_jax.data import run_inputs
    if not getattr(spec, "in_memory", True):
        raise RunError(f"dataset {config.dataset!r} is streamed; the analysis needs "
                       "an in-memory training split")
    (images, labels), _, _, _ = run_inputs.in_memory_arrays(config, spec)
    if not 1 <= num_examples <= len(labels):
        raise RunError(f"num_examples={num_examples} must be in [1, {len(labels)}] "
                       f"(the training examples of {config.dataset!r})")
    images = device_augment.preprocess_for_eval(images[:num_examples], spec)
    return np.asarray(images, np.float32), np.asarray(labels[:num_examples], np.int32)


def make_batches(images: np.ndarray, labels: np.ndarray,
                 batch_size: int) -> list[dict]:
    """Consecutive batches {'image', 'label'}; the last may be smaller."""
    return [{"image": images[i:i + batch_size], "label": labels[i:i + batch_size]}
            for i in range(0, len(labels), batch_size)]


def _eval_loss(model, weight_decay, label_smoothing, batch_stats, params, batch):
    logits = model.apply({"params": params, "batch_stats": batch_stats},
                         batch["image"], train=False)
    loss = steps.cross_entropy(logits, batch["label"], label_smoothing).mean()
    if weight_decay:
        loss = loss + weight_decay * steps.l2_penalty(params)
    return loss


def _eval_loss_of_variables(model, weight_decay, label_smoothing, variables, batch):
    return _eval_loss(model, weight_decay, label_smoothing, variables["batch_stats"],
                      variables["params"], batch)


@functools.lru_cache(maxsize=None)
def _bound(function, model, weight_decay: float, label_smoothing: float):
    # One function object per (model, constants): compiled code is reused.
    return functools.partial(function, model, weight_decay, label_smoothing)


def make_loss_fn(model, batch_stats, *, weight_decay: float = 0.0,
                 label_smoothing: float = 0.0) -> Partial:
    """loss_fn(params, batch): mean cross entropy, BatchNorm in evaluation mode.

    The running statistics `batch_stats` are fixed, so the loss is a function
    of the weights alone (as the Hessian and landscape conventions require).
    weight_decay > 0 adds the trainer's L2 term weight_decay * 0.5 ||params||^2,
    which shifts every Hessian eigenvalue by weight_decay.
    """
    return Partial(_bound(_eval_loss, model, float(weight_decay),
                          float(label_smoothing)), batch_stats)


def make_variables_loss_fn(model, *, weight_decay: float = 0.0,
                           label_smoothing: float = 0.0) -> Partial:
    """loss_fn(variables, batch) over {'params', 'batch_stats'}: for interpolation."""
    return Partial(_bound(_eval_loss_of_variables, model, float(weight_decay),
                          float(label_smoothing)))


@functools.partial(jax.jit, static_argnums=0)
def _errors(model, variables, batch):
    logits = model.apply(variables, batch["image"], train=False)
    return (logits.argmax(-1) != batch["label"]).sum()


def error_rate(model, variables, batches) -> float:
    """Fraction of misclassified examples (evaluation mode) over `batches`."""
    wrong = sum(int(_errors(model, variables, b)) for b in batches)
    return wrong / sum(len(b["label"]) for b in batches)
