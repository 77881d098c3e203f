"""The benchmark's cases: what each needs timed, and the ratios it reports.

A case names the workloads it needs in each setup ("main": every case;
"large": a second, bigger model) and turns what was measured into rows (see
harness.case_row). Workloads are built and timed once per setup, so cases
that share one (most share the SAM step) share its timings.
"""

import dataclasses
import statistics
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from sam_jax import methods as methods_lib
from sam_jax import parallel
from sam_jax.collectives import psum_in_device_order
from sam_jax.benchmark import harness
from sam_jax.benchmark import workloads as wl
from sam_jax.models import conv as conv_module

# m-sharpness case: m = per-device batch / this.
GROUPS_PER_DEVICE = 8
# grad_accum case: K microbatches per device and step; every K with the same
# m = per-device batch / the largest K, so that each K is a valid config.
ACCUMULATION_STEPS = (1, 2, 4)
# utilization case: the chip's peak FLOP/s it divides by, unless
# --peak_flops: an H200's dense bf16 peak (989 TFLOP/s).
H200_PEAK_BF16_FLOPS = 989e12
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Settings:
    main: wl.Setup  # every case
    large: wl.Setup  # sam_vs_sgd and memory, too
    pipeline_examples: int
    pipeline_batches_per_call: int
    conv_channels: int  # conv_weight_grad: a 3x3 layer, this many in and out, 32x32
    # XLA compile options of every step (None: XLA's defaults, what users get).
    compiler_options: Optional[dict] = None
    # The methods case: these sam_jax.methods (all by default).
    methods: tuple = tuple(methods_lib.METHODS)
    # Compute dtype of every step (config.dtype); the bf16 and utilization
    # cases also build the other one.
    dtype: str = "float32"
    peak_flops: float = H200_PEAK_BF16_FLOPS  # the utilization case's denominator
    # cpu_vs_torch: (setup, image size, channels, the smaller m) per model: the
    # trainer's SGD and SAM steps (m = the batch, and the smaller m) against
    # PyTorch's, whatever --main is.
    cpu_vs_torch: tuple = ((wl.Setup("wrn16_4", 64), 32, 3, 32),
                           (wl.Setup("wrn10_1", 128), 16, 1, 32))
    # cpu_flags: XLA:CPU compile options tried on the first model's SAM step
    # and the second's SAM step at the smaller m, against XLA's defaults.
    cpu_flag_sets: tuple = (
        ("oneDNN custom calls", {"xla_cpu_experimental_onednn_custom_call": True}),
        ("oneDNN", {"xla_cpu_use_onednn": True}),
        ("XNNPACK", {"xla_cpu_use_xnnpack": True}))


FULL = Settings(main=wl.Setup("wrn16_4", 128), large=wl.Setup("wrn28_10", 16),
                pipeline_examples=wl.CIFAR10_TRAIN_EXAMPLES, pipeline_batches_per_call=20,
                conv_channels=64)
# The smoke test's: its numbers only show that every case runs. Backend
# optimisation level 0 halves XLA:CPU's compile time, which dominates it.
QUICK = Settings(main=wl.Setup("wrn10_1", 16), large=wl.Setup("wrn10_2", 8),
                 pipeline_examples=256, pipeline_batches_per_call=4, conv_channels=64,
                 compiler_options={"xla_backend_optimization_level": 0},
                 cpu_vs_torch=((wl.Setup("wrn10_1", 16), 8, 1, 8),))


@dataclasses.dataclass
class Measured:
    """What run_setup measured, per setup key ("main", "large")."""
    settings: Settings
    mesh: object
    timings: dict  # key -> workload name -> harness.summarise(...)
    compiled: dict  # key -> step name -> workloads.CompiledStep
    notes: dict  # key -> note name -> value

    def setup(self, key: str) -> wl.Setup:
        return getattr(self.settings, key)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    # setup key -> workload names ("compiled_X": compiled, not timed), or a
    # function of the Settings that returns it
    needs: object
    rows: Callable[["Case", Measured], list]
    default: bool = True  # in the default set (the others cost much on CPU)

    def needs_for(self, settings: Settings) -> dict:
        return self.needs(settings) if callable(self.needs) else self.needs


# ------------------------------------------------------------------ building

METHOD_PREFIX = "method_"
ACCUMULATION_PREFIX = "sam_accum"


def in_dtype(step: str, dtype: str, settings: Settings) -> str:
    """The name of step "sam" or "sgd" computing in `dtype`: the step itself
    in the settings' dtype (so nothing is compiled twice), else "sam_bfloat16"."""
    return step if dtype == settings.dtype else f"{step}_{dtype}"


def step_configs(setup: wl.Setup, mesh, settings: Settings) -> dict:
    """Every sam_jax step a case may time, by name."""
    per_device_batch = setup.batch_size // mesh.size
    m = per_device_batch // GROUPS_PER_DEVICE
    config = lambda *args, **overrides: wl.setup_config(
        setup, *args, **{"dtype": settings.dtype, **overrides})
    configs = {"sam": config("sam"), "sgd": config("sgd"),
               "sam_m_div8": config("sam", m, "vmap"),
               "sam_m_div8_sequential": config("sam", m, "sequential")}
    # SGD is every method's denominator: timed even when --methods omits it.
    configs.update({METHOD_PREFIX + name: config(name)
                    for name in (*settings.methods, "sgd")})
    for dtype in DTYPES:
        for step in ("sam", "sgd"):
            configs.setdefault(in_dtype(step, dtype, settings), config(step, dtype=dtype))
    accumulation_m = max(per_device_batch // max(ACCUMULATION_STEPS), 1)
    configs.update({f"{ACCUMULATION_PREFIX}{k}": config("sam", accumulation_m,
                                                        grad_accum_steps=k)
                    for k in ACCUMULATION_STEPS})
    return configs


def time_compiles(config_by_name: dict, mesh, batch_numpy, repeats: int,
                  compiler_options: Optional[dict]) -> dict:
    """name -> seconds of each fresh trace + lower + compile, interleaved."""
    names = list(config_by_name)
    seconds = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            step = wl.compile_sam_jax_step(config_by_name[name], mesh, batch_numpy,
                                           compiler_options)
            seconds[name].append(step.compile_seconds)
    return seconds


def run_setup(setup: wl.Setup, wanted: set, settings: Settings, mesh, repeats: int,
              warmup: int, num_threads: int, log) -> tuple[dict, dict, dict]:
    """Builds and times the workloads `wanted` of one setup.

    Returns (timings name -> summary, compiled name -> CompiledStep, notes).
    """
    batch_numpy = wl.random_batch(setup)
    batch = parallel.global_batch(mesh, batch_numpy)
    compiled, workloads, notes = {}, {}, {}
    configs = step_configs(setup, mesh, settings)
    for name in configs:
        if name in wanted or f"compiled_{name}" in wanted:
            log(f"  compiling {name} ({setup.label})")
            compiled[name] = wl.compile_sam_jax_step(configs[name], mesh, batch_numpy,
                                                     settings.compiler_options)
            if name in wanted:
                workloads[name] = wl.JaxStepWorkload(compiled[name], setup.batch_size,
                                                     wl.sam_jax_state_is_finite)
    if "optax_sam" in wanted or "compiled_optax_sam" in wanted:
        log(f"  compiling optax_sam ({setup.label})")
        compiled["optax_sam"] = wl.compile_optax_contrib_sam_step(
            configs["sam"], batch, settings.compiler_options)
    if "optax_sam" in wanted:
        workloads["optax_sam"] = wl.JaxStepWorkload(
            compiled["optax_sam"], setup.batch_size, wl.optax_state_is_finite)
    if "torch_sam" in wanted:
        try:
            workloads["torch_sam"] = wl.TorchSamWorkload(configs["sam"], batch_numpy,
                                                         num_threads)
            notes["torch_threads"] = workloads["torch_sam"].torch.get_num_threads()
            notes["torch_parameters"] = workloads["torch_sam"].parameter_count
        except ImportError as error:
            notes["torch_skipped"] = (f"torch is not importable ({error}); "
                                      "pip install torch to run this case")
            log(f"  skipping torch_sam: {notes['torch_skipped']}")
    if "input_pipeline" in wanted:
        workloads["input_pipeline"] = wl.PipelineWorkload(
            settings.pipeline_examples, setup.batch_size,
            settings.pipeline_batches_per_call)
    if "device_pipeline" in wanted:
        workloads["device_pipeline"] = wl.DevicePipelineWorkload(
            mesh, settings.pipeline_examples, setup.batch_size,
            settings.pipeline_batches_per_call)
    if "conv_weight_grad" in wanted:
        for name, conv_fn in (("conv_wgrad_sam_jax", conv_module.conv_general_dilated),
                              ("conv_wgrad_lax", jax.lax.conv_general_dilated)):
            workloads[name] = wl.ConvWeightGradWorkload(conv_fn, setup.batch_size,
                                                        settings.conv_channels)
        notes["conv_weight_grad_max_abs_difference"] = float(jnp.max(jnp.abs(
            workloads["conv_wgrad_sam_jax"].result - workloads["conv_wgrad_lax"].result)))
    if "conv_vs_torch" in wanted:
        try:
            workloads.update({
                f"conv_{'fwdbwd' if backward else 'fwd'}_{framework}":
                    wl.ConvLayerWorkload(framework, backward, setup.batch_size,
                                         settings.conv_channels, num_threads)
                for framework in ("jax", "torch") for backward in (False, True)})
        except ImportError as error:  # none of the four is timed
            notes["conv_torch_skipped"] = f"torch is not importable ({error})"
    if "cpu_vs_torch" in wanted:
        _add_cpu_vs_torch(settings, mesh, num_threads, compiled, workloads, notes, log)
    if "step_profile" in wanted:
        _add_step_profile(settings, mesh, compiled, workloads, log)
    if "cpu_flags" in wanted:
        _add_cpu_flags(settings, mesh, compiled, workloads, log)
    if "device_sums" in wanted:
        params = compiled["sam"].state.params  # its shapes (the case needs "sam")
        for name, mean_fn in (("device_sum_ordered", _ordered_mean),
                              ("device_sum_lax", jax.lax.pmean)):
            workloads[name] = wl.DeviceSumWorkload(mesh, params, mean_fn)
        notes["device_sum_max_abs_difference"] = max(
            float(jnp.max(jnp.abs(a - b))) for a, b in zip(
                jax.tree_util.tree_leaves(workloads["device_sum_ordered"].result),
                jax.tree_util.tree_leaves(workloads["device_sum_lax"].result)))
        notes["devices"] = mesh.size
    if "compile_time" in wanted:
        log(f"  timing {repeats} fresh compiles of sam and sgd ({setup.label})")
        notes["compile_seconds"] = time_compiles(
            {"sam": configs["sam"], "sgd": configs["sgd"]}, mesh, batch_numpy, repeats,
            settings.compiler_options)
    timings = {}
    if workloads:
        log(f"  timing {', '.join(workloads)} ({setup.label}): {warmup} warm-up + "
            f"{repeats} rounds")
        seconds = harness.time_round_robin(workloads, repeats, warmup, log)
        for name, workload in workloads.items():
            timings[name] = harness.summarise(seconds[name], workload.examples_per_call)
            timings[name]["all_steps_finite"] = workload.finite()
        if "cpu_flags" in wanted:  # every step made as many calls from one state
            for label, step, _, _, _ in _flagged_steps(settings):
                default = workloads[_cpu_vs_torch_name(label, "jax", step)].state.params
                for flags_label, _ in settings.cpu_flag_sets:
                    name = f"flags {label} {step} {flags_label}"
                    notes[name] = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
                        jax.tree_util.tree_leaves(workloads[name].state.params),
                        jax.tree_util.tree_leaves(default)))
    return timings, compiled, notes


CPU_VS_TORCH_STEPS = ("sgd", "sam", "sam_small_m")


def cpu_vs_torch_label(setup: wl.Setup, image_size: int, channels: int) -> str:
    return f"{setup.model_name} {image_size}x{image_size}x{channels} batch {setup.batch_size}"


def _cpu_vs_torch_name(label: str, framework: str, step: str) -> str:
    return f"cvt {label} {framework} {step}"


PROFILE_PASSES = ("forward", "input_grad", "param_grad")


def _add_step_profile(settings, mesh, compiled, workloads, log):
    """The passes the trainer's step is made of, and the SAM step at the
    smaller m with its groups vmapped, per settings.cpu_vs_torch model (the
    steps themselves are cpu_vs_torch's)."""
    for setup, image_size, channels, small_m in settings.cpu_vs_torch:
        label = cpu_vs_torch_label(setup, image_size, channels)
        batch_numpy = wl.random_batch(setup, image_shape=(image_size, image_size,
                                                          channels))
        config = wl.setup_config(setup, "sgd")
        for what in PROFILE_PASSES:
            log(f"  compiling {label} {what}")
            workloads[f"prof {label} {what}"] = wl.ModelPassWorkload(config, batch_numpy,
                                                                     what)
        name = f"prof {label} sam_small_m_vmap"
        log(f"  compiling {name}")
        compiled[name] = wl.compile_sam_jax_step(
            wl.setup_config(setup, "sam", small_m, group_map="vmap"), mesh, batch_numpy,
            settings.compiler_options)
        workloads[name] = wl.JaxStepWorkload(compiled[name], setup.batch_size,
                                             wl.sam_jax_state_is_finite)


def _flagged_steps(settings):
    """(label, step name, setup, its batch, config) of each cpu_flags step."""
    (first, size1, channels1, _), (second, size2, channels2, small_m) = (
        settings.cpu_vs_torch[0], settings.cpu_vs_torch[-1])
    return ((cpu_vs_torch_label(first, size1, channels1), "sam", first,
             (size1, size1, channels1), wl.setup_config(first, "sam")),
            (cpu_vs_torch_label(second, size2, channels2), "sam_small_m", second,
             (size2, size2, channels2), wl.setup_config(second, "sam", small_m)))


def _add_cpu_flags(settings, mesh, compiled, workloads, log):
    """Each flag set's compile of the steps; XLA's defaults are cpu_vs_torch's."""
    for label, step, setup, shape, config in _flagged_steps(settings):
        batch_numpy = wl.random_batch(setup, image_shape=shape)
        for flags_label, options in settings.cpu_flag_sets:
            name = f"flags {label} {step} {flags_label}"
            log(f"  compiling {name}")
            compiled[name] = wl.compile_sam_jax_step(
                config, mesh, batch_numpy, {**(settings.compiler_options or {}), **options})
            workloads[name] = wl.JaxStepWorkload(compiled[name], setup.batch_size,
                                                 wl.sam_jax_state_is_finite)


def _add_cpu_vs_torch(settings, mesh, num_threads, compiled, workloads, notes, log):
    """The trainer's steps and PyTorch's, per settings.cpu_vs_torch model."""
    for setup, image_size, channels, small_m in settings.cpu_vs_torch:
        label = cpu_vs_torch_label(setup, image_size, channels)
        batch_numpy = wl.random_batch(setup, image_shape=(image_size, image_size,
                                                          channels))
        configs = {"sgd": wl.setup_config(setup, "sgd"),
                   "sam": wl.setup_config(setup, "sam"),
                   "sam_small_m": wl.setup_config(setup, "sam", small_m)}
        for step, config in configs.items():
            name = _cpu_vs_torch_name(label, "jax", step)
            log(f"  compiling {name}")
            compiled[name] = wl.compile_sam_jax_step(config, mesh, batch_numpy,
                                                     settings.compiler_options)
            workloads[name] = wl.JaxStepWorkload(compiled[name], setup.batch_size,
                                                 wl.sam_jax_state_is_finite)
            try:
                workloads[_cpu_vs_torch_name(label, "torch", step)] = (
                    wl.TorchStepWorkload(config, batch_numpy, num_threads, step.split("_")[0]))
                notes["torch_threads"] = workloads[
                    _cpu_vs_torch_name(label, "torch", step)].torch.get_num_threads()
            except ImportError as error:
                notes["cpu_vs_torch_skipped"] = (f"torch is not importable ({error}); "
                                                 "pip install torch to run this case")


# --------------------------------------------------------------------- rows

def _time_ratio(case, m: Measured, key, measure, numerator, denominator, target=None,
                **details):
    a, b = m.timings[key][numerator], m.timings[key][denominator]
    return harness.case_row(case.name, m.setup(key).label, measure, a["median_s"],
                            b["median_s"], target, unit="s",
                            round_ratios=harness.round_ratio_range(a, b, throughput=False),
                            **details)


def _throughput_ratio(case, m: Measured, measure, numerator, denominator, target,
                      **details):
    a, b = m.timings["main"][numerator], m.timings["main"][denominator]
    return harness.case_row(case.name, m.setup("main").label, measure,
                            a["images_per_s"], b["images_per_s"], target,
                            unit="images/s",
                            round_ratios=harness.round_ratio_range(a, b, throughput=True),
                            **details)


def _sam_vs_sgd(case, m):
    return [_time_ratio(case, m, key, "SAM step s / SGD step s", "sam", "sgd",
                        ("<=", 2.0)) for key in ("main", "large")]


def _sam_vs_optax(case, m):
    return [_time_ratio(case, m, "main", "sam_jax SAM step s / optax.contrib.sam step s",
                        "sam", "optax_sam", ("<=", 1.0))]


def _sam_vs_torch(case, m):
    measure = "sam_jax SAM images/s / PyTorch SAM images/s"
    if "torch_sam" not in m.timings["main"]:
        return [harness.skipped_row(case.name, m.setup("main").label, measure,
                                    m.notes["main"]["torch_skipped"])]
    return [_throughput_ratio(case, m, measure, "sam", "torch_sam", (">=", 1.0),
                              torch_threads=m.notes["main"]["torch_threads"])]


def _input_pipeline(case, m):
    """The device-resident pipeline (the trainer's for in-memory data) against
    the SAM step, and the tf.data one (AutoAugment's) beside it."""
    aug = wl.PIPELINE_AUGMENTATION
    return [
        _throughput_ratio(case, m, f"device pipeline ({aug}) images/s / SAM step "
                          "images/s", "device_pipeline", "sam", (">=", 3.0)),
        _throughput_ratio(case, m, f"tf.data pipeline ({aug}) images/s / SAM step "
                          "images/s", "input_pipeline", "sam", None),
        _throughput_ratio(case, m, "device pipeline images/s / tf.data pipeline "
                          "images/s", "device_pipeline", "input_pipeline", None),
    ]


def _memory(case, m):
    rows = []
    for key in ("main", "large"):
        compiled = m.compiled[key]
        sgd_memory = harness.memory_stats(compiled["sgd"].compiled)
        param_bytes = compiled["sam"].parameter_bytes
        # optax.contrib.sam's step, for reference: what XLA makes of the same
        # two passes written the plain way.
        for name, target in (("sam", ("<=", 1.1)), ("optax_sam", None)):
            sam_memory = harness.memory_stats(compiled[name].compiled)
            label = "SAM" if name == "sam" else "optax.contrib.sam"
            rows.append(harness.case_row(
                case.name, m.setup(key).label,
                f"({label} peak - SGD peak) / parameter bytes",
                sam_memory["peak"] - sgd_memory["peak"], param_bytes, target,
                unit="bytes", sam=sam_memory, sgd=sgd_memory))
    return rows


def _bf16(case, m):
    """bfloat16 against float32: the SAM step's time and peak memory, and
    SAM / SGD in each dtype."""
    names = {dtype: {step: in_dtype(step, dtype, m.settings) for step in ("sam", "sgd")}
             for dtype in DTYPES}
    bf16, f32 = names["bfloat16"], names["float32"]
    compiled = m.compiled["main"]
    bf16_memory = harness.memory_stats(compiled[bf16["sam"]].compiled)
    f32_memory = harness.memory_stats(compiled[f32["sam"]].compiled)
    rows = [_time_ratio(case, m, "main", "SAM step s, bfloat16 / float32",
                        bf16["sam"], f32["sam"]),
            harness.case_row(case.name, m.setup("main").label,
                             "SAM peak bytes, bfloat16 / float32", bf16_memory["peak"],
                             f32_memory["peak"], unit="bytes", bfloat16=bf16_memory,
                             float32=f32_memory)]
    for dtype in DTYPES:
        rows.append(_time_ratio(case, m, "main", f"SAM step s / SGD step s, {dtype}",
                                names[dtype]["sam"], names[dtype]["sgd"],
                                sam_images_per_s=m.timings["main"][names[dtype]["sam"]][
                                    "images_per_s"],
                                sgd_images_per_s=m.timings["main"][names[dtype]["sgd"]][
                                    "images_per_s"]))
    return rows


def _utilization(case, m):
    """The SAM step's FLOP/s (XLA's cost analysis of the compiled step over
    its median time) / the chip's peak, in each dtype."""
    rows = []
    for dtype in DTYPES:
        name = in_dtype("sam", dtype, m.settings)
        flops = harness.step_flops(m.compiled["main"][name].compiled)
        timing = m.timings["main"][name]
        rows.append(harness.case_row(
            case.name, m.setup("main").label,
            f"SAM step FLOP/s ({dtype}) / peak FLOP/s", flops / timing["median_s"],
            m.settings.peak_flops, unit="FLOP/s", step_flops=flops,
            median_s=timing["median_s"], images_per_s=timing["images_per_s"]))
    return rows


def _grad_accum(case, m):
    """K microbatches per step against one: peak memory and step time."""
    rows = []
    compiled = m.compiled["main"]
    one = f"{ACCUMULATION_PREFIX}1"
    one_memory = harness.memory_stats(compiled[one].compiled)
    per_device_batch = m.setup("main").batch_size // m.mesh.size
    for k in ACCUMULATION_STEPS[1:]:
        name = f"{ACCUMULATION_PREFIX}{k}"
        memory = harness.memory_stats(compiled[name].compiled)
        label = (f"grad_accum_steps {k} / 1 (m = "
                 f"{max(per_device_batch // max(ACCUMULATION_STEPS), 1)})")
        rows.append(harness.case_row(case.name, m.setup("main").label,
                                     f"SAM peak bytes, {label}", memory["peak"],
                                     one_memory["peak"], unit="bytes",
                                     accumulated=memory, single=one_memory))
        rows.append(_time_ratio(case, m, "main", f"SAM step s, {label}", name, one))
    return rows


def _compile_time(case, m):
    seconds = m.notes["main"]["compile_seconds"]
    return [harness.case_row(
        case.name, m.setup("main").label, "SAM compile s / SGD compile s",
        statistics.median(seconds["sam"]), statistics.median(seconds["sgd"]),
        unit="s", seconds=seconds)]


def _m_sharpness(group_map: str):
    def rows(case, m):
        per_device_batch = m.setup("main").batch_size // m.mesh.size
        name = "sam_m_div8" if group_map == "vmap" else "sam_m_div8_sequential"
        return [_time_ratio(
            case, m, "main", f"SAM step s, m = {per_device_batch // GROUPS_PER_DEVICE} "
            f"(group_map {group_map}) / m = {per_device_batch}", name, "sam")]
    return rows


def _conv_weight_grad(case, m):
    a, b = m.timings["main"]["conv_wgrad_sam_jax"], m.timings["main"]["conv_wgrad_lax"]
    channels = m.settings.conv_channels
    return [harness.case_row(
        case.name, m.setup("main").label,
        f"3x3 conv {channels}->{channels} at 32x32, weight gradient s: sam_jax / lax",
        a["median_s"], b["median_s"], unit="s",
        round_ratios=harness.round_ratio_range(a, b, throughput=False),
        max_abs_difference=m.notes["main"]["conv_weight_grad_max_abs_difference"])]


def _conv_vs_torch(case, m):
    rows = []
    channels = m.settings.conv_channels
    for pass_name, label in (("fwd", "forward"),
                             ("fwdbwd", "forward + input and weight gradients")):
        measure = f"3x3 conv {channels}->{channels} at 32x32, {label} s: sam_jax / torch"
        if "conv_torch_skipped" in m.notes["main"]:
            rows.append(harness.skipped_row(case.name, m.setup("main").label, measure,
                                            m.notes["main"]["conv_torch_skipped"]))
        else:
            rows.append(_time_ratio(case, m, "main", measure, f"conv_{pass_name}_jax",
                                    f"conv_{pass_name}_torch"))
    return rows


def _ordered_mean(tree, axis_name):
    return psum_in_device_order(tree, axis_name, mean=True)


def _device_sums(case, m):
    """The trainer's mean over devices (added in device order, so that a run
    is the same however its devices are spread over processes) against
    lax.pmean's, on a parameter-shaped tree; and what the difference costs per
    SAM step (one such mean of the gradient per step)."""
    timings = m.timings["main"]
    extra = timings["device_sum_ordered"]["median_s"] - timings["device_sum_lax"]["median_s"]
    return [_time_ratio(case, m, "main", "device-order mean s / lax.pmean s",
                        "device_sum_ordered", "device_sum_lax", devices=m.notes["main"]["devices"],
                        max_abs_difference=m.notes["main"]["device_sum_max_abs_difference"]),
            harness.case_row(case.name, m.setup("main").label,
                             "(device-order mean s - lax.pmean s) / SAM step s", extra,
                             timings["sam"]["median_s"], unit="s",
                             devices=m.notes["main"]["devices"])]


def _cpu_vs_torch(case, m):
    """sam_jax's step speed over PyTorch's, per model and step; the WRN-16-4
    SAM step's target is 1.0 (issue 28)."""
    rows = []
    for setup, image_size, channels, small_m in m.settings.cpu_vs_torch:
        label = cpu_vs_torch_label(setup, image_size, channels)
        for step in CPU_VS_TORCH_STEPS:
            what = {"sgd": "SGD", "sam": f"SAM m = {setup.batch_size}",
                    "sam_small_m": f"SAM m = {small_m}"}[step]
            measure = f"{what}: sam_jax images/s / PyTorch images/s"
            jax_name = _cpu_vs_torch_name(label, "jax", step)
            torch_name = _cpu_vs_torch_name(label, "torch", step)
            if torch_name not in m.timings["main"]:
                rows.append(harness.skipped_row(case.name, label, measure,
                                                m.notes["main"]["cpu_vs_torch_skipped"]))
                continue
            a, b = m.timings["main"][jax_name], m.timings["main"][torch_name]
            target = (">=", 1.0) if (setup.model_name, step) == ("wrn16_4", "sam") else None
            rows.append(harness.case_row(
                case.name, label, measure, a["images_per_s"], b["images_per_s"], target,
                unit="images/s",
                round_ratios=harness.round_ratio_range(a, b, throughput=True),
                torch_threads=m.notes["main"].get("torch_threads")))
    return rows


def _step_profile(case, m):
    """Where the SAM step's time goes, by differences of nested workloads: the
    forward pass; + the backward pass to the inputs (input gradients of every
    layer); + the weight gradients (SGD's gradient); + the optimizer and the
    step's bookkeeping (SGD's step); + SAM's ascent and second pass (the SAM
    step at m = the batch); + the groups at the smaller m (unrolled, the
    CPU's default, and vmapped). Each is a share of the SAM step at m = the
    batch."""
    rows = []
    for setup, image_size, channels, small_m in m.settings.cpu_vs_torch:
        label = cpu_vs_torch_label(setup, image_size, channels)
        t = {what: m.timings["main"][f"prof {label} {what}"]["median_s"]
             for what in PROFILE_PASSES}
        t["sgd_step"], t["sam_step"], t["sam_small_m"] = (
            m.timings["main"][_cpu_vs_torch_name(label, "jax", step)]["median_s"]
            for step in CPU_VS_TORCH_STEPS)
        t["sam_small_m_vmap"] = m.timings["main"][f"prof {label} sam_small_m_vmap"][
            "median_s"]
        parts = (
            ("forward pass (training mode)", t["forward"]),
            ("backward pass to the inputs", t["input_grad"] - t["forward"]),
            ("weight gradients", t["param_grad"] - t["input_grad"]),
            ("optimizer and step bookkeeping (SGD step - gradient)",
             t["sgd_step"] - t["param_grad"]),
            ("SAM's ascent and second pass (SAM step - SGD step)",
             t["sam_step"] - t["sgd_step"]),
            (f"groups of m = {small_m}, unrolled (SAM m = {small_m} - SAM)",
             t["sam_small_m"] - t["sam_step"]),
            (f"groups of m = {small_m}, vmapped (SAM m = {small_m} vmap - SAM)",
             t["sam_small_m_vmap"] - t["sam_step"]))
        for measure, seconds in parts:
            rows.append(harness.case_row(case.name, label, f"{measure} - share of the "
                                         "SAM step", seconds, t["sam_step"], unit="s"))
    return rows


def _cpu_flags(case, m):
    """Each flag set's step speed over XLA's defaults' (both timed in every
    round), and how far its weights are from the defaults' after the same
    steps (float reassociation only if small)."""
    rows = []
    for label, step, setup, _, _ in _flagged_steps(m.settings):
        default_name = _cpu_vs_torch_name(label, "jax", step)
        default = m.timings["main"][default_name]
        for flags_label, options in m.settings.cpu_flag_sets:
            flagged = m.timings["main"][f"flags {label} {step} {flags_label}"]
            rows.append(harness.case_row(
                case.name, label, f"{step}, {flags_label} ({', '.join(options)}): "
                "images/s / XLA's defaults' images/s", flagged["images_per_s"],
                default["images_per_s"], unit="images/s",
                round_ratios=harness.round_ratio_range(flagged, default, throughput=True),
                max_abs_weight_difference=m.notes["main"].get(
                    f"flags {label} {step} {flags_label}")))
    return rows


def _methods(case, m):
    """Each method's step time / the sgd method's, with the declared cost."""
    rows = []
    sgd = METHOD_PREFIX + "sgd"
    for name in m.settings.methods:
        workload = METHOD_PREFIX + name
        config = wl.setup_config(m.setup("main"), name)
        evaluations, sequential = methods_lib.get(name).cost(config)
        rows.append(_time_ratio(case, m, "main", f"{name} step s / sgd step s",
                                workload, sgd, method=name,
                                gradient_evaluations=evaluations,
                                sequential_passes=sequential))
    return rows


CASES = {case.name: case for case in [
    # target: SAM step s / SGD step s <= 2.0 (the two-pass floor)
    Case("sam_vs_sgd", {"main": {"sam", "sgd"}, "large": {"sam", "sgd"}}, _sam_vs_sgd),
    Case("sam_vs_optax", {"main": {"sam", "optax_sam"}}, _sam_vs_optax),
    Case("sam_vs_torch", {"main": {"sam", "torch_sam"}}, _sam_vs_torch),
    Case("input_pipeline", {"main": {"sam", "input_pipeline", "device_pipeline"}},
         _input_pipeline),
    Case("memory", {key: {"compiled_sam", "compiled_sgd", "compiled_optax_sam"}
                    for key in ("main", "large")}, _memory),
    Case("compile_time", {"main": {"compile_time"}}, _compile_time),
    Case("m_sharpness", {"main": {"sam", "sam_m_div8"}}, _m_sharpness("vmap")),
    Case("conv_weight_grad", {"main": {"conv_weight_grad"}}, _conv_weight_grad),
    # Not run by default: on CPU they cost several SAM steps per round.
    Case("m_sharpness_sequential", {"main": {"sam", "sam_m_div8_sequential"}},
         _m_sharpness("sequential"), default=False),
    Case("conv_vs_torch", {"main": {"conv_vs_torch"}}, _conv_vs_torch, default=False),
    # The trainer's steps against PyTorch's on the CPU (issue 28): its own
    # models and batches (Settings.cpu_vs_torch), 12 workloads.
    Case("cpu_vs_torch", {"main": {"cpu_vs_torch"}}, _cpu_vs_torch, default=False),
    # XLA:CPU's optional kernels (oneDNN, XNNPACK) on those models' SAM steps.
    Case("cpu_flags", {"main": {"cpu_vs_torch", "cpu_flags"}}, _cpu_flags,
         default=False),
    # Where the step's time goes on those models, by nested workloads.
    Case("step_profile", {"main": {"cpu_vs_torch", "step_profile"}}, _step_profile,
         default=False),
    # The trainer's device-order mean against lax.pmean (needs several devices).
    Case("device_sums", {"main": {"sam", "device_sums"}}, _device_sums, default=False),
    # Every method's step (issue 15's cost table): many compiles, not default.
    Case("methods", lambda settings: {"main": {METHOD_PREFIX + name for name in
                                               set(settings.methods) | {"sgd"}}},
         _methods, default=False),
    # bfloat16 against float32, and the SAM step's share of the chip's peak
    # (meant for accelerators: XLA:CPU emulates much of bf16).
    Case("bf16", lambda settings: {"main": {in_dtype(step, dtype, settings)
                                            for step in ("sam", "sgd")
                                            for dtype in DTYPES}},
         _bf16, default=False),
    Case("utilization", lambda settings: {"main": {in_dtype("sam", dtype, settings)
                                                   for dtype in DTYPES}},
         _utilization, default=False),
    # Gradient accumulation: K = 2, 4 microbatches against 1.
    Case("grad_accum", {"main": {f"{ACCUMULATION_PREFIX}{k}"
                                 for k in ACCUMULATION_STEPS}},
         _grad_accum, default=False),
]}
DEFAULT_CASES = tuple(name for name, case in CASES.items() if case.default)


def wanted_workloads(case_names: list, settings: Settings) -> dict:
    """'main' / 'large' -> names of the workloads (or compiled steps) needed."""
    wanted = {"main": set(), "large": set()}
    for name in case_names:
        for key, needs in CASES[name].needs_for(settings).items():
            wanted[key] |= needs
    return wanted
