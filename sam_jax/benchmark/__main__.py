"""Speed and memory of sam_jax's SAM step, each case a ratio measured side by side.

  python -m sam_jax.benchmark --json_out=experiments/benchmarks/results.json \
      --md_out=experiments/benchmarks/results.md

Cases (--cases picks some; the default set unless named):
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
  cpu_vs_torch    the trainer's SGD and SAM steps (m = the batch and m = 32) /
                  PyTorch's, WRN-16-4 at 32x32 batch 64 and WRN-10-1 at 16x16
                  batch 128, whatever --main is (not default)  WRN-16-4 SAM >= 1.0
  cpu_flags       XLA:CPU's oneDNN, oneDNN custom-call and XNNPACK options on
                  those models' SAM steps (m = 64 and m = 32) / XLA's defaults,
                  with the weights' distance after the same steps (not default)
  step_profile    where the SAM step's time goes on those models: forward,
                  input and weight gradients, optimizer, SAM's second pass,
                  the m = 32 groups unrolled and vmapped, each a share of the
                  SAM step (not default)                                 (none)
  device_sums     the trainer's mean over devices, added in device order, /
                  lax.pmean's, and the difference / the SAM step; needs
                  several devices (not default)                          (none)
  methods         each method's step (sam_jax.methods, or --methods=...) / the
                  sgd method's step, with its declared cost (not default)
  bf16            SAM step time and peak memory, bfloat16 / float32; SAM / SGD
                  step time in each dtype (not default)                  (none)
  utilization     SAM step FLOP/s (XLA's cost analysis / median time) /
                  --peak_flops, in each dtype (not default)              (none)
  grad_accum      SAM step with grad_accum_steps 2 and 4 / with 1: peak memory
                  and time, m = per-device batch / 4 (not default)       (none)

--dtype sets every step's compute dtype (config.dtype); the bf16 and
utilization cases build the other dtype's steps beside them.

How it measures: see harness.py. `--quick` shrinks everything for the smoke
test. Bad flags and setups the chosen cases cannot run stop with one line and
exit code 2 before anything is built or written.
"""

import dataclasses
import datetime
import json
import os
import re
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402  (after the environment is set)

from sam_jax import cli  # noqa: E402
from sam_jax.errors import BadInputError  # noqa: E402

_CASES = flags.DEFINE_list("cases", None, "comma-separated cases (default: the "
                           "default set; see the module docstring)")
_REPEATS = flags.DEFINE_integer("repeats", None, "timed rounds per workload "
                                "(default 5; 2 with --quick)")
_WARMUP = flags.DEFINE_integer("warmup", 1, "untimed calls of each workload before "
                               "timing")
_QUICK = flags.DEFINE_bool("quick", False, "tiny models and batches (the smoke test)")
_MAIN = flags.DEFINE_string("main", None, "MODEL:BATCH, the setup of every case "
                            "(default wrn16_4:128; wrn10_1:16 with --quick)")
_LARGE = flags.DEFINE_string("large", None, "MODEL:BATCH, the second setup of "
                             "sam_vs_sgd and memory (default wrn28_10:16; wrn10_2:8 "
                             "with --quick)")
_METHODS = flags.DEFINE_list("methods", None, "the methods case's methods (default: "
                             "all of sam_jax.methods)")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                           "compute dtype of every step (config.dtype)")
_PEAK_FLOPS = flags.DEFINE_float("peak_flops", 989e12, "the chip's peak FLOP/s, the "
                                 "utilization case's denominator (default: an "
                                 "H200's dense bf16 peak)")
_JSON_OUT = flags.DEFINE_string("json_out", None, "write the results here")
_MD_OUT = flags.DEFINE_string("md_out", None, "write a markdown report here")
_METHODS_MD_OUT = flags.DEFINE_string(
    "methods_md_out", None, "the methods case's per-method table alone, with its "
    "provenance, here (the README includes it)")


def _check_output_path(flag: str, path):
    """An output file's directory must exist or be creatable, and be writable:
    checked before the (long) run, not after it."""
    if path is None:
        return
    directory = os.path.dirname(os.path.abspath(path))
    try:
        if os.path.isdir(path):
            raise IsADirectoryError(path)
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        raise BadInputError(f"--{flag}={path!r}: cannot write there ({e})") from None


def check_setup(key: str, setup, case_names: list, device_count: int) -> None:
    """Rejects, before anything is built, a setup the chosen cases cannot run."""
    from sam_jax.benchmark import cases
    from sam_jax.models import MODELS

    flag = f"--{key}={setup.model_name}:{setup.batch_size}"
    if setup.model_name not in MODELS:
        raise BadInputError(f"{flag}: unknown model {setup.model_name!r}; allowed: "
                            f"{', '.join(sorted(MODELS))}")
    if setup.batch_size <= 0 or setup.batch_size % device_count:
        raise BadInputError(f"{flag}: the batch must be a positive multiple of the "
                            f"device count {device_count}")
    if key != "main":
        return
    per_device_batch = setup.batch_size // device_count
    most_microbatches = max(cases.ACCUMULATION_STEPS)
    if "grad_accum" in case_names and per_device_batch % most_microbatches:
        raise BadInputError(
            f"{flag}: grad_accum splits the per-device batch {per_device_batch} into "
            f"up to {most_microbatches} microbatches; it must be a multiple of "
            f"{most_microbatches}")
    if ({"m_sharpness", "m_sharpness_sequential"} & set(case_names)
            and per_device_batch % cases.GROUPS_PER_DEVICE):
        raise BadInputError(
            f"{flag}: m-sharpness splits the per-device batch {per_device_batch} into "
            f"{cases.GROUPS_PER_DEVICE} groups; it must be a multiple of "
            f"{cases.GROUPS_PER_DEVICE}")
    if ({"sam_vs_torch"} & set(case_names)
            and not re.fullmatch(r"wrn\d+_\d+", setup.model_name)):
        raise BadInputError(f"{flag}: sam_vs_torch needs a WideResNet (wrnDEPTH_WIDTH, "
                            "as in sam_jax/benchmark/torch_reference.py)")


def _settings(case_names):
    import jax
    from sam_jax.benchmark import cases
    from sam_jax.benchmark import workloads as wl

    settings = cases.QUICK if _QUICK.value else cases.FULL
    for key, value in (("main", _MAIN.value), ("large", _LARGE.value)):
        if value is not None:
            model_name, _, batch_size = value.partition(":")
            if not batch_size.isdigit():
                raise BadInputError(f"--{key}={value!r}: expected MODEL:BATCH")
            settings = dataclasses.replace(
                settings, **{key: wl.Setup(model_name, int(batch_size))})
    if _METHODS.value:
        from sam_jax import methods
        unknown = [name for name in _METHODS.value if name not in methods.METHODS]
        if unknown:
            raise BadInputError(f"--methods: unknown method {unknown[0]!r}; allowed: "
                                f"{', '.join(methods.METHODS)}")
        settings = dataclasses.replace(settings, methods=tuple(_METHODS.value))
    if _PEAK_FLOPS.value <= 0:
        raise BadInputError(f"--peak_flops={_PEAK_FLOPS.value!r} must be > 0")
    settings = dataclasses.replace(settings, dtype=_DTYPE.value,
                                   peak_flops=_PEAK_FLOPS.value)
    for key in ("main", "large"):
        check_setup(key, getattr(settings, key), case_names, jax.device_count())
    return settings


def main(argv) -> int:
    if len(argv) > 1:
        raise BadInputError(f"unexpected argument {argv[1]!r}")
    from sam_jax.benchmark import cases
    case_names = list(_CASES.value or cases.DEFAULT_CASES)
    unknown = [c for c in case_names if c not in cases.CASES]
    if unknown:
        raise BadInputError(f"unknown case(s) {', '.join(unknown)}; allowed: "
                            f"{', '.join(cases.CASES)}")
    repeats = _REPEATS.value if _REPEATS.value is not None else (2 if _QUICK.value else 5)
    if repeats < 1 or _WARMUP.value < 0:
        raise BadInputError("--repeats must be >= 1 and --warmup >= 0")
    _check_output_path("json_out", _JSON_OUT.value)
    _check_output_path("md_out", _MD_OUT.value)
    _check_output_path("methods_md_out", _METHODS_MD_OUT.value)
    settings = _settings(case_names)
    run(case_names, settings, repeats, _WARMUP.value, _QUICK.value, argv_for_record(),
        _JSON_OUT.value, _MD_OUT.value, _METHODS_MD_OUT.value)
    return 0


def argv_for_record() -> str:
    return " ".join(["python", "-m", "sam_jax.benchmark"] + sys.argv[1:])


def run(case_names, settings, repeats, warmup, quick, command, json_out, md_out,
        methods_md_out=None) -> dict:
    from sam_jax import parallel
    from sam_jax.benchmark import cases
    from sam_jax.benchmark import report as report_lib
    from sam_jax.benchmark import workloads as wl

    started = time.perf_counter()
    log = lambda message: print(f"[{time.perf_counter() - started:7.1f} s] {message}",
                                flush=True)
    load_start = [round(x, 2) for x in os.getloadavg()]
    # XLA's CPU client runs one thread per usable core; torch gets as many.
    num_threads = len(os.sched_getaffinity(0))
    mesh = parallel.make_mesh()
    wanted = cases.wanted_workloads(case_names, settings)
    measured = cases.Measured(settings, mesh, {}, {}, {})
    for key in ("main", "large"):
        if wanted[key]:
            setup = getattr(settings, key)
            log(f"setup {key}: {setup.label}")
            (measured.timings[key], measured.compiled[key],
             measured.notes[key]) = cases.run_setup(
                setup, wanted[key], settings, mesh, repeats, warmup, num_threads, log)
    rows = [row for name in case_names
            for row in cases.CASES[name].rows(cases.CASES[name], measured)]
    report = {
        "command": command,
        "finished_utc": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M"),
        "machine": report_lib.machine_info(num_threads),
        "load_average": {"start": load_start,
                         "end": [round(x, 2) for x in os.getloadavg()]},
        "versions": report_lib.versions(),
        "settings": {"repeats": repeats, "warmup": warmup, "quick": quick,
                     "cases": case_names, "main": dataclasses.asdict(settings.main),
                     "large": dataclasses.asdict(settings.large),
                     "pipeline_examples": settings.pipeline_examples,
                     "pipeline_batches_per_call": settings.pipeline_batches_per_call,
                     "pipeline_augmentation": wl.PIPELINE_AUGMENTATION,
                     "compiler_options": settings.compiler_options,
                     "methods": list(settings.methods), "dtype": settings.dtype,
                     "peak_flops": settings.peak_flops},
        "cases": rows,
        "timings": {getattr(settings, key).label: by_name
                    for key, by_name in measured.timings.items() if by_name},
        "notes": {getattr(settings, key).label: by_key
                  for key, by_key in measured.notes.items() if by_key},
        "seconds_total": time.perf_counter() - started,
    }
    print()
    print(report_lib.markdown_table(rows))
    if json_out:
        os.makedirs(os.path.dirname(os.path.abspath(json_out)), exist_ok=True)
        with open(json_out, "w") as f:
            json.dump(report, f, indent=2)
    if md_out:
        os.makedirs(os.path.dirname(os.path.abspath(md_out)), exist_ok=True)
        with open(md_out, "w") as f:
            f.write(report_lib.markdown_report(report))
    if methods_md_out and any("method" in row for row in rows):
        os.makedirs(os.path.dirname(os.path.abspath(methods_md_out)), exist_ok=True)
        with open(methods_md_out, "w") as f:
            f.write(report_lib.methods_report(report))
    return report


if __name__ == "__main__":
    cli.run(main)
