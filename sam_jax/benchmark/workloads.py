"""What the benchmark times: one unit of work per call, returning its seconds.

Every sam_jax step is the one the trainer runs (steps.make_train_step under
parallel.shard_train_step, optimizers.make_optimizer) on configs/cifar_wrn.py
with only the model and batch size changed; inputs are random CIFAR-shaped
batches already on the device. TensorFlow is imported only by the tf.data
pipeline's workload, so the step cases run where it is not installed.
"""

import dataclasses
import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sam_jax import declarations
from sam_jax import methods
from sam_jax import optimizers
from sam_jax import parallel
from sam_jax import steps
from sam_jax import train
from sam_jax.data import device_pipeline
from sam_jax.data.specs import get_spec
from sam_jax.models import conv as conv_module
from sam_jax.models import get_model

DATASET = "cifar10"
CIFAR10_TRAIN_EXAMPLES = 50_000  # sizes the LR schedule and the pipeline's split
PIPELINE_AUGMENTATION = "cutout"  # basic (crop + flip) then cutout


@dataclasses.dataclass(frozen=True)
class Setup:
    """A model and a global batch size that workloads share."""
    model_name: str
    batch_size: int

    @property
    def label(self) -> str:
        return f"{self.model_name} batch {self.batch_size}"


# ------------------------------------------------------------------ configs

def load_config(method: str):
    """configs/cifar_wrn.py for CIFAR-10, basic augmentation, 200 epochs."""
    path = declarations.resolve_config("configs/cifar_wrn.py")
    import importlib.util
    spec = importlib.util.spec_from_file_location("cifar_wrn", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(f"{DATASET},basic,200,{method}")


def setup_config(setup: Setup, method: str, examples_per_perturbation=None,
                 group_map: str = "auto", **overrides):
    """configs/cifar_wrn.py with the setup's model and batch; `method` is "sam"
    or "sgd" (the config's ARG) or any other method name (--config.method);
    `overrides` set other keys ("dtype", "grad_accum_steps", "sam.rho")."""
    config = load_config(method if method in ("sam", "sgd") else "sam")
    if method not in ("sam", "sgd"):
        config.method = method
        overrides = {**methods.get(method).needs, **overrides}
    config.model.name = setup.model_name
    config.batch_size = setup.batch_size
    config.sam.examples_per_perturbation = examples_per_perturbation
    config.sam.group_map = group_map
    for key, value in overrides.items():
        section, _, name = key.rpartition(".")
        (config[section] if section else config)[name] = value
    return config


def total_steps(config) -> int:
    return (device_pipeline.steps_per_epoch(CIFAR10_TRAIN_EXAMPLES, config.batch_size)
            * config.num_epochs)


def random_batch(setup: Setup, seed: int = 0, image_shape=None) -> dict:
    """Random images of the CIFAR shape (or `image_shape`) and labels."""
    spec = get_spec(DATASET)
    rng = np.random.default_rng(seed)
    shape = tuple(image_shape or spec.image_shape)
    return {"image": rng.standard_normal((setup.batch_size,) + shape).astype(np.float32),
            "label": rng.integers(0, spec.num_classes, setup.batch_size).astype(np.int32)}


def parameter_bytes(params) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(params))


# ------------------------------------------------------------ sam_jax steps

class CompiledStep(NamedTuple):
    compiled: Any  # jax.stages.Compiled: (state, batch, key) -> state
    state: Any  # a fresh state to start from (donated by the first call)
    batch: Any
    key: Any
    compile_seconds: float  # trace + lower + compile
    parameter_bytes: int


def compile_sam_jax_step(config, mesh, batch_numpy,
                         compiler_options: Optional[dict] = None) -> CompiledStep:
    spec = get_spec(DATASET)
    model = get_model(config.model.name, spec.num_classes, config.dtype)
    chain = train.training_chain(config, total_steps(config))
    # SAF / MESA's loss term, its records over the batch's examples.
    num_examples = batch_numpy["label"].shape[0]
    loss_term = methods.loss_term(config, num_examples=num_examples,
                                  num_classes=spec.num_classes, steps_per_epoch=1)
    if loss_term is not None and loss_term.example_indices:
        batch_numpy = dict(batch_numpy, index=np.arange(num_examples, dtype=np.int32))
    # From host values, as the trainer's: leaves that XLA returned as one
    # buffer (MESA's average starts equal to the weights) cannot be donated twice.
    state = jax.device_put(jax.device_get(
        steps.initial_state(config.seed, model, chain.tx, batch_numpy["image"].shape[1:],
                            loss_term=loss_term)), parallel.replicated(mesh))
    batch = parallel.global_batch(mesh, batch_numpy)
    key = jax.random.PRNGKey(config.seed)
    start = time.perf_counter()
    step = parallel.shard_train_step(
        train.train_step_from_config(config, model, chain, mesh.size, loss_term), mesh)
    compiled = step.lower(state, batch, key).compile(compiler_options)
    seconds = time.perf_counter() - start
    return CompiledStep(compiled, state, batch, key, seconds,
                        parameter_bytes(state.params))


# --------------------------------------------------------- optax.contrib.sam

class OptaxSamState(NamedTuple):
    step: jnp.ndarray
    params: Any
    batch_stats: Any
    opt_state: Any
    loss: jnp.ndarray  # of the last step's first pass


def optax_contrib_sam_train_step(model, base_tx, *, rho: float, weight_decay: float):
    """A train step around optax.contrib.sam as its docs show (opaque mode).

    Same loss as sam_jax's (cross entropy + weight decay as an L2 term), same
    base optimizer, same BatchNorm semantics: both passes normalise with their
    batch's statistics, both start from the pre-step running statistics, and
    only the first pass's update is kept (grad_fn drops the second's).
    """
    adversarial_tx = optax.chain(optax.contrib.normalize(), optax.sgd(rho))
    tx = optax.contrib.sam(base_tx, adversarial_tx, opaque_mode=True,
                           batch_axis_name=None)

    def loss_fn(params, batch_stats, batch, rng):
        logits, mutated = model.apply(
            {"params": params, "batch_stats": batch_stats}, batch["image"],
            train=True, mutable=["batch_stats"], rngs={"dropout": rng})
        loss = (steps.cross_entropy(logits, batch["label"]).mean()
                + weight_decay * steps.l2_penalty(params))
        return loss, mutated["batch_stats"]

    def init(params, batch_stats) -> OptaxSamState:
        return OptaxSamState(jnp.zeros([], jnp.int32), params, batch_stats,
                             tx.init(params), jnp.zeros([], jnp.float32))

    def train_step(state: OptaxSamState, batch, key):
        rng = jax.random.fold_in(key, state.step)
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.batch_stats, batch, rng)
        grad_fn = lambda params, _: jax.grad(loss_fn, has_aux=True)(
            params, state.batch_stats, batch, rng)[0]
        updates, opt_state = tx.update(grads, state.opt_state, state.params,
                                       grad_fn=grad_fn)
        params = optax.apply_updates(state.params, updates)
        return OptaxSamState(state.step + 1, params, batch_stats, opt_state, loss)

    return init, train_step


def compile_optax_contrib_sam_step(config, batch,
                                   compiler_options: Optional[dict] = None) -> CompiledStep:
    spec = get_spec(DATASET)
    model = get_model(config.model.name, spec.num_classes, config.dtype)
    base_tx = optimizers.make_optimizer(config, total_steps(config))
    init, train_step = optax_contrib_sam_train_step(
        model, base_tx, rho=config.sam.rho, weight_decay=config.optimizer.weight_decay)
    # Same initial weights as sam_jax's side.
    reference = steps.initial_state(config.seed, model, base_tx, spec.image_shape)
    state = init(reference.params, reference.batch_stats)
    key = jax.random.PRNGKey(config.seed)
    start = time.perf_counter()
    compiled = jax.jit(train_step, donate_argnums=0).lower(state, batch, key).compile(
        compiler_options)
    seconds = time.perf_counter() - start
    return CompiledStep(compiled, state, batch, key, seconds,
                        parameter_bytes(state.params))


# ---------------------------------------------------------------- workloads
# A workload is a callable that does one unit of work and returns the seconds
# it took (setup that is not part of the unit happens inside, untimed).

class JaxStepWorkload:
    """One training step per call; the state carries over (it is donated)."""

    def __init__(self, step: CompiledStep, examples_per_call: int,
                 is_finite: Callable[[Any], bool]):
        self.compiled, self.state = step.compiled, step.state
        self.batch, self.key = step.batch, step.key
        self.examples_per_call = examples_per_call
        self.is_finite = is_finite

    def __call__(self) -> float:
        start = time.perf_counter()
        output = self.compiled(self.state, self.batch, self.key)
        jax.block_until_ready(output)
        seconds = time.perf_counter() - start
        self.state = output
        return seconds

    def finite(self) -> bool:
        return bool(self.is_finite(self.state))


def sam_jax_state_is_finite(state: steps.TrainState) -> bool:
    return int(jax.device_get(state.nonfinite_steps)) == 0


def optax_state_is_finite(state: OptaxSamState) -> bool:
    return bool(np.isfinite(jax.device_get(state.loss)))


def random_split(num_examples: int, seed: int = 0):
    """CIFAR-shaped uint8 images and labels: what the input pipelines read."""
    spec = get_spec(DATASET)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (num_examples,) + tuple(spec.image_shape),
                          dtype=np.uint8)
    return images, rng.integers(0, spec.num_classes, num_examples).astype(np.int32)


class DevicePipelineWorkload:
    """`batches_per_call` batches of the device-resident pipeline (the
    trainer's for in-memory data: gathered and augmented in JAX on the mesh)."""

    def __init__(self, mesh, num_examples: int, batch_size: int, batches_per_call: int):
        from sam_jax.data import device_inputs
        images, labels = random_split(num_examples)
        self.inputs = device_inputs.DeviceInputs(
            spec=get_spec(DATASET), train_images=images, train_labels=labels,
            eval_images=images[:batch_size], eval_labels=labels[:batch_size],
            augmentation=PIPELINE_AUGMENTATION, seed=0, batch_size=batch_size,
            eval_batch_size=batch_size, mesh=mesh, axis=steps.AXIS)
        self.batches_per_call = batches_per_call
        self.examples_per_call = batch_size * batches_per_call
        self.step = 0
        jax.block_until_ready(self.inputs.train_batch(0))  # compiled, untimed

    def __call__(self) -> float:
        start = time.perf_counter()
        for _ in range(self.batches_per_call):
            batch = self.inputs.train_batch(self.step)
            self.step += 1
        jax.block_until_ready(batch)
        return time.perf_counter() - start

    def finite(self) -> bool:
        return True


class PipelineWorkload:
    """`batches_per_call` batches of the tf.data in-memory training pipeline.

    Each call reads a new stretch of steps from a fresh dataset and consumes it
    to the end, so no prefetching thread works while other workloads are timed;
    building the dataset and its first batch (start-up) are not timed.
    """

    def __init__(self, num_examples: int, batch_size: int, batches_per_call: int):
        self.images, self.labels = random_split(num_examples)
        self.spec = get_spec(DATASET)
        self.batch_size = batch_size
        self.batches_per_call = batches_per_call
        self.examples_per_call = batch_size * batches_per_call
        self.calls = 0

    def __call__(self) -> float:
        from sam_jax.data import pipeline  # TensorFlow: only for this workload
        steps_per_call = self.batches_per_call + 1  # + the untimed first batch
        start_step = self.calls * steps_per_call
        self.calls += 1
        dataset = pipeline.train_dataset(
            self.images, self.labels, spec=self.spec, augmentation=PIPELINE_AUGMENTATION,
            global_batch_size=self.batch_size, seed=0, start_step=start_step,
            num_steps=start_step + steps_per_call)
        batches = pipeline.as_numpy_iterator(dataset)
        next(batches)
        start = time.perf_counter()
        count = sum(1 for _ in batches)
        seconds = time.perf_counter() - start
        if count != self.batches_per_call:
            raise RuntimeError(f"pipeline gave {count} batches, expected "
                               f"{self.batches_per_call}")
        return seconds

    def finite(self) -> bool:
        return True


class ModelPassWorkload:
    """One pass of the model's training loss per call, for the step profile:
    "forward" (training mode, BatchNorm statistics out), "input_grad" (and its
    gradient in the images only: the backward pass without weight
    gradients) or "param_grad" (its gradient in the weights: what SGD takes)."""

    def __init__(self, config, batch_numpy, what: str):
        spec = get_spec(DATASET)
        model = get_model(config.model.name, spec.num_classes, config.dtype)
        images = jnp.asarray(batch_numpy["image"])
        labels = jnp.asarray(batch_numpy["label"])
        variables = model.init(jax.random.PRNGKey(config.seed), images[:1], train=False)

        def loss(params, images):
            logits, _ = model.apply({"params": params,
                                     "batch_stats": variables["batch_stats"]},
                                    images, train=True, mutable=["batch_stats"])
            return steps.cross_entropy(logits, labels).mean()

        fn = {"forward": loss, "input_grad": jax.grad(loss, argnums=1),
              "param_grad": jax.grad(loss, argnums=0)}[what]
        self.run = jax.jit(fn)
        self.args = (variables["params"], images)
        self.examples_per_call = len(batch_numpy["label"])
        self.output = jax.block_until_ready(self.run(*self.args))  # compiled, untimed

    def __call__(self) -> float:
        start = time.perf_counter()
        self.output = jax.block_until_ready(self.run(*self.args))
        return time.perf_counter() - start

    def finite(self) -> bool:
        return all(bool(jnp.all(jnp.isfinite(x)))
                   for x in jax.tree_util.tree_leaves(self.output))


class TorchStepWorkload:
    """One PyTorch training step per call: "sgd", or SAM with m examples per
    perturbation (m = the batch: davda54/sam's two steps; smaller m: a loop
    over the groups, torch_reference.grouped_sam_train_step)."""

    def __init__(self, config, batch_numpy, num_threads: int, method: str):
        import torch  # optional dependency
        from sam_jax.benchmark import torch_reference as reference
        torch.set_num_threads(num_threads)
        torch.manual_seed(config.seed)
        depth, width = (int(x) for x in config.model.name[3:].split("_"))
        images = batch_numpy["image"]
        self.torch = torch
        self.model = reference.WideResnet(depth, width, get_spec(DATASET).num_classes,
                                          in_channels=images.shape[-1]).train()
        opt = config.optimizer
        sgd = dict(lr=opt.learning_rate, momentum=opt.momentum, nesterov=opt.nesterov,
                   weight_decay=opt.weight_decay)
        self.images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        self.labels = torch.from_numpy(batch_numpy["label"].astype(np.int64))
        m = config.sam.examples_per_perturbation or len(self.labels)
        if method == "sgd":
            optimizer = torch.optim.SGD(self.model.parameters(), **sgd)
            self.step = lambda: reference.sgd_train_step(self.model, optimizer,
                                                         self.images, self.labels)
        elif m == len(self.labels):
            optimizer = reference.make_sam_optimizer(self.model, rho=config.sam.rho, **{
                "learning_rate" if k == "lr" else k: v for k, v in sgd.items()})
            self.step = lambda: reference.sam_train_step(self.model, optimizer,
                                                         self.images, self.labels)
        else:
            optimizer = torch.optim.SGD(self.model.parameters(), **sgd)
            self.step = lambda: reference.grouped_sam_train_step(
                self.model, optimizer, self.images, self.labels, rho=config.sam.rho,
                examples_per_perturbation=m)
        self.examples_per_call = len(self.labels)
        self.loss = None

    def __call__(self) -> float:
        start = time.perf_counter()
        self.loss = self.step()
        return time.perf_counter() - start

    def finite(self) -> bool:
        return bool(self.torch.isfinite(self.loss))


class TorchSamWorkload:
    """One step of the PyTorch two-step SAM (davda54/sam) per call."""

    def __init__(self, config, batch_numpy, num_threads: int):
        import torch  # imported here: torch is an optional dependency
        from sam_jax.benchmark import torch_reference as reference
        torch.set_num_threads(num_threads)
        torch.manual_seed(config.seed)
        depth, width = (int(x) for x in config.model.name[3:].split("_"))
        spec = get_spec(DATASET)
        self.torch, self.reference = torch, reference
        self.model = reference.WideResnet(depth, width, spec.num_classes).train()
        opt = config.optimizer
        self.optimizer = reference.make_sam_optimizer(
            self.model, rho=config.sam.rho, learning_rate=opt.learning_rate,
            momentum=opt.momentum, nesterov=opt.nesterov,
            weight_decay=opt.weight_decay)
        # NHWC -> NCHW, torch's layout; contiguous as a DataLoader gives it.
        self.images = torch.from_numpy(
            np.ascontiguousarray(batch_numpy["image"].transpose(0, 3, 1, 2)))
        self.labels = torch.from_numpy(batch_numpy["label"].astype(np.int64))
        self.examples_per_call = len(batch_numpy["label"])
        self.parameter_count = sum(p.numel() for p in self.model.parameters())
        self.loss = None

    def __call__(self) -> float:
        start = time.perf_counter()
        self.loss = self.reference.sam_train_step(self.model, self.optimizer,
                                                  self.images, self.labels)
        return time.perf_counter() - start

    def finite(self) -> bool:
        return bool(self.torch.isfinite(self.loss))


def conv_layer_problem(batch_size: int, channels: int) -> tuple:
    """Input (NHWC, 32x32) and 3x3 kernel (HWIO) of the conv cases, as numpy."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch_size, 32, 32, channels)).astype(np.float32)
    w = (0.05 * rng.standard_normal((3, 3, channels, channels))).astype(np.float32)
    return x, w


class ConvWeightGradWorkload:
    """The weight gradient of one 3x3 SAME convolution per call (its VJP in w)."""

    def __init__(self, conv_fn, batch_size: int, channels: int):
        x, w = (jnp.asarray(a) for a in conv_layer_problem(batch_size, channels))
        conv = lambda x, w: conv_fn(x, w, (1, 1), "SAME",
                                    dimension_numbers=conv_module.NHWC)
        dy = conv(x, w)
        self.grad = jax.jit(lambda x, w, dy: jax.vjp(lambda w: conv(x, w), w)[1](dy)[0])
        self.args = (x, w, dy)
        self.examples_per_call = batch_size
        self.result = self.grad(*self.args)

    def __call__(self) -> float:
        start = time.perf_counter()
        self.result = jax.block_until_ready(self.grad(*self.args))
        return time.perf_counter() - start

    def finite(self) -> bool:
        return bool(jnp.all(jnp.isfinite(self.result)))


class ConvLayerWorkload:
    """WRN's first 3x3 conv layer, NHWC in JAX (sam_jax's conv) or NCHW in torch.

    `backward`: forward and the gradients in input and weights (as in
    training), else the forward pass alone.
    """

    def __init__(self, framework: str, backward: bool, batch_size: int, channels: int,
                 num_threads: int):
        x, w = conv_layer_problem(batch_size, channels)
        self.examples_per_call = batch_size
        if framework == "jax":
            conv = lambda x, w: conv_module.conv_general_dilated(
                x, w, (1, 1), "SAME", dimension_numbers=conv_module.NHWC)
            loss = lambda x, w: jnp.sum(conv(x, w) ** 2)
            fn = jax.jit(jax.grad(loss, (0, 1)) if backward else conv)
            args = (jnp.asarray(x), jnp.asarray(w))
            self.run = lambda: jax.block_until_ready(fn(*args))
            self.all_finite = lambda outputs: all(
                bool(jnp.all(jnp.isfinite(y))) for y in jax.tree_util.tree_leaves(outputs))
        else:
            import torch  # optional dependency
            torch.set_num_threads(num_threads)
            xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
            wt = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
            conv = lambda: torch.nn.functional.conv2d(xt, wt, padding=1)

            def run():
                if not backward:
                    with torch.no_grad():
                        return conv()
                xt.requires_grad_(True)
                wt.requires_grad_(True)
                return torch.autograd.grad((conv() ** 2).sum(), (xt, wt))
            self.run = run
            self.all_finite = lambda outputs: all(
                bool(torch.isfinite(y).all()) for y in
                (outputs if isinstance(outputs, tuple) else (outputs,)))
        self.outputs = self.run()

    def __call__(self) -> float:
        start = time.perf_counter()
        self.outputs = self.run()
        return time.perf_counter() - start

    def finite(self) -> bool:
        return self.all_finite(self.outputs)


class DeviceSumWorkload:
    """One mean over the mesh's devices of a tree shaped like the model's
    parameters (each device holding its own values, as each holds its own
    gradient), per call: `mean_fn(tree, axis_name)` inside shard_map."""

    def __init__(self, mesh, params, mean_fn):
        from jax.sharding import NamedSharding, PartitionSpec as P
        axis = mesh.axis_names[0]
        # Leaf shapes with a leading device axis; each device's values differ.
        keys = iter(jax.random.split(jax.random.PRNGKey(0),
                                     len(jax.tree_util.tree_leaves(params))))
        per_device = jax.tree_util.tree_map(
            lambda p: jax.random.normal(next(keys), (mesh.size,) + p.shape, p.dtype),
            params)
        self.tree = jax.device_put(per_device, NamedSharding(mesh, P(axis)))
        self.mean = jax.jit(jax.shard_map(
            lambda t: mean_fn(jax.tree_util.tree_map(lambda x: x[0], t), axis),
            mesh=mesh, in_specs=P(axis), out_specs=P()))
        self.examples_per_call = 1
        self.result = jax.block_until_ready(self.mean(self.tree))  # compiled, untimed

    def __call__(self) -> float:
        start = time.perf_counter()
        self.result = jax.block_until_ready(self.mean(self.tree))
        return time.perf_counter() - start

    def finite(self) -> bool:
        return all(bool(jnp.all(jnp.isfinite(x)))
                   for x in jax.tree_util.tree_leaves(self.result))
