"""Checks a training config before any compute, with one-line errors."""

import math
import os

from sam_jax import _sam
from sam_jax import data
from sam_jax.errors import BadInputError
from sam_jax.models import MODELS

BATCH_NORM_MODES = ("group", "device")
RHO_SCHEDULES = ("constant", "lr")
OPTIMIZER_SCHEDULES = ("cosine", "constant")
OPTIMIZERS = ("sgd", "rmsprop")
PRETRAINED_FORMATS = ("msgpack", "orbax")  # see sam_jax/pretrained.py


# A config value that is not allowed (the message is one line); the name
# validate.ConfigError is kept for callers of earlier releases.
ConfigError = BadInputError


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _allowed(values) -> str:
    return ", ".join(sorted(values))


def validate_config(config, num_devices: int) -> None:
    """Raises ConfigError naming the first bad value and what is allowed."""
    _check(config.model.name in MODELS,
           f"unknown model {config.model.name!r}; allowed: {_allowed(MODELS)}")
    _check(config.dataset in data.DATASETS,
           f"unknown dataset {config.dataset!r}; allowed: {_allowed(data.DATASETS)}")
    spec = data.DATASETS[config.dataset]
    augmentations = (data.IN_MEMORY_AUGMENTATIONS if spec.in_memory
                     else data.STREAMING_AUGMENTATIONS)
    _check(config.augmentation in augmentations,
           f"unknown augmentation {config.augmentation!r} for {config.dataset}; "
           f"allowed: {_allowed(augmentations)}")
    _check(spec.in_memory or not config.label_noise,
           f"label_noise={config.label_noise!r}: label noise is only supported on "
           "in-memory data sets (cifar10, cifar100, digits, fashion_mnist, "
           f"svhn_cropped), not {config.dataset!r}")
    _check(config.optimizer.name in OPTIMIZERS,
           f"unknown optimizer {config.optimizer.name!r}; allowed: {_allowed(OPTIMIZERS)}")
    _check(config.optimizer.schedule in OPTIMIZER_SCHEDULES,
           f"unknown optimizer.schedule {config.optimizer.schedule!r}; allowed: "
           f"{_allowed(OPTIMIZER_SCHEDULES)}")
    _check(config.train_subset is None or (spec.in_memory and config.train_subset >= 1),
           f"train_subset={config.train_subset!r} must be >= 1 (or None: all) and "
           "needs an in-memory data set")
    _check(0.0 <= config.label_noise < 1.0,
           f"label_noise={config.label_noise!r} must be in [0, 1)")
    _check(config.image_size is None or config.image_size >= 1,
           f"image_size={config.image_size!r} must be >= 1 (or None: the data set's)")
    _check(config.pretrained.format in PRETRAINED_FORMATS,
           f"unknown pretrained.format {config.pretrained.format!r}; allowed: "
           f"{_allowed(PRETRAINED_FORMATS)}")
    _check(config.num_epochs >= 1, f"num_epochs={config.num_epochs!r} must be >= 1")
    _check(config.num_steps is None or config.num_steps >= 1,
           f"num_steps={config.num_steps!r} must be >= 1 (or None: use num_epochs)")
    _check(config.optimizer.learning_rate > 0,
           f"optimizer.learning_rate={config.optimizer.learning_rate!r} must be > 0")
    _check(config.optimizer.weight_decay >= 0,
           f"optimizer.weight_decay={config.optimizer.weight_decay!r} must be >= 0")
    _check(config.optimizer.grad_clip_norm >= 0,
           f"optimizer.grad_clip_norm={config.optimizer.grad_clip_norm!r} must be "
           ">= 0 (0 disables clipping)")
    _check(0.0 <= config.label_smoothing < 1.0,
           f"label_smoothing={config.label_smoothing!r} must be in [0, 1)")
    for name in ("batch_size", "eval_batch_size"):
        size = config[name]
        _check(size >= 1 and size % num_devices == 0,
               f"{name}={size!r} must be a positive multiple of the device count "
               f"{num_devices}")
    per_device_batch = config.batch_size // num_devices
    m = config.sam.examples_per_perturbation
    _check(m is None or (m >= 1 and per_device_batch % m == 0),
           f"sam.examples_per_perturbation={m!r} must divide the per-device batch "
           f"{per_device_batch} (batch_size {config.batch_size} / {num_devices} devices)")
    validate_method(config, per_device_batch)
    sharpness = config.sharpness
    _check(sharpness.every_epochs >= 0,
           f"sharpness.every_epochs={sharpness.every_epochs!r} must be >= 0 (0: off)")
    if sharpness.every_epochs:
        _check(spec.in_memory, f"sharpness.every_epochs: sharpness during training "
               f"needs an in-memory data set, not {config.dataset!r}")
        _check(sharpness.top_k >= 2, f"sharpness.top_k={sharpness.top_k!r} must be >= 2")
        _check(sharpness.m >= 1 and sharpness.num_examples % sharpness.m == 0,
               f"sharpness.m={sharpness.m!r} must divide sharpness.num_examples="
               f"{sharpness.num_examples!r}")
        _check(sharpness.rho >= 0, f"sharpness.rho={sharpness.rho!r} must be >= 0")
    for name in ("log_every_steps", "eval_every_epochs", "checkpoint_every_steps"):
        _check(config[name] >= 1, f"{name}={config[name]!r} must be >= 1")


def _number(config, key: str, low: float, high: float = math.inf, *,
            low_open: bool = False, high_open: bool = False, integer: bool = False):
    """config[key] (dotted) is a finite number in the range, else ConfigError."""
    value = config
    for part in key.split("."):
        value = value[part]
    left, right = ("(" if low_open else "["), (")" if high_open else "]")
    allowed = f"{left}{low:g}, {high:g}{right}" if high != math.inf else (
        f"> {low:g}" if low_open else f">= {low:g}")
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value)
          and (value > low if low_open else value >= low)
          and (value < high if high_open else value <= high)
          and (not integer or float(value).is_integer()))
    _check(ok, f"{key}={value!r} must be {'an integer ' if integer else 'a finite number '}"
           f"{'in ' if high != math.inf else ''}{allowed}")


def validate_method(config, per_device_batch: int) -> None:
    """The method, its sub-config and the settings it runs under."""
    from sam_jax import methods  # the optax transforms: only when validating
    _check(config.method in methods.METHODS,
           f"unknown method {config.method!r}; allowed: {', '.join(methods.METHODS)}")
    _number(config, "sam.rho", 0)
    _number(config, "sam.eta", 0)
    _check(config.sam.ball in _sam.BALLS,
           f"unknown sam.ball {config.sam.ball!r}; allowed: {_allowed(_sam.BALLS)}")
    _check(config.sam.asam_leaves in _sam.ASAM_LEAVES,
           f"unknown sam.asam_leaves {config.sam.asam_leaves!r}; allowed: "
           f"{_allowed(_sam.ASAM_LEAVES)}")
    _number(config, "sam.ascent_steps", 1, integer=True)
    _check(config.sam.ascent_steps == 1 or (config.sam.ball == "l2"
                                            and not config.sam.adaptive),
           f"sam.ascent_steps={config.sam.ascent_steps!r} needs sam.ball 'l2' "
           "without sam.adaptive")
    _check(config.sam.batch_norm in BATCH_NORM_MODES,
           f"unknown sam.batch_norm {config.sam.batch_norm!r}; allowed: "
           f"{_allowed(BATCH_NORM_MODES)}")
    _check(config.sam.group_map in _sam.GROUP_MAPS,
           f"unknown sam.group_map {config.sam.group_map!r}; allowed: "
           f"{_allowed(_sam.GROUP_MAPS)}")
    for key in ("asam.rho", "asam.eta", "usam.rho", "gsam.rho_max", "gsam.rho_min",
                "gsam.alpha", "looksam.rho", "looksam.alpha", "esam.rho", "rwp.sigma",
                "sampa.rho", "extragradient.gamma_scale", "optimistic.alpha",
                "optimistic.beta", "entropy_sgd.gamma", "entropy_sgd.scoping",
                "entropy_sgd.noise"):
        _number(config, key, 0)
    _check(config.asam.leaves in _sam.ASAM_LEAVES,
           f"unknown asam.leaves {config.asam.leaves!r}; allowed: "
           f"{_allowed(_sam.ASAM_LEAVES)}")
    _number(config, "looksam.k", 1, integer=True)
    _number(config, "esam.beta", 0, 1, low_open=True)
    _number(config, "esam.gamma", 0, 1, low_open=True)
    _number(config, "rwp.mix", 0, 1)
    _number(config, "sampa.mix", 0, 1)
    _check(config.sampa.fused in ("auto", "yes", "no"),
           f"unknown sampa.fused {config.sampa.fused!r}; allowed: auto, no, yes")
    _number(config, "entropy_sgd.inner_steps", 1, integer=True)
    _number(config, "entropy_sgd.inner_lr", 0, low_open=True)
    _number(config, "entropy_sgd.mean_decay", 0, 1, high_open=True)
    _check(config.rho_schedule.kind in RHO_SCHEDULES,
           f"unknown rho_schedule.kind {config.rho_schedule.kind!r}; allowed: "
           f"{_allowed(RHO_SCHEDULES)}")
    _number(config, "rho_schedule.warmup_fraction", 0, 1)
    _number(config, "rho_schedule.start_fraction", 0, 1, high_open=True)
    _number(config, "grad_accum_steps", 1, integer=True)
    accumulation = config.grad_accum_steps
    _check(accumulation == 1 or config.sam.group_map == "vmap",
           f"grad_accum_steps={accumulation!r} and sam.group_map='sequential' both "
           "set the microbatches; give one")
    _check(per_device_batch % accumulation == 0,
           f"grad_accum_steps={accumulation!r} must divide the per-device batch "
           f"{per_device_batch}")
    microbatch = per_device_batch // accumulation
    m = config.sam.examples_per_perturbation or per_device_batch
    _check(microbatch % m == 0,
           f"the microbatch of {microbatch} examples (per-device batch "
           f"{per_device_batch} / grad_accum_steps {accumulation}) must be a multiple "
           f"of sam.examples_per_perturbation={m}")
    problem = methods.problem(config, per_device_batch=per_device_batch,
                              microbatch=microbatch)
    _check(problem is None, problem or "")
    from sam_jax import swa
    problem = swa.check(config)
    _check(problem is None, problem or "")


def validate_pretrained(config) -> None:
    """Raises ConfigError if the pretrained checkpoint is required but not set,
    or set but not there (a file for "msgpack", a directory for "orbax").

    Separate from validate_config: it looks at the file system, and a
    finetuning config is complete only once its checkpoint path is given.
    """
    pretrained = config.pretrained
    hint = ("the released EfficientNet checkpoints are converted with "
            "scripts/convert_efficientnet_checkpoint.py")
    _check(pretrained.path is not None or not pretrained.required,
           "pretrained.path is not set: this finetuning config needs a pretrained "
           f"checkpoint, --config.pretrained.path=FILE ({hint})")
    if pretrained.path is None:
        return
    if pretrained.format == "msgpack":
        _check(os.path.isfile(pretrained.path),
               f"pretrained.path={pretrained.path!r}: no such file ({hint})")
    else:
        _check(os.path.isdir(pretrained.path),
               f"pretrained.path={pretrained.path!r}: no such directory (format "
               "'orbax' wants a sam_jax workdir or its checkpoints/STEP directory)")
