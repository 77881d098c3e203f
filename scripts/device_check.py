"""The accelerator check: step speed and memory, the methods' cost, and a
Fashion-MNIST SGD vs SAM run, in one command that fits a few minutes.

  scripts/device_check.sh [--out=experiments/accelerator] [--budget=480]
                          [--peak_flops=989e12] [--phases=steps,methods,fashion_mnist]
  scripts/device_check.sh --tiny --out=/tmp/check     # CPU, about a minute

Phases, each a child process whose output goes to the console and to
OUT/device_check.log; each writes its files when it ends and the summary
(OUT/summary.md) is rewritten after every phase, so a check stopped at any
point keeps what had finished:

 1. steps: `python -m sam_jax.benchmark --cases=bf16,utilization` on WRN-28-10
    at batch 128: SAM and SGD step time and images/s in float32 and bfloat16,
    SAM / SGD, bf16 / float32 time and peak memory, and the SAM step's FLOP/s
    (XLA's cost analysis of the compiled step / its median time) as a fraction
    of --peak_flops (default: an H200's dense bf16 peak). -> steps.json, .md
 2. methods: `--cases=methods` on WRN-16-4 at batch 128 in bf16, every method's
    step time / SGD's beside its declared cost. -> methods.json, .md
 3. fashion_mnist: the paper's Table 5 protocol (configs/fashion_mnist.py:paper:
    batch 256, m = 32, basic augmentation, LR 0.1 cosine, WD 5e-4, rho 0.05)
    with WRN-16-4 in bf16 instead of WRN-28-10, for as many epochs as the
    budget leaves: one SAM step is compiled and timed first (the probe), the
    epoch count chosen so that SGD and SAM both end before the deadline, then
    `python -m sam_jax.main` trains SGD and SAM. -> fashion_mnist.json, runs/
 Then summary.md: the tables, the test errors beside the paper's (SAM 3.98%,
 SGD 4.57%; WRN-28-10, 200 epochs), and the time the paper's 200-epoch
 WRN-28-10 run would take on this chip at the SAM step's measured speed.

Every phase has a deadline inside --budget (seconds from the start); a child
still running at its deadline gets SIGTERM (the trainer then saves a
checkpoint and stops) and is recorded as stopped. The Fashion-MNIST IDX files
come from $SAM_JAX_FASHION_MNIST_DIR (see experiments/accelerator/README.md).

--tiny: the same phases shrunk for a CPU (WRN-10-1 on 8 examples, two
methods, digits instead of Fashion-MNIST, at most two epochs), for the test
suite; its numbers only show that everything runs.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHASES = ("steps", "methods", "fashion_mnist")
# Deadlines, as fractions of the budget: steps until 30%, methods until 60%,
# Fashion-MNIST until the end (less the summary's few seconds).
PHASE_END_FRACTIONS = {"steps": 0.30, "methods": 0.60, "fashion_mnist": 1.0}
SUMMARY_SECONDS = 10
PAPER_TABLE5 = {"sgd": 4.57, "sam": 3.98}  # % test error, WRN-28-10, 200 epochs
PAPER_EPOCHS = 200
FASHION_MNIST_TRAIN_EXAMPLES = 60_000
FASHION_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                       "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
DEFAULT_SAM_OVER_SGD = 2.0  # two passes; used when the methods phase did not run
# Per trainer run, on top of its steps: start-up, data, compilation (measured
# by the probe), evaluation, the final checkpoint.
RUN_OVERHEAD_SECONDS = 20.0
EPOCH_SAFETY = 1.2  # steps in the trainer run ~ the probe's; keep a margin


def tiny_or_full(tiny: bool) -> dict:
    """What each phase runs: the accelerator's sizes, or --tiny's."""
    if tiny:
        return {
            "steps": ["--quick", "--main=wrn10_1:8", "--cases=bf16,utilization",
                      "--repeats=1", "--warmup=0"],
            "methods": ["--quick", "--main=wrn10_1:8", "--cases=methods",
                        "--methods=sgd,sam", "--dtype=bfloat16", "--repeats=1",
                        "--warmup=0"],
            "config": "configs/quickstart.py",
            "run_overrides": ["--config.model.name=wrn10_1", "--config.batch_size=64",
                              "--config.dtype=bfloat16"],
            "methods_arg": {"sgd": "sgd", "sam": "sam"},
            "max_epochs": 2, "train_examples": 1297, "probe_steps": 3,
            "needs_fashion_mnist": False,
            "model_label": "WRN-10-1 on digits (CPU tiny mode)",
        }
    return {
        "steps": ["--main=wrn28_10:128", "--cases=bf16,utilization", "--repeats=5",
                  "--warmup=2"],
        "methods": ["--main=wrn16_4:128", "--cases=methods", "--dtype=bfloat16",
                    "--repeats=3", "--warmup=1"],
        "config": "configs/fashion_mnist.py",
        "run_overrides": ["--config.model.name=wrn16_4", "--config.dtype=bfloat16"],
        "methods_arg": {"sgd": "paper,sgd", "sam": "paper,sam"},
        "max_epochs": PAPER_EPOCHS, "train_examples": FASHION_MNIST_TRAIN_EXAMPLES,
        "probe_steps": 20, "model_label": "WRN-16-4, bf16",
        "needs_fashion_mnist": True,
    }


# ------------------------------------------------------------ processes

class Log:
    """Prints with the seconds since the start, and keeps a copy in a file."""

    def __init__(self, path: str):
        self.start = time.time()
        self.file = open(path, "a", buffering=1)

    def elapsed(self) -> float:
        return time.time() - self.start

    def __call__(self, line: str, prefix: str = "") -> None:
        text = f"[{self.elapsed():6.0f} s] {prefix}{line}"
        print(text, flush=True)
        self.file.write(text + "\n")


class Stopped(Exception):
    """The check itself got SIGTERM or SIGINT."""


def _stop(signum, frame):
    raise Stopped(signal.Signals(signum).name)


def run_until(command: list, deadline: float, log: Log, name: str, env: dict,
              enforce: bool = True) -> tuple[int, bool]:
    """Runs `command`, streaming its output to the log, until it exits or, if
    `enforce`, `deadline` (time.time()) passes: then SIGTERM, and SIGKILL 30 s
    later. The child is stopped the same way if the check is. Returns (exit
    code, stopped at the deadline)."""
    log(" ".join(command), prefix=f"{name}: $ ")
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    reader = threading.Thread(
        target=lambda: [log(line.rstrip(), prefix=f"{name}: ") for line in proc.stdout],
        daemon=True)
    reader.start()
    stopped = False
    try:
        while proc.poll() is None:
            if enforce and time.time() > deadline and not stopped:
                log("deadline reached: SIGTERM", prefix=f"{name}: ")
                proc.send_signal(signal.SIGTERM)
                stopped, deadline = True, time.time() + 30
            elif stopped and time.time() > deadline:
                log("still running: SIGKILL", prefix=f"{name}: ")
                proc.kill()
                proc.wait()
            time.sleep(0.2)
    finally:
        if proc.poll() is None:  # the check was stopped: stop the child too
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(timeout=10)
    return proc.returncode, stopped


def read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_json(path: str, value) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=2)
    os.replace(path + ".tmp", path)


# --------------------------------------------------------------- phases

def benchmark_phase(name: str, args: list, out: str, deadline: float, log: Log,
                    env: dict, peak_flops: float, enforce: bool) -> dict:
    json_out, md_out = os.path.join(out, f"{name}.json"), os.path.join(out, f"{name}.md")
    command = [sys.executable, "-u", "-m", "sam_jax.benchmark", *args,
               f"--peak_flops={peak_flops}", f"--json_out={json_out}",
               f"--md_out={md_out}"]
    code, stopped = run_until(command, deadline, log, name, env, enforce)
    return {"exit_code": code, "stopped_at_deadline": stopped,
            "report": read_json(json_out) if code == 0 else None}


def probe_step_seconds(config_spec: str, overrides: dict, num_steps: int) -> dict:
    """Compiles the trainer's step for a config and times `num_steps` steps on
    random data of the data set's shape (run in a child process: JAX stays out
    of the driver, which must not hold the accelerator)."""
    import jax
    import numpy as np

    from sam_jax import config_schema
    from sam_jax import data
    from sam_jax import parallel
    from sam_jax import steps
    from sam_jax import train
    from sam_jax.models import get_model

    config = config_schema.load_config_file(config_spec)
    for key, value in overrides.items():
        section, _, field = key.rpartition(".")
        (config[section] if section else config)[field] = value
    spec = data.get_spec(config.dataset)
    mesh = parallel.make_mesh()
    model = get_model(config.model.name, spec.num_classes, config.dtype)
    chain = train.training_chain(config, total_steps=1000)
    state = jax.device_put(steps.initial_state(config.seed, model, chain.tx,
                                               spec.image_shape),
                           parallel.replicated(mesh))
    rng = np.random.default_rng(0)
    batch = parallel.global_batch(mesh, {
        "image": rng.standard_normal((config.batch_size,) + tuple(spec.image_shape)
                                     ).astype(np.float32),
        "label": rng.integers(0, spec.num_classes, config.batch_size).astype(np.int32)})
    key = jax.random.PRNGKey(0)
    start = time.perf_counter()
    step = parallel.shard_train_step(
        train.train_step_from_config(config, model, chain, jax.device_count()), mesh)
    compiled = step.lower(state, batch, key).compile()
    compile_seconds = time.perf_counter() - start
    state = jax.block_until_ready(compiled(state, batch, key))  # warm-up
    seconds = []
    for _ in range(num_steps):
        start = time.perf_counter()
        state = jax.block_until_ready(compiled(state, batch, key))
        seconds.append(time.perf_counter() - start)
    return {"compile_seconds": compile_seconds, "step_seconds": statistics.median(seconds),
            "steps_timed": num_steps, "batch_size": config.batch_size,
            "devices": [str(d) for d in jax.devices()]}


def choose_epochs(seconds_left: float, *, steps_per_epoch: int, sam_step_seconds: float,
                  sam_over_sgd: float, compile_seconds: float, max_epochs: int) -> int:
    """Epochs for both runs (SGD, then SAM) to end within `seconds_left`: each
    run costs its overhead (start-up, compilation, evaluation) plus its steps;
    an SGD step costs a SAM step / sam_over_sgd. At least 1."""
    overhead = 2 * (RUN_OVERHEAD_SECONDS + compile_seconds)
    epoch_seconds = (steps_per_epoch * sam_step_seconds * (1 + 1 / sam_over_sgd)
                     * EPOCH_SAFETY)
    return int(max(1, min(max_epochs, (seconds_left - overhead) // epoch_seconds)))


def sam_over_sgd_from(methods_report) -> float:
    """SAM / SGD step time from the methods phase (the same model), else 2."""
    for row in (methods_report or {}).get("cases", []):
        if row.get("method") == "sam" and row.get("ratio"):
            return float(row["ratio"])
    return DEFAULT_SAM_OVER_SGD


def fashion_mnist_files(env: dict):
    """The directory holding the four Fashion-MNIST IDX files the trainer
    reads first (sam_jax/data/arrays.py), or None."""
    for directory in (env.get("SAM_JAX_FASHION_MNIST_DIR"),
                      "/usr/share/datasets/fashion-mnist"):
        if directory and all(
                os.path.exists(os.path.join(directory, name)) or
                os.path.exists(os.path.join(directory, name[:-len(".gz")]))
                for name in FASHION_MNIST_FILES):
            return directory
    return None


def fashion_mnist_phase(sizes: dict, out: str, deadline: float, log: Log, env: dict,
                        methods_report, enforce: bool) -> dict:
    record = {"config": sizes["config"], "overrides": sizes["run_overrides"],
              "paper_table5_error_percent": PAPER_TABLE5, "runs": {}}
    path = os.path.join(out, "fashion_mnist.json")
    if sizes["needs_fashion_mnist"]:
        record["data_dir"] = fashion_mnist_files(env)
        if record["data_dir"] is None:
            record["status"] = ("skipped: no Fashion-MNIST IDX files (set "
                                "SAM_JAX_FASHION_MNIST_DIR; experiments/accelerator/"
                                "README.md)")
            log(record["status"], prefix="fashion_mnist: ")
            write_json(path, record)
            return record
    probe_out = os.path.join(out, "fashion_mnist_probe.json")
    overrides = dict(o[len("--config."):].split("=", 1) for o in sizes["run_overrides"])
    overrides = {k: int(v) if v.isdigit() else v for k, v in overrides.items()}
    spec = f"{sizes['config']}:{sizes['methods_arg']['sam']}"
    probe = [sys.executable, "-u", os.path.join(REPO, "scripts", "device_check.py"),
             "--probe", spec, "--probe_overrides", json.dumps(overrides),
             "--probe_steps", str(sizes["probe_steps"]), "--probe_out", probe_out]
    code, _ = run_until(probe, deadline, log, "probe", env, enforce)
    measured = read_json(probe_out) if code == 0 else None
    if measured is None:
        record["status"] = f"probe failed (exit code {code})"
        write_json(path, record)
        return record
    record["probe"] = measured
    ratio = sam_over_sgd_from(methods_report)
    steps_per_epoch = sizes["train_examples"] // measured["batch_size"]
    epochs = choose_epochs(deadline - time.time(), steps_per_epoch=steps_per_epoch,
                           sam_step_seconds=measured["step_seconds"],
                           sam_over_sgd=ratio,
                           compile_seconds=measured["compile_seconds"],
                           max_epochs=sizes["max_epochs"])
    record.update(epochs=epochs, steps_per_epoch=steps_per_epoch, sam_over_sgd=ratio)
    log(f"probe: SAM step {measured['step_seconds']:.4f} s, compiled in "
        f"{measured['compile_seconds']:.1f} s; SAM / SGD {ratio:.2f}; "
        f"{epochs} epochs of {steps_per_epoch} steps fit", prefix="fashion_mnist: ")
    write_json(path, record)
    for method in ("sgd", "sam"):
        workdir = os.path.join(out, "runs", f"fashion_mnist_{method}")
        command = [sys.executable, "-u", "-m", "sam_jax.main",
                   f"--config={sizes['config']}:{sizes['methods_arg'][method]}",
                   f"--workdir={workdir}", "--overwrite", *sizes["run_overrides"],
                   f"--config.num_epochs={epochs}", f"--config.eval_every_epochs={epochs}",
                   "--config.log_every_steps=50"]
        # SGD leaves SAM its share of what is left.
        share = 1 / (1 + ratio) if method == "sgd" else 1.0
        run_deadline = time.time() + share * (deadline - time.time())
        started = time.time()
        code, stopped = run_until(command, run_deadline, log, f"fashion_mnist {method}",
                                  env, enforce)
        results = read_json(os.path.join(workdir, "results.json"))
        record["runs"][method] = {
            "exit_code": code, "stopped_at_deadline": stopped,
            "wall_seconds": time.time() - started, "workdir": workdir,
            "test_error": None if results is None else results.get("test_error"),
            "train_seconds": None if results is None else results.get("train_seconds")}
        write_json(path, record)
    record["status"] = "done"
    write_json(path, record)
    return record


# -------------------------------------------------------------- summary

def _rows(report, case: str) -> list:
    return [row for row in (report or {}).get("cases", []) if row["case"] == case]


def _sam_images_per_s(steps_report) -> dict:
    """dtype -> SAM images/s on the steps phase's model (the bf16 case's rows)."""
    out = {}
    for row in _rows(steps_report, "bf16"):
        if row["measure"].startswith("SAM step s / SGD step s, "):
            out[row["measure"].rsplit(", ", 1)[1]] = row["sam_images_per_s"]
    return out


def summary_markdown(tiny: bool, phases: dict, argv: list, budget: float,
                     elapsed: float) -> str:
    from sam_jax.benchmark import report as report_lib  # no JAX computation
    lines = ["# Accelerator check", ""]
    if tiny:
        lines += ["**CPU tiny mode: a smoke run of the check, not results.** Tiny "
                  "models and batches on the CPU; the numbers only show that every "
                  "phase runs and writes its files.", ""]
    lines += [f"Command: `scripts/device_check.sh {' '.join(argv)}` "
              f"({elapsed:.0f} s of a {budget:.0f} s budget).", ""]
    steps_info = phases.get("steps")
    if steps_info:
        report = steps_info.get("report")
        if report:
            machine = report["machine"]
            lines += [f"Devices: {', '.join(machine['jax_devices'])}; versions: " +
                      ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v)
                      + ".", "", "## Steps (bf16 and float32)", "",
                      report_lib.markdown_table(report["cases"]), ""]
            images = _sam_images_per_s(report)
            setup = report["settings"]["main"]
            paper_images = PAPER_EPOCHS * FASHION_MNIST_TRAIN_EXAMPLES
            projections = [f"- {dtype}: {paper_images / ips / 3600:.2f} h "
                           f"({ips:.0f} images/s)" for dtype, ips in images.items()]
            if projections:
                lines += [f"Projected time of the paper's {PAPER_EPOCHS}-epoch run "
                          f"(Fashion-MNIST, {FASHION_MNIST_TRAIN_EXAMPLES} images per "
                          f"epoch) at the SAM step speed of {setup['model_name']} at "
                          f"batch {setup['batch_size']} on this chip (training steps "
                          "only; the paper's batch 256 with m = 32 was not timed):",
                          "", *projections, ""]
        else:
            lines += ["## Steps", "", _status(steps_info), ""]
    methods_info = phases.get("methods")
    if methods_info:
        lines += ["## Per-method step cost", ""]
        if methods_info.get("report"):
            lines += [report_lib.methods_table(methods_info["report"]["cases"]), ""]
        else:
            lines += [_status(methods_info), ""]
    fmnist = phases.get("fashion_mnist")
    if fmnist:
        lines += ["## Fashion-MNIST, SGD vs SAM", ""]
        if "epochs" in fmnist:
            label = tiny_or_full(tiny)["model_label"]
            lines += ["| run | SGD test error | SAM test error |", "|---|---|---|"]
            got = {m: fmnist["runs"].get(m, {}) for m in ("sgd", "sam")}
            cells = []
            for method in ("sgd", "sam"):
                error = got[method].get("test_error")
                note = (" (stopped at the deadline)"
                        if got[method].get("stopped_at_deadline") else "")
                cells.append("not run" if not got[method] else
                             (f"{100 * error:.2f}%" if error is not None
                              else f"no result{note}"))
            lines += [f"| this check: {label}, {fmnist['epochs']} epochs, batch "
                      f"256, m = 32 | {cells[0]} | {cells[1]} |" if not tiny else
                      f"| this check: {label}, {fmnist['epochs']} epochs | "
                      f"{cells[0]} | {cells[1]} |",
                      f"| paper Table 5: WRN-28-10, {PAPER_EPOCHS} epochs | "
                      f"{PAPER_TABLE5['sgd']:.2f}% | {PAPER_TABLE5['sam']:.2f}% |", ""]
        else:
            lines += [fmnist.get("status", "not run"), ""]
    return "\n".join(lines)


def _status(info: dict) -> str:
    if info.get("stopped_at_deadline"):
        return "Stopped at its deadline; see device_check.log."
    return f"Failed (exit code {info.get('exit_code')}); see device_check.log."


# ----------------------------------------------------------------- main

def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(REPO, "experiments", "accelerator"))
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds from the start to the end of the last phase "
                             "(default 480; 90 with --tiny)")
    parser.add_argument("--peak_flops", type=float, default=989e12,
                        help="the chip's peak FLOP/s (default: H200 dense bf16)")
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--tiny", action="store_true",
                        default=os.environ.get("SAM_JAX_DEVICE_CHECK_TINY") == "1")
    # The probe, run as a child process by the fashion_mnist phase.
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--probe_overrides", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--probe_steps", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--probe_out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    phases = [p for p in args.phases.split(",") if p]
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        parser.error(f"unknown phase {unknown[0]!r}; allowed: {', '.join(PHASES)}")
    if args.peak_flops <= 0:
        parser.error(f"--peak_flops={args.peak_flops!r} must be > 0")
    args.phase_list = phases
    if args.budget is None:
        args.budget = 90.0 if args.tiny else 480.0
    return args


def main(argv) -> int:
    args = parse_args(argv)
    if args.probe:
        write_json(args.probe_out, probe_step_seconds(
            args.probe, json.loads(args.probe_overrides), args.probe_steps))
        return 0
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    log = Log(os.path.join(out, "device_check.log"))
    sizes = tiny_or_full(args.tiny)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [REPO] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Reused by a second check on the same machine; outside OUT (not committed).
    env.setdefault("JAX_COMPILATION_CACHE_DIR", "/tmp/sam_jax_device_check_cache")
    if args.tiny:
        env.setdefault("JAX_PLATFORMS", "cpu")
    if env.get("SAM_JAX_FASHION_MNIST_DIR"):  # the children run in the repository
        env["SAM_JAX_FASHION_MNIST_DIR"] = os.path.abspath(env["SAM_JAX_FASHION_MNIST_DIR"])
    log(f"device check ({'CPU tiny mode' if args.tiny else 'full'}): phases "
        f"{', '.join(args.phase_list)}, budget {args.budget:.0f} s, out {out}")
    start = log.start
    phases, summary_path = {}, os.path.join(out, "summary.md")

    def deadline(phase):
        return start + PHASE_END_FRACTIONS[phase] * args.budget - (
            SUMMARY_SECONDS if phase == "fashion_mnist" else 0)

    def write_summary():
        text = summary_markdown(args.tiny, phases, argv, args.budget, log.elapsed())
        with open(summary_path + ".tmp", "w") as f:
            f.write(text + "\n")
        os.replace(summary_path + ".tmp", summary_path)

    # Deadlines stop a phase only on an accelerator: a tiny run on a loaded
    # CPU takes what it takes (its budget still sizes the training runs).
    enforce = not args.tiny
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        for phase in args.phase_list:
            log(f"phase {phase} (until {deadline(phase) - start:.0f} s)")
            if phase in ("steps", "methods"):
                phases[phase] = benchmark_phase(phase, sizes[phase], out, deadline(phase),
                                                log, env, args.peak_flops, enforce)
            else:
                phases[phase] = fashion_mnist_phase(
                    sizes, out, deadline(phase), log, env,
                    (phases.get("methods") or {}).get("report"), enforce)
            write_summary()
    except Stopped as e:
        log(f"stopped by {e}; the summary holds the phases that finished")
        write_summary()
        return 1
    log(f"done: {summary_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
