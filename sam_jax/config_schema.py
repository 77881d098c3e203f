"""Every key a training config has, with its default.

Config files in configs/ start from `base_config()` and change what differs,
then lock it, so a typo such as `--config.sam.rh0=0.1` fails loudly.
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0  # weights, dropout draws, data order and augmentation

    # Data.
    config.dataset = "cifar10"  # see sam_jax.data.DATASETS
    config.data_dir = ml_collections.config_dict.placeholder(str)  # tfds data_dir
    config.augmentation = "basic"  # see sam_jax.data.specs.IN_MEMORY_AUGMENTATIONS
    # Training / evaluation resolution; None is the data set's own (224 for the
    # streamed ones). In-memory images (CIFAR) are resized up to it after
    # augmentation (finetuning at the model's resolution).
    config.image_size = ml_collections.config_dict.placeholder(int)
    config.randaugment = ml_collections.ConfigDict()  # augmentation="randaugment"
    config.randaugment.num_layers = 2  # operations applied to each image
    config.randaugment.magnitude = 9  # their strength, 0-30
    config.validation_split = False  # hold out 10% of train (the rho search)
    # In-memory data sets: train on the first N examples of the training split
    # only (a fixed subset: the split's stored order, whatever the seed);
    # with validation_split, its last 10% is held out. None: all of them.
    config.train_subset = ml_collections.config_dict.placeholder(int)
    # In-memory data sets: hold out the LAST N examples of the training split as
    # a clean validation set (labels never noised), disjoint from train_subset's
    # first examples; evaluated at the end beside the test split (results'
    # validation_*), for picking hyper-parameters. None: no such set.
    config.validation_examples = ml_collections.config_dict.placeholder(int)
    # In-memory data sets: at the end, evaluate the training examples too,
    # un-augmented, in evaluation mode (results' train_error against the labels
    # trained on; with label noise, train_corrupted_error against the noisy
    # labels of the corrupted examples, so 1 - it is the fraction memorised, and
    # train_uncorrupted_error on the others).
    config.evaluate_training_set = False
    config.label_noise = 0.0  # symmetric noise rate on training labels, [0, 1)
    config.label_noise_seed = 0  # which labels are changed (independent of seed)

    # Model.
    config.model = ml_collections.ConfigDict()  # the network
    config.model.name = "wrn28_10"  # see sam_jax.models.MODELS
    # Dropout and stochastic-depth rates of the ViTs (models.REGULARISED_MODELS);
    # None: the model's own (0). Other models have theirs built in.
    config.model.dropout_rate = ml_collections.config_dict.placeholder(float)
    config.model.stochastic_depth_rate = ml_collections.config_dict.placeholder(float)
    # Compute dtype of the model: "float32" or "bfloat16" (convolutions, dense
    # layers and activations in bf16, about half the activation memory and
    # faster on accelerators). Parameters, gradients, optimizer state,
    # BatchNorm statistics, logits, the loss and SAM's norms stay float32.
    config.dtype = "float32"

    # Finetuning (see sam_jax/pretrained.py): start from a pretrained checkpoint
    # instead of a random init; a run resuming from its own checkpoint does not
    # read it again. Its parameter tree must match the model's except the head,
    # which is re-initialised when the number of classes differs.
    config.pretrained = ml_collections.ConfigDict()
    config.pretrained.path = ml_collections.config_dict.placeholder(str)  # None: scratch
    # "msgpack": one file with {"params", "batch_stats"} (what
    # scripts/convert_efficientnet_checkpoint.py writes); "orbax": a sam_jax run's
    # workdir (its latest checkpoint) or one of its checkpoints/STEP directories.
    config.pretrained.format = "msgpack"
    config.pretrained.required = False  # True (finetuning configs): path must be set
    config.pretrained.head = "head"  # top-level params entry of the classifier
    # BatchNorm uses (and keeps) its running statistics in training too, as when
    # finetuning; dropout and drop-connect stay on.
    config.freeze_batch_norm = False

    # Optimisation (the paper's CIFAR defaults).
    config.num_epochs = 200  # training length in epochs
    # Training length in steps instead (finetuning: 5k steps); None uses epochs.
    config.num_steps = ml_collections.config_dict.placeholder(int)
    config.batch_size = 256  # global, over all devices and hosts
    config.eval_batch_size = 1024  # global; evaluation covers every example once
    config.label_smoothing = 0.0  # of the training loss (ImageNet: 0.1)
    config.optimizer = ml_collections.ConfigDict()  # the base optimizer
    # "sgd", "rmsprop" (the official code's other choice), "adam" or "adamw"
    # (sam_jax/optimizers.py).
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.1  # peak (the schedule starts there)
    config.optimizer.schedule = "cosine"  # or "linear" (to 0), "constant"
    # A linear warm-up from 0 over this many steps, then the schedule over the rest.
    config.optimizer.warmup_steps = 0
    config.optimizer.momentum = 0.9  # sgd, rmsprop; 0: none
    config.optimizer.nesterov = True  # sgd: Nesterov momentum, as the official code
    config.optimizer.b1 = 0.9  # adam, adamw
    config.optimizer.b2 = 0.999  # adam, adamw
    config.optimizer.eps = 1e-8  # adam, adamw
    config.optimizer.weight_decay = 5e-4  # wd, on every parameter
    # Where wd acts (docs: "Weight decay per method"). "loss": an L2 term
    # 0.5 * wd * |w|^2 of the loss (the SAM paper's official code), so it is in
    # every gradient the method takes: the perturbation, LookSAM's stored
    # direction, SAMPa's stored gradient. "decoupled": outside the method, as
    # the authors of GSAM, LookSAM, ESAM, RWP and SAMPa do (torch.optim.SGD's
    # weight_decay): the base optimizer adds wd * w to the method's (clipped)
    # gradient before its momentum (optax.add_decayed_weights). AdamW decays
    # in its update (w -= lr_t * wd * w) in either mode, never in the loss.
    config.optimizer.weight_decay_mode = "loss"
    config.optimizer.grad_clip_norm = 5.0  # 0 disables

    # The gradient method (sam_jax.methods.METHODS): the first element of the
    # training chain. "sgd" is the base optimizer alone. Each method declares
    # its own sub-config (config.<method>: its hyper-parameters, defaults and
    # their sources) in its module (sam_jax/family.py); docs/config_keys.md
    # lists them.
    config.method = "sam"
    from sam_jax import methods  # the registry (imports JAX): only when building
    for method in methods.REGISTRY:
        if method.settings:
            config[method.name] = method.sub_config()

    # The settings every method runs under (in config.sam for the official
    # code's name of m).
    config.sam.sync_perturbation = False  # True: one perturbation for the global batch
    # m: examples per perturbation; None means the per-device batch (the
    # official code's m-sharpness). Must divide the per-device batch.
    config.sam.examples_per_perturbation = ml_collections.config_dict.placeholder(int)
    # How a device's groups run: "vmap", every group at once (batched);
    # "unrolled", one after another in one program (what XLA:CPU runs fastest);
    # "auto", unrolled on the CPU for up to 8 groups with sam.batch_norm
    # "group", else vmap (sam_jax/steps.py, auto_group_loop); "sequential",
    # one group per microbatch (the activation memory of one group), i.e.
    # grad_accum_steps = the number of groups. The same numbers up to float
    # reassociation.
    config.sam.group_map = "auto"
    # BatchNorm statistics: "group" (each group of m examples normalises with
    # its own, as the official code's per-device batches do) or "device" (the
    # statistics of the device's batch (of a microbatch with grad_accum_steps),
    # each group's examples through its own weights, gradients through them:
    # the m-sharpness of small m without BatchNorm over m examples).
    config.sam.batch_norm = "group"

    # A schedule on the method's radius (rho, or its equivalent): "constant"
    # or "lr" (proportional to the learning rate); a linear warm-up over
    # warmup_fraction of training; 0 before start_fraction of training
    # (late-phase SAM: SGD first, then the method; those steps cost one pass).
    config.rho_schedule = ml_collections.ConfigDict()
    config.rho_schedule.kind = "constant"
    config.rho_schedule.warmup_fraction = 0.0
    config.rho_schedule.start_fraction = 0.0

    # Stochastic Weight Averaging over any method (sam_jax/swa.py): the
    # weights are averaged from start_fraction of the epochs (None: off),
    # every cycle_epochs epochs; learning_rate None keeps the base schedule
    # (WASAM), else the SWA paper's decay to it ("constant") or its cycles from
    # cycle_max_learning_rate down to it ("cyclic").
    config.swa = ml_collections.ConfigDict()
    config.swa.start_fraction = ml_collections.config_dict.placeholder(float)
    config.swa.cycle_epochs = 1
    config.swa.learning_rate = ml_collections.config_dict.placeholder(float)
    config.swa.schedule = "constant"
    config.swa.cycle_max_learning_rate = ml_collections.config_dict.placeholder(float)

    # Each device's batch runs as this many microbatches one after another;
    # their gradients are averaged into one update (m must divide a microbatch).
    config.grad_accum_steps = 1

    # Sharpness during training (in-memory data sets): after epoch 1 (where the
    # paper's Figure 3 starts) and every `every_epochs` epochs (0: never),
    # lambda_max, lambda_max / lambda_top_k and m-sharpness on a fixed subset of
    # `num_examples` training examples go to metrics.jsonl (split "sharpness").
    # See sam_jax.analysis.sharpness_metrics.
    config.sharpness = ml_collections.ConfigDict()
    config.sharpness.every_epochs = 0
    config.sharpness.num_examples = 128
    config.sharpness.top_k = 5
    config.sharpness.m = 16
    config.sharpness.rho = 0.05
    config.sharpness.num_iterations = 20
    # The edge of stability every `every_steps` steps (0: never), and at step
    # 0: lambda_max of the training loss (BatchNorm in training mode over the
    # fixed batch of the first `num_examples` training examples, the L2 term
    # included) by `lambda_max_iterations` Lanczos steps warm-started from the
    # last top eigenvector, beside 2 / lr and, for sam (l2 ball) and usam,
    # their edges at the step's rho (SAM's at the batch's ||g||); with
    # trace_probes >= 2, Hutchinson's trace and its standard error; with
    # rank_examples > 0, the rank of the penultimate features of the first
    # rank_examples training examples. Split "stability" of metrics.jsonl; see
    # sam_jax.analysis.StabilityTracker.
    config.sharpness.every_steps = 0
    config.sharpness.lambda_max_iterations = 10
    config.sharpness.trace_probes = 0
    config.sharpness.rank_examples = 0

    # Faults: a non-finite loss or gradient stops the run (the last good
    # checkpoint is kept); True skips such steps instead (counted in metrics).
    config.skip_nonfinite_steps = False

    # Bookkeeping.
    config.log_every_steps = 100  # a progress line and a "train" record
    config.eval_every_epochs = 10  # test evaluation (and at the end)
    config.checkpoint_every_steps = 1000  # periodic checkpoints (and the last)
    return config


def parse_config_arg(arg, axes):
    """'cifar100,sgd' -> {'dataset': 'cifar100', 'aug': 'basic', ...}."""
    choice = {axis: values[0] for axis, values in axes.items()}
    for item in filter(None, (arg or "").split(",")):
        axis = next((a for a, values in axes.items() if item in values), None)
        if axis is None:
            allowed = "; ".join(f"{a}: {'|'.join(v)}" for a, v in axes.items())
            raise ValueError(f"unknown config arg {item!r}; allowed: {allowed}")
        choice[axis] = item
    return choice


def load_config_file(spec: str):
    """`PATH[:ARG]` -> get_config(ARG), with one-line errors (BadInputError)
    for a missing file, a file that does not run, and an ARG it refuses."""
    import importlib.util
    import os

    from sam_jax.errors import BadInputError
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise BadInputError(f"config file {path!r} does not exist")
    module_spec = importlib.util.spec_from_file_location(
        "sam_jax_config_" + os.path.basename(path).removesuffix(".py"), path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as e:
        raise BadInputError(f"config file {path!r} is not valid Python: {e.msg} "
                            f"(line {e.lineno})") from None
    except Exception as e:
        raise BadInputError(f"config file {path!r} fails to load "
                            f"({type(e).__name__}: {e})") from None
    if not hasattr(module, "get_config"):
        raise BadInputError(f"config file {path!r} defines no get_config(arg)")
    try:
        return module.get_config(arg or None)
    except ValueError as e:  # parse_config_arg's unknown ARG
        raise BadInputError(f"{path}:{arg}: {e}") from None


def _flat_keys(config, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        name = prefix + key
        keys.append(name)
        if isinstance(value, ml_collections.ConfigDict):
            keys += _flat_keys(value, name + ".")
    return keys


def check_overrides(config, argv) -> None:
    """BadInputError for a `--config.KEY=...` whose KEY the config does not
    have, naming the closest key ("did you mean sam.rho?")."""
    import difflib

    from sam_jax.errors import BadInputError
    keys = _flat_keys(config)
    for item in argv:
        if not item.startswith("--config."):
            continue
        key = item[len("--config."):].split("=", 1)[0]
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise BadInputError(f"unknown config key {key}{hint}")
