"""Checks a training config before any compute, with one-line errors."""

import math
import os

from sam_jax import data
from sam_jax.errors import BadInputError
from sam_jax.models import COMPUTE_DTYPES, MODELS, REGULARISED_MODELS
from sam_jax.models import options_from_config
from sam_jax.optimizers import OPTIMIZERS
from sam_jax.optimizers import SCHEDULES as OPTIMIZER_SCHEDULES
from sam_jax.ranges import range_problem

BATCH_NORM_MODES = ("group", "device")
RHO_SCHEDULES = ("constant", "lr")
GROUP_MAPS = ("auto", "vmap", "unrolled", "sequential")  # config.sam.group_map
WEIGHT_DECAY_MODES = ("loss", "decoupled")  # see config_schema
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
    _check(not options_from_config(config) or config.model.name in REGULARISED_MODELS,
           f"model.dropout_rate / model.stochastic_depth_rate are for the ViTs "
           f"({', '.join(REGULARISED_MODELS)}); model {config.model.name!r} has its "
           "own: leave them None")
    _number(config, "model.dropout_rate", 0, 1, high_open=True, optional="the model's")
    _number(config, "model.stochastic_depth_rate", 0, 1, high_open=True,
            optional="the model's")
    _check(config.dtype in COMPUTE_DTYPES,
           f"unknown dtype {config.dtype!r}; allowed: {', '.join(COMPUTE_DTYPES)}")
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
    _check(spec.in_memory or config.train_subset is None,
           f"train_subset={config.train_subset!r} needs an in-memory data set, "
           f"not {config.dataset!r}")
    _check(spec.in_memory or (config.validation_examples is None
                              and not config.evaluate_training_set),
           "validation_examples and evaluate_training_set need an in-memory data "
           f"set, not {config.dataset!r}")
    _check(config.validation_examples is None or not config.validation_split,
           f"validation_examples={config.validation_examples!r} and "
           "validation_split=True both choose a validation set; set one")
    _check(config.pretrained.format in PRETRAINED_FORMATS,
           f"unknown pretrained.format {config.pretrained.format!r}; allowed: "
           f"{_allowed(PRETRAINED_FORMATS)}")
    _check(config.data_dir is None or not os.path.isfile(config.data_dir),
           f"data_dir={config.data_dir!r} is a file, not a directory (the tfds data "
           "directory, or the one holding the data set's files)")
    # Every number, before any compute: in range and finite.
    _number(config, "seed", 0, integer=True)
    _number(config, "label_noise_seed", 0, integer=True)
    _number(config, "label_noise", 0, 1, high_open=True)
    _number(config, "label_smoothing", 0, 1, high_open=True)
    _number(config, "train_subset", 1, integer=True, optional="all")
    _number(config, "validation_examples", 1, integer=True, optional="none")
    _number(config, "image_size", 1, integer=True, optional="the data set's")
    _number(config, "randaugment.num_layers", 0, integer=True)
    _number(config, "randaugment.magnitude", 0, 30)
    _number(config, "num_epochs", 1, integer=True)
    _number(config, "num_steps", 1, integer=True, optional="use num_epochs")
    _number(config, "optimizer.learning_rate", 0, low_open=True)
    _number(config, "optimizer.momentum", 0, 1, high_open=True)
    _number(config, "optimizer.weight_decay", 0)
    _check(config.optimizer.weight_decay_mode in WEIGHT_DECAY_MODES,
           f"unknown optimizer.weight_decay_mode {config.optimizer.weight_decay_mode!r}; "
           f"allowed: {', '.join(WEIGHT_DECAY_MODES)}")
    _number(config, "optimizer.warmup_steps", 0, integer=True)
    _number(config, "optimizer.b1", 0, 1, high_open=True)
    _number(config, "optimizer.b2", 0, 1, high_open=True)
    _number(config, "optimizer.eps", 0)
    _number(config, "optimizer.grad_clip_norm", 0)
    for name in ("batch_size", "eval_batch_size"):
        _number(config, name, 1, integer=True)
        size = config[name]
        _check(size % num_devices == 0,
               f"{name}={size!r} must be a positive multiple of the device count "
               f"{num_devices}")
    _number(config, "sam.examples_per_perturbation", 1, integer=True,
            optional="the per-device batch")
    for name in ("log_every_steps", "eval_every_epochs", "checkpoint_every_steps"):
        _number(config, name, 1, integer=True)
    sharpness = config.sharpness
    _number(config, "sharpness.every_epochs", 0, integer=True)
    _number(config, "sharpness.num_examples", 1, integer=True)
    _number(config, "sharpness.top_k", 2, integer=True)
    _number(config, "sharpness.m", 1, integer=True)
    _number(config, "sharpness.rho", 0)
    _number(config, "sharpness.num_iterations", sharpness.top_k, integer=True)
    _check(sharpness.num_examples % sharpness.m == 0,
           f"sharpness.m={sharpness.m!r} must divide sharpness.num_examples="
           f"{sharpness.num_examples!r}")
    _check(not sharpness.every_epochs or spec.in_memory,
           f"sharpness.every_epochs: sharpness during training needs an in-memory "
           f"data set, not {config.dataset!r}")
    _number(config, "sharpness.every_steps", 0, integer=True)
    _number(config, "sharpness.lambda_max_iterations", 1, integer=True)
    _number(config, "sharpness.trace_probes", 0, integer=True)
    _number(config, "sharpness.rank_examples", 0, integer=True)
    _check(sharpness.trace_probes != 1,
           "sharpness.trace_probes=1 must be 0 (off) or >= 2 (the standard error "
           "needs two probes)")
    _check(not sharpness.every_steps or spec.in_memory,
           f"sharpness.every_steps: sharpness during training needs an in-memory "
           f"data set, not {config.dataset!r}")
    for key in ("trace_probes", "rank_examples"):
        _check(not sharpness[key] or sharpness.every_steps,
               f"sharpness.{key}={sharpness[key]!r} is measured every "
               "sharpness.every_steps steps: set sharpness.every_steps > 0")
    per_device_batch = config.batch_size // num_devices
    m = config.sam.examples_per_perturbation
    _check(m is None or per_device_batch % m == 0,
           f"sam.examples_per_perturbation={m!r} must divide the per-device batch "
           f"{per_device_batch} (batch_size {config.batch_size} / {num_devices} devices)")
    validate_method(config, per_device_batch)


def _number(config, key: str, low: float, high: float = math.inf, *,
            low_open: bool = False, high_open: bool = False, integer: bool = False,
            optional: str = ""):
    """config[key] (dotted) is a finite number in the range, else ConfigError.
    With `optional` (what None means), None is allowed too."""
    value = config
    for part in key.split("."):
        value = value[part]
    problem = range_problem(key, value, low, high, low_open=low_open,
                            high_open=high_open, integer=integer, optional=optional)
    _check(problem is None, problem or "")


def validate_method(config, per_device_batch: int) -> None:
    """The method, its sub-config and the settings it runs under."""
    from sam_jax import methods  # the optax transforms: only when validating
    _check(config.method in methods.METHODS,
           f"unknown method {config.method!r}; allowed: {', '.join(methods.METHODS)}")
    # Each method's sub-config: its constructor's checks (methods.py).
    problem = methods.settings_problem(config)
    _check(problem is None, problem or "")
    _check(config.sam.batch_norm in BATCH_NORM_MODES,
           f"unknown sam.batch_norm {config.sam.batch_norm!r}; allowed: "
           f"{_allowed(BATCH_NORM_MODES)}")
    _check(config.sam.group_map in GROUP_MAPS,
           f"unknown sam.group_map {config.sam.group_map!r}; allowed: "
           f"{_allowed(GROUP_MAPS)}")
    # Pooled statistics span the groups of one pass, a collective over the
    # vmapped groups: "sequential" runs one group per pass, which would quietly
    # make "device" "group", and "unrolled" has no group axis to pool over.
    _check(config.sam.batch_norm != "device" or config.sam.group_map in ("vmap", "auto"),
           "sam.batch_norm='device' needs sam.group_map 'vmap' or 'auto' (got "
           f"{config.sam.group_map!r}): BatchNorm pools over the groups of one pass")
    _check(config.rho_schedule.kind in RHO_SCHEDULES,
           f"unknown rho_schedule.kind {config.rho_schedule.kind!r}; allowed: "
           f"{_allowed(RHO_SCHEDULES)}")
    _number(config, "rho_schedule.warmup_fraction", 0, 1)
    _number(config, "rho_schedule.start_fraction", 0, 1, high_open=True)
    _number(config, "grad_accum_steps", 1, integer=True)
    accumulation = config.grad_accum_steps
    _check(accumulation == 1 or config.sam.group_map != "sequential",
           f"grad_accum_steps={accumulation!r} and sam.group_map='sequential' both "
           "set the microbatches; give one")
    _check(per_device_batch % accumulation == 0,
           f"grad_accum_steps={accumulation!r} must divide the per-device batch "
           f"{per_device_batch}")
    microbatch = per_device_batch // accumulation
    m = config.sam.examples_per_perturbation or per_device_batch
    # Unset, m is the per-device batch (the official code's m); it is not
    # derived from the microbatch, as that would change which sharpness SAM
    # minimises behind the user's back.
    _check(config.sam.examples_per_perturbation is not None or microbatch % m == 0,
           f"grad_accum_steps={accumulation!r} splits the per-device batch of "
           f"{per_device_batch} into microbatches of {microbatch}, and each group of "
           "sam.examples_per_perturbation (m) examples must fit in one; m is unset, "
           f"so it is the per-device batch ({per_device_batch}): set it to a divisor "
           f"of {microbatch}, e.g. --config.sam.examples_per_perturbation={microbatch} "
           "(m sets the sharpness SAM minimises, so it is left to you)")
    _check(microbatch % m == 0,
           f"the microbatch of {microbatch} examples (per-device batch "
           f"{per_device_batch} / grad_accum_steps {accumulation}) must be a multiple "
           f"of sam.examples_per_perturbation={m}")
    problem = methods.problem(config, per_device_batch=per_device_batch,
                              microbatch=microbatch)
    _check(problem is None, problem or "")
    _number(config, "swa.start_fraction", 0, 1, high_open=True, optional="off")
    _number(config, "swa.cycle_epochs", 1, integer=True)
    _number(config, "swa.learning_rate", 0, low_open=True,
            optional="the base schedule")
    _number(config, "swa.cycle_max_learning_rate", 0, low_open=True,
            optional="unset")
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
