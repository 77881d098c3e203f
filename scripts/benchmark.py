"""Speed and memory of sam_jax's SAM step, each case a ratio measured side by side.

  python scripts/benchmark.py --json_out=experiments/benchmarks/results.json \
      --md_out=experiments/benchmarks/results.md

Cases (--cases picks some; all by default):
  sam_vs_sgd      SAM step time / SGD step time, same model and batch    <= 2.0
  sam_vs_optax    sam_jax SAM step / optax.contrib.sam step (opaque)     <= 1.0
  sam_vs_torch    sam_jax SAM images/s / PyTorch two-step SAM images/s   >= 1.0
  input_pipeline  input pipeline images/s / SAM step images/s            >= 3.0
  memory          (SAM peak - SGD peak) / parameter bytes, from XLA      <= 1.1
  compile_time    SAM compile time / SGD compile time                    (none)
  m_sharpness     SAM step with m = per-device batch / 8 / with m = it   (none)
  conv_weight_grad  weight gradient of WRN's first 3x3 conv layer: sam_jax's
                  (models/conv.py) / lax's default                       (none)
  conv_vs_torch   that layer's forward, and forward + both gradients:
                  sam_jax / torch (not in the default set)               (none)
  m_sharpness_sequential  the same with group_map "sequential" (not default)

How it measures: the timed workloads of one model and batch run round-robin,
one call of each per round, the order rotated every round, after --warmup
untimed calls of each; a time is the median of --repeats rounds. Machine load
therefore shifts both sides of a ratio alike. Every sam_jax step is the one
`sam_jax.train.train_and_evaluate` runs (steps.make_train_step under
parallel.shard_train_step, train.make_optimizer) on configs/cifar_wrn.py with
only the model and batch size changed; inputs are random CIFAR-shaped batches
already on the device. `--quick` shrinks everything for the smoke test.
"""

import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import platform
import re
import statistics
import sys
import time
from typing import Any, Callable, NamedTuple, Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402  (after the environment is set)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from sam_jax import parallel  # noqa: E402
from sam_jax import steps  # noqa: E402
from sam_jax import train  # noqa: E402
from sam_jax.data import pipeline  # noqa: E402
from sam_jax.data.sources import get_spec  # noqa: E402
from sam_jax.models import conv as conv_module  # noqa: E402
from sam_jax.models import MODELS, get_model  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = ("sam_vs_sgd", "sam_vs_optax", "sam_vs_torch", "input_pipeline", "memory",
         "compile_time", "m_sharpness", "conv_weight_grad")
# Not run by default: on CPU it costs several SAM steps per round.
EXTRA_CASES = ("m_sharpness_sequential", "conv_vs_torch")
DATASET = "cifar10"
CIFAR10_TRAIN_EXAMPLES = 50_000  # sizes the LR schedule and the pipeline's split
PIPELINE_AUGMENTATION = "cutout"  # basic (crop + flip) then cutout
# m-sharpness case: m = per-device batch / this.
GROUPS_PER_DEVICE = 8


@dataclasses.dataclass(frozen=True)
class Setup:
    """A model and a global batch size that workloads share."""
    model_name: str
    batch_size: int

    @property
    def label(self) -> str:
        return f"{self.model_name} batch {self.batch_size}"


@dataclasses.dataclass(frozen=True)
class Settings:
    main: Setup  # every case
    large: Setup  # sam_vs_sgd and memory, too
    pipeline_examples: int
    pipeline_batches_per_call: int
    conv_channels: int  # conv_weight_grad: a 3x3 layer, this many in and out, 32x32
    # XLA compile options of every step (None: XLA's defaults, what users get).
    compiler_options: Optional[dict] = None


FULL = Settings(main=Setup("wrn16_4", 128), large=Setup("wrn28_10", 16),
                pipeline_examples=CIFAR10_TRAIN_EXAMPLES, pipeline_batches_per_call=20,
                conv_channels=64)
# The smoke test's: its numbers only show that every case runs. Backend
# optimisation level 0 halves XLA:CPU's compile time, which dominates it.
QUICK = Settings(main=Setup("wrn10_1", 16), large=Setup("wrn10_2", 8),
                 pipeline_examples=256, pipeline_batches_per_call=4, conv_channels=64,
                 compiler_options={"xla_backend_optimization_level": 0})


# ------------------------------------------------------------------ configs

def load_config(method: str):
    """configs/cifar_wrn.py for CIFAR-10, basic augmentation, 200 epochs."""
    path = os.path.join(REPO, "configs", "cifar_wrn.py")
    spec = importlib.util.spec_from_file_location("cifar_wrn", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(f"{DATASET},basic,200,{method}")


def setup_config(setup: Setup, method: str, examples_per_perturbation=None,
                 group_map: str = "vmap"):
    config = load_config(method)
    config.model.name = setup.model_name
    config.batch_size = setup.batch_size
    config.sam.examples_per_perturbation = examples_per_perturbation
    config.sam.group_map = group_map
    return config


def total_steps(config) -> int:
    return (pipeline.steps_per_epoch(CIFAR10_TRAIN_EXAMPLES, config.batch_size)
            * config.num_epochs)


def random_batch(setup: Setup, seed: int = 0) -> dict:
    spec = get_spec(DATASET)
    rng = np.random.default_rng(seed)
    return {"image": rng.standard_normal(
                (setup.batch_size,) + tuple(spec.image_shape)).astype(np.float32),
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
    model = get_model(config.model.name, spec.num_classes)
    tx = train.make_optimizer(config, total_steps(config))
    state = jax.device_put(train.initial_state(config, model, tx, spec.image_shape),
                           parallel.replicated(mesh))
    batch = parallel.global_batch(mesh, batch_numpy)
    key = jax.random.PRNGKey(config.seed)
    start = time.perf_counter()
    step = parallel.shard_train_step(
        train.train_step_from_config(config, model, tx, mesh.size), mesh)
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
    model = get_model(config.model.name, spec.num_classes)
    base_tx = train.make_optimizer(config, total_steps(config))
    init, train_step = optax_contrib_sam_train_step(
        model, base_tx, rho=config.sam.rho, weight_decay=config.optimizer.weight_decay)
    # Same initial weights as sam_jax's side.
    reference = train.initial_state(config, model, base_tx, spec.image_shape)
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


class PipelineWorkload:
    """`batches_per_call` batches of the project's in-memory training pipeline.

    Each call reads a new stretch of steps from a fresh dataset and consumes it
    to the end, so no prefetching thread works while other workloads are timed;
    building the dataset and its first batch (start-up) are not timed.
    """

    def __init__(self, num_examples: int, batch_size: int, batches_per_call: int):
        spec = get_spec(DATASET)
        rng = np.random.default_rng(0)
        self.images = rng.integers(0, 256, (num_examples,) + tuple(spec.image_shape),
                                   dtype=np.uint8)
        self.labels = rng.integers(0, spec.num_classes, num_examples).astype(np.int32)
        self.spec = spec
        self.batch_size = batch_size
        self.batches_per_call = batches_per_call
        self.examples_per_call = batch_size * batches_per_call
        self.calls = 0

    def __call__(self) -> float:
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


class TorchSamWorkload:
    """One step of the PyTorch two-step SAM (davda54/sam) per call."""

    def __init__(self, config, batch_numpy, num_threads: int):
        import torch  # imported here: torch is an optional dependency
        import torch_sam_reference as reference
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


def time_round_robin(workloads: dict, repeats: int, warmup: int, log) -> dict:
    """name -> seconds of each timed call; one call of each workload per round."""
    names = list(workloads)
    for _ in range(warmup):
        for name in names:
            workloads[name]()
    seconds = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)  # who goes first rotates
        for name in names[shift:] + names[:shift]:
            seconds[name].append(workloads[name]())
        log(f"    round {round_index + 1}/{repeats}: " + ", ".join(
            f"{name} {seconds[name][-1]:.3f} s" for name in names))
    return seconds


def summarise(seconds: list, examples_per_call: int) -> dict:
    median = statistics.median(seconds)
    return {"seconds": seconds, "median_s": median,
            "examples_per_call": examples_per_call,
            "images_per_s": examples_per_call / median}


def round_ratio_range(numerator: dict, denominator: dict, throughput: bool) -> list:
    """[min, max] over rounds of the ratio from one round's pair of calls: the
    spread a single side-by-side measurement has on this machine."""
    ratios = []
    for a, b in zip(numerator["seconds"], denominator["seconds"]):
        ratios.append((numerator["examples_per_call"] / a)
                      / (denominator["examples_per_call"] / b) if throughput else a / b)
    return [min(ratios), max(ratios)]


# -------------------------------------------------------------------- cases

def case_row(case: str, setup: Setup, measure: str, numerator: float,
             denominator: float, target: Optional[tuple] = None, **details) -> dict:
    """One ratio and its target ("<=" or ">=", bound); target None: reported only."""
    ratio = numerator / denominator
    passed = None
    if target is not None:
        op, bound = target
        passed = ratio <= bound if op == "<=" else ratio >= bound
    return {"case": case, "setup": setup.label, "measure": measure,
            "numerator": numerator, "denominator": denominator, "ratio": ratio,
            "target": None if target is None else f"{target[0]} {target[1]}",
            "passed": passed, **details}


def skipped_row(case: str, setup: Setup, measure: str, reason: str) -> dict:
    return {"case": case, "setup": setup.label, "measure": measure, "ratio": None,
            "target": None, "passed": None, "skipped": reason}


def memory_stats(compiled) -> dict:
    """XLA's buffer assignment of a compiled step, in bytes.

    peak = arguments + outputs - outputs aliased to (donated) arguments + temp,
    the most the step holds at once. XLA's own `peak_memory_in_bytes` is kept
    for the record only: on CPU it leaves out the temp buffers.
    """
    stats = compiled.memory_analysis()
    out = {name: int(getattr(stats, f"{name}_size_in_bytes"))
           for name in ("argument", "output", "alias", "temp")}
    out["peak"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
    out["xla_peak_memory"] = int(getattr(stats, "peak_memory_in_bytes", 0) or 0)
    return out


def time_compiles(config_by_name: dict, mesh, batch_numpy, repeats: int,
                  compiler_options: Optional[dict]) -> dict:
    """name -> seconds of each fresh trace + lower + compile, interleaved."""
    names = list(config_by_name)
    seconds = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            step = compile_sam_jax_step(config_by_name[name], mesh, batch_numpy,
                                        compiler_options)
            seconds[name].append(step.compile_seconds)
    return seconds


def run_setup(setup: Setup, wanted: set, settings: Settings, mesh, repeats: int,
              warmup: int, num_threads: int, log) -> tuple[dict, dict, dict]:
    """Builds and times the workloads `wanted` of one setup.

    Returns (timings name -> summary, compiled name -> CompiledStep, notes).
    """
    batch_numpy = random_batch(setup)
    batch = parallel.global_batch(mesh, batch_numpy)
    per_device_batch = setup.batch_size // mesh.size
    compiled, workloads, notes = {}, {}, {}
    m = per_device_batch // GROUPS_PER_DEVICE
    configs = {"sam": setup_config(setup, "sam"), "sgd": setup_config(setup, "sgd"),
               "sam_m_div8": setup_config(setup, "sam", m),
               "sam_m_div8_sequential": setup_config(setup, "sam", m, "sequential")}
    for name in configs:
        if name in wanted or f"compiled_{name}" in wanted:
            log(f"  compiling {name} ({setup.label})")
            compiled[name] = compile_sam_jax_step(configs[name], mesh, batch_numpy,
                                                  settings.compiler_options)
            if name in wanted:
                workloads[name] = JaxStepWorkload(compiled[name], setup.batch_size,
                                                  sam_jax_state_is_finite)
    if "optax_sam" in wanted or "compiled_optax_sam" in wanted:
        log(f"  compiling optax_sam ({setup.label})")
        compiled["optax_sam"] = compile_optax_contrib_sam_step(
            configs["sam"], batch, settings.compiler_options)
    if "optax_sam" in wanted:
        workloads["optax_sam"] = JaxStepWorkload(compiled["optax_sam"],
                                                 setup.batch_size, optax_state_is_finite)
    if "torch_sam" in wanted:
        try:
            workloads["torch_sam"] = TorchSamWorkload(configs["sam"], batch_numpy,
                                                      num_threads)
            notes["torch_threads"] = workloads["torch_sam"].torch.get_num_threads()
            notes["torch_parameters"] = workloads["torch_sam"].parameter_count
        except ImportError as error:
            notes["torch_skipped"] = (f"torch is not importable ({error}); "
                                      "pip install torch to run this case")
            log(f"  skipping torch_sam: {notes['torch_skipped']}")
    if "input_pipeline" in wanted:
        workloads["input_pipeline"] = PipelineWorkload(
            settings.pipeline_examples, setup.batch_size,
            settings.pipeline_batches_per_call)
    if "conv_weight_grad" in wanted:
        for name, conv_fn in (("conv_wgrad_sam_jax", conv_module.conv_general_dilated),
                              ("conv_wgrad_lax", jax.lax.conv_general_dilated)):
            workloads[name] = ConvWeightGradWorkload(conv_fn, setup.batch_size,
                                                     settings.conv_channels)
        notes["conv_weight_grad_max_abs_difference"] = float(jnp.max(jnp.abs(
            workloads["conv_wgrad_sam_jax"].result - workloads["conv_wgrad_lax"].result)))
    if "conv_vs_torch" in wanted:
        try:
            workloads.update({
                f"conv_{'fwdbwd' if backward else 'fwd'}_{framework}": ConvLayerWorkload(
                    framework, backward, setup.batch_size, settings.conv_channels,
                    num_threads)
                for framework in ("jax", "torch") for backward in (False, True)})
        except ImportError as error:  # none of the four is timed
            notes["conv_torch_skipped"] = f"torch is not importable ({error})"
    if "compile_time" in wanted:
        log(f"  timing {repeats} fresh compiles of sam and sgd ({setup.label})")
        compile_seconds = time_compiles({"sam": configs["sam"], "sgd": configs["sgd"]},
                                        mesh, batch_numpy, repeats,
                                        settings.compiler_options)
        notes["compile_seconds"] = compile_seconds
    timings = {}
    if workloads:
        log(f"  timing {', '.join(workloads)} ({setup.label}): {warmup} warm-up + "
            f"{repeats} rounds")
        seconds = time_round_robin(workloads, repeats, warmup, log)
        for name, workload in workloads.items():
            timings[name] = summarise(seconds[name], workload.examples_per_call)
            timings[name]["all_steps_finite"] = workload.finite()
    return timings, compiled, notes


def wanted_workloads(cases: list) -> dict:
    """'main' / 'large' -> names of the workloads (or compiled steps) needed."""
    wanted = {"main": set(), "large": set()}
    for case in cases:
        if case == "sam_vs_sgd":
            wanted["main"] |= {"sam", "sgd"}
            wanted["large"] |= {"sam", "sgd"}
        elif case == "sam_vs_optax":
            wanted["main"] |= {"sam", "optax_sam"}
        elif case == "sam_vs_torch":
            wanted["main"] |= {"sam", "torch_sam"}
        elif case == "input_pipeline":
            wanted["main"] |= {"sam", "input_pipeline"}
        elif case == "memory":
            for setup in ("main", "large"):
                wanted[setup] |= {"compiled_sam", "compiled_sgd", "compiled_optax_sam"}
        elif case == "compile_time":
            wanted["main"] |= {"compile_time"}
        elif case == "m_sharpness":
            wanted["main"] |= {"sam", "sam_m_div8"}
        elif case == "m_sharpness_sequential":
            wanted["main"] |= {"sam", "sam_m_div8_sequential"}
        elif case == "conv_weight_grad":
            wanted["main"] |= {"conv_weight_grad"}
        elif case == "conv_vs_torch":
            wanted["main"] |= {"conv_vs_torch"}
    return wanted


def case_rows(case: str, settings: Settings, timings: dict, compiled: dict,
              notes: dict, mesh) -> list:
    """The rows of one case from what run_setup measured."""
    rows = []
    main = settings.main

    def time_ratio(key, measure, numerator, denominator, target=None):
        a, b = timings[key][numerator], timings[key][denominator]
        return case_row(case, getattr(settings, key), measure, a["median_s"],
                        b["median_s"], target, unit="s",
                        round_ratios=round_ratio_range(a, b, throughput=False))

    def throughput_ratio(measure, numerator, denominator, target, **details):
        a, b = timings["main"][numerator], timings["main"][denominator]
        return case_row(case, main, measure, a["images_per_s"], b["images_per_s"],
                        target, unit="images/s",
                        round_ratios=round_ratio_range(a, b, throughput=True), **details)

    if case == "sam_vs_sgd":
        for key in ("main", "large"):
            rows.append(time_ratio(key, "SAM step s / SGD step s", "sam", "sgd",
                                   ("<=", 2.0)))
    elif case == "sam_vs_optax":
        rows.append(time_ratio("main", "sam_jax SAM step s / optax.contrib.sam step s",
                               "sam", "optax_sam", ("<=", 1.0)))
    elif case == "sam_vs_torch":
        measure = "sam_jax SAM images/s / PyTorch SAM images/s"
        if "torch_sam" not in timings["main"]:
            rows.append(skipped_row(case, main, measure, notes["main"]["torch_skipped"]))
        else:
            rows.append(throughput_ratio(measure, "sam", "torch_sam", (">=", 1.0),
                                         torch_threads=notes["main"]["torch_threads"]))
    elif case == "input_pipeline":
        rows.append(throughput_ratio(
            f"pipeline ({PIPELINE_AUGMENTATION}) images/s / SAM step images/s",
            "input_pipeline", "sam", (">=", 3.0)))
    elif case == "memory":
        for key in ("main", "large"):
            setup = getattr(settings, key)
            sgd_memory = memory_stats(compiled[key]["sgd"].compiled)
            param_bytes = compiled[key]["sam"].parameter_bytes
            # optax.contrib.sam's step, for reference: what XLA makes of the
            # same two passes written the plain way.
            for name, target in (("sam", ("<=", 1.1)), ("optax_sam", None)):
                sam_memory = memory_stats(compiled[key][name].compiled)
                label = "SAM" if name == "sam" else "optax.contrib.sam"
                rows.append(case_row(
                    case, setup, f"({label} peak - SGD peak) / parameter bytes",
                    sam_memory["peak"] - sgd_memory["peak"], param_bytes, target,
                    unit="bytes", sam=sam_memory, sgd=sgd_memory))
    elif case == "compile_time":
        seconds = notes["main"]["compile_seconds"]
        rows.append(case_row(
            case, main, "SAM compile s / SGD compile s",
            statistics.median(seconds["sam"]), statistics.median(seconds["sgd"]),
            unit="s", seconds=seconds))
    elif case == "conv_weight_grad":
        a, b = timings["main"]["conv_wgrad_sam_jax"], timings["main"]["conv_wgrad_lax"]
        channels = settings.conv_channels
        rows.append(case_row(
            case, main, f"3x3 conv {channels}->{channels} at 32x32, weight gradient s: "
            "sam_jax / lax", a["median_s"], b["median_s"], unit="s",
            round_ratios=round_ratio_range(a, b, throughput=False),
            max_abs_difference=notes["main"]["conv_weight_grad_max_abs_difference"]))
    elif case == "conv_vs_torch":
        channels = settings.conv_channels
        for pass_name, label in (("fwd", "forward"),
                                 ("fwdbwd", "forward + input and weight gradients")):
            measure = (f"3x3 conv {channels}->{channels} at 32x32, {label} s: "
                       "sam_jax / torch")
            if "conv_torch_skipped" in notes["main"]:
                rows.append(skipped_row(case, main, measure,
                                        notes["main"]["conv_torch_skipped"]))
            else:
                rows.append(time_ratio("main", measure, f"conv_{pass_name}_jax",
                                       f"conv_{pass_name}_torch"))
    elif case in ("m_sharpness", "m_sharpness_sequential"):
        per_device_batch = main.batch_size // mesh.size
        m = per_device_batch // GROUPS_PER_DEVICE
        name, group_map = (("sam_m_div8", "vmap") if case == "m_sharpness" else
                           ("sam_m_div8_sequential", "sequential"))
        rows.append(time_ratio(
            "main", f"SAM step s, m = {m} (group_map {group_map}) / "
            f"m = {per_device_batch}", name, "sam"))
    return rows


# ------------------------------------------------------------------ reports

def machine_info(num_threads: int) -> dict:
    cpu_model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu_model = next(line.split(":", 1)[1].strip() for line in f
                             if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"nproc": os.cpu_count(), "threads_available": num_threads,
            "cpu_model": cpu_model, "platform": platform.platform(),
            "jax_devices": [str(d) for d in jax.devices()],
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE")
                                * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def versions() -> dict:
    import flax
    import jaxlib
    out = {"python": platform.python_version(), "jax": jax.__version__,
           "jaxlib": jaxlib.__version__,
           "flax": flax.__version__, "optax": optax.__version__, "numpy": np.__version__}
    try:
        import tensorflow as tf
        out["tensorflow"] = tf.__version__
    except ImportError:
        pass
    try:
        import torch
        out["torch"] = torch.__version__
    except ImportError:
        out["torch"] = None
    return out


def format_ratio(row: dict) -> str:
    return "skipped" if row["ratio"] is None else f"{row['ratio']:.3f}"


def format_side(value: float, unit: str) -> str:
    if unit == "bytes":
        return f"{value / 2**20:.1f} MiB"
    if unit == "images/s":
        return f"{value:.1f} images/s"
    return f"{value:.3f} s"


def markdown_table(rows: list) -> str:
    lines = ["| case | setup | measure | numerator | denominator | ratio | "
             "per-round ratios | target | pass |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if row["ratio"] is None:
            sides = ["", ""]
        else:
            sides = [format_side(row[k], row["unit"]) for k in ("numerator", "denominator")]
        passed = {True: "pass", False: "FAIL", None: "-"}[row["passed"]]
        if row.get("skipped"):
            passed = f"skipped: {row['skipped']}"
        spread = ("{:.3f}-{:.3f}".format(*row["round_ratios"])
                  if row.get("round_ratios") else "")
        lines.append(f"| {row['case']} | {row['setup']} | {row['measure']} | "
                     f"{sides[0]} | {sides[1]} | {format_ratio(row)} | {spread} | "
                     f"{row['target'] or 'none set'} | {passed} |")
    return "\n".join(lines)


def timings_table(timings: dict) -> str:
    lines = ["| setup | workload | median s | images/s | timed s (each round) |",
             "|---|---|---|---|---|"]
    for setup, by_name in timings.items():
        for name, summary in by_name.items():
            each = ", ".join(f"{s:.3f}" for s in summary["seconds"])
            lines.append(f"| {setup} | {name} | {summary['median_s']:.3f} | "
                         f"{summary['images_per_s']:.1f} | {each} |")
    return "\n".join(lines)


def markdown_report(report: dict) -> str:
    machine, load = report["machine"], report["load_average"]
    version_text = ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v)
    return "\n".join([
        "# Benchmark results",
        "",
        f"Generated by `{report['command']}` on {report['finished_utc']} UTC.",
        "",
        f"Machine: {machine['cpu_model']}, {machine['nproc']} cores "
        f"({machine['threads_available']} usable; torch threads = that), "
        f"{machine['memory_gib']} GiB, JAX devices {', '.join(machine['jax_devices'])}.",
        f"Load average (1, 5, 15 min) at start {load['start']}, at end {load['end']}.",
        f"Versions: {version_text}.",
        f"Each time is the median of {report['settings']['repeats']} interleaved rounds "
        f"after {report['settings']['warmup']} warm-up call(s).",
        "",
        markdown_table(report["cases"]),
        "",
        "## Timed workloads",
        "",
        timings_table(report["timings"]),
        "",
    ])


# --------------------------------------------------------------------- main

def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"comma-separated subset of: {', '.join(CASES)} "
                             f"(default: all of them); also {', '.join(EXTRA_CASES)}")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed rounds per workload (default 5; 2 with --quick)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed calls of each workload before timing")
    parser.add_argument("--quick", action="store_true",
                        help="tiny models and batches (the smoke test)")
    parser.add_argument("--main", default=None, metavar="MODEL:BATCH",
                        help="the setup of every case (default wrn16_4:128; "
                             "wrn10_1:16 with --quick)")
    parser.add_argument("--large", default=None, metavar="MODEL:BATCH",
                        help="the second setup of sam_vs_sgd and memory (default "
                             "wrn28_10:16; wrn10_2:8 with --quick)")
    parser.add_argument("--json_out", default=None, help="write the results here")
    parser.add_argument("--md_out", default=None, help="write a markdown report here")
    args = parser.parse_args(argv)
    args.cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in args.cases if c not in CASES + EXTRA_CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; allowed: "
                     f"{', '.join(CASES + EXTRA_CASES)}")
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    settings = QUICK if args.quick else FULL
    for key in ("main", "large"):
        value = getattr(args, key)
        if value is not None:
            model_name, _, batch_size = value.partition(":")
            if not batch_size.isdigit():
                parser.error(f"--{key}={value!r}: expected MODEL:BATCH")
            settings = dataclasses.replace(settings, **{key: Setup(model_name,
                                                                   int(batch_size))})
    for key in ("main", "large"):
        check_setup(parser, key, getattr(settings, key), args.cases)
    args.settings = settings
    return args


def check_setup(parser, key: str, setup: Setup, cases: list) -> None:
    """Rejects, before anything is built, a setup the chosen cases can not run."""
    flag = f"--{key}={setup.model_name}:{setup.batch_size}"
    if setup.model_name not in MODELS:
        parser.error(f"{flag}: unknown model {setup.model_name!r}; allowed: "
                     f"{', '.join(sorted(MODELS))}")
    devices = jax.device_count()
    if setup.batch_size <= 0 or setup.batch_size % devices:
        parser.error(f"{flag}: the batch must be a positive multiple of the device "
                     f"count {devices}")
    if key != "main":
        return
    per_device_batch = setup.batch_size // devices
    if ({"m_sharpness", "m_sharpness_sequential"} & set(cases)
            and per_device_batch % GROUPS_PER_DEVICE):
        parser.error(f"{flag}: m-sharpness splits the per-device batch "
                     f"{per_device_batch} into {GROUPS_PER_DEVICE} groups; it must be "
                     f"a multiple of {GROUPS_PER_DEVICE}")
    if ({"sam_vs_torch"} & set(cases)
            and not re.fullmatch(r"wrn\d+_\d+", setup.model_name)):
        parser.error(f"{flag}: sam_vs_torch needs a WideResNet (wrnDEPTH_WIDTH, as in "
                     "scripts/torch_sam_reference.py)")


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    settings = args.settings
    started = time.perf_counter()
    log = lambda message: print(f"[{time.perf_counter() - started:7.1f} s] {message}",
                                flush=True)
    load_start = [round(x, 2) for x in os.getloadavg()]
    # XLA's CPU client runs one thread per usable core; torch gets as many.
    num_threads = len(os.sched_getaffinity(0))
    mesh = parallel.make_mesh()
    wanted = wanted_workloads(args.cases)
    timings, compiled, notes = {}, {}, {}
    for key in ("main", "large"):
        if wanted[key]:
            setup = getattr(settings, key)
            log(f"setup {key}: {setup.label}")
            timings[key], compiled[key], notes[key] = run_setup(
                setup, wanted[key], settings, mesh, args.repeats, args.warmup,
                num_threads, log)
    rows = [row for case in args.cases
            for row in case_rows(case, settings, timings, compiled, notes, mesh)]
    report = {
        "command": " ".join(["python", "scripts/benchmark.py"] + argv),
        "finished_utc": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M"),
        "machine": machine_info(num_threads),
        "load_average": {"start": load_start,
                         "end": [round(x, 2) for x in os.getloadavg()]},
        "versions": versions(),
        "settings": {"repeats": args.repeats, "warmup": args.warmup, "quick": args.quick,
                     "cases": args.cases, "main": dataclasses.asdict(settings.main),
                     "large": dataclasses.asdict(settings.large),
                     "pipeline_examples": settings.pipeline_examples,
                     "pipeline_batches_per_call": settings.pipeline_batches_per_call,
                     "pipeline_augmentation": PIPELINE_AUGMENTATION,
                     "compiler_options": settings.compiler_options},
        "cases": rows,
        "timings": {getattr(settings, key).label: by_name
                    for key, by_name in timings.items() if by_name},
        "notes": {getattr(settings, key).label: by_key
                  for key, by_key in notes.items() if by_key},
        "seconds_total": time.perf_counter() - started,
    }
    print()
    print(markdown_table(rows))
    if args.json_out:
        os.makedirs(os.path.dirname(os.path.abspath(args.json_out)), exist_ok=True)
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=2)
    if args.md_out:
        os.makedirs(os.path.dirname(os.path.abspath(args.md_out)), exist_ok=True)
        with open(args.md_out, "w") as f:
            f.write(markdown_report(report))
    return report


if __name__ == "__main__":
    main()
