"""The faults a SLURM user meets, tried against the real commands (issue 21).

Each case runs `python -m sam_jax.X` in a subprocess on a state a crash, a
preemption, a reused directory or a typo can leave, and judges the outcome:
- good: the promised exit code, at most one `error:` / `stopped:` line and
  warnings (no traceback), and the workdir in the promised state;
- noisy: the right outcome, but with a traceback or extra lines;
- bad: anything else (data lost, a dead end, nonsense accepted, a misleading
  exit code).

The suite asserts every case is good, except slow ones whose ground other
tests cover too (in_suite=False, marked slow: test_main's signals and corrupt checkpoints,
test_workdir's lock, --overwrite and torn metrics line, test_validate's
messages). Run as a script, it tries them all and writes the table with the
counts:

    python tests/test_faults_cli.py --out=experiments/faults_cli.md

or one class of them (issue 33's, here):

    python tests/test_faults_cli.py --out=experiments/faults_cli_issue33.md \
        --only='7 issue 33'
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Callable, NamedTuple

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import REPO  # noqa: E402

# The TINY run (2 devices: cheaper to start than 8).
TINY = ["--config=configs/quickstart.py", "--config.model.name=wrn10_1",
        "--config.batch_size=32", "--config.eval_batch_size=128",
        "--config.num_steps=20", "--config.log_every_steps=10",
        "--config.checkpoint_every_steps=10"]
EXIT_OK, EXIT_BAD_INPUT, EXIT_PREEMPTED, EXIT_INTERRUPTED = 0, 2, 75, 130


def environment(tmp):
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    env["TFDS_DATA_DIR"] = os.path.join(tmp, "tfds")
    return env


def main_argv(workdir, *extra, tiny=True):
    return [sys.executable, "-u", "-m", "sam_jax.main", f"--workdir={workdir}",
            *(TINY if tiny else ["--config=configs/quickstart.py"]), *extra]


class Outcome(NamedTuple):
    code: int
    stdout: str
    stderr: str


def run(argv, tmp, timeout=600, env=None) -> Outcome:
    proc = subprocess.run(argv, cwd=REPO, env={**environment(tmp), **(env or {})},
                          capture_output=True, text=True, timeout=timeout)
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def module(name, *args):
    return [sys.executable, "-m", name, *args]


# Lines a clean failure may print on stderr besides its one message: our
# warnings, and what XLA / absl print when they start (not ours to silence).
_BENIGN = ("warning: ", "WARNING: All log messages before absl::InitializeLog",
           "I0000 ", "W0000 ", "E0000 ")


def judge(outcome: Outcome, code: int, *, message: str = "", state_ok: bool = True,
          state: str = "") -> tuple[str, str]:
    """(verdict, what happened) for an outcome expected to exit with `code`
    and, unless 0, print one line containing `message`."""
    lines = [l for l in outcome.stderr.splitlines() if l.strip()]
    own = [l for l in lines if l.startswith(("error: ", "stopped: "))]
    extra = [l for l in lines if not l.startswith(_BENIGN) and l not in own]
    shown = (own[-1] if own else (lines[-1] if lines else "")).strip()
    what = f"exit {outcome.code}" + (f": `{shown[:160]}`" if shown else "")
    if state:
        what += f"; {state}"
    right = (outcome.code == code and state_ok
             and (code == EXIT_OK or (len(own) == 1 and message in own[0])))
    if not right:
        return "bad", what
    if extra:
        return "noisy", what + f" (+{len(extra)} other lines on stderr)"
    return "good", what


# ------------------------------------------------------------------ fixtures

_FINISHED = {}


def finished_run(tmp) -> str:
    """A finished TINY run (trained once per process), copied into `tmp`."""
    if "path" not in _FINISHED:
        base = os.path.join(os.path.dirname(tmp), "finished_tiny_run")
        if not os.path.exists(os.path.join(base, "run", "results.json")):
            shutil.rmtree(base, ignore_errors=True)
            os.makedirs(base)
            done = run(main_argv(os.path.join(base, "run")), base)
            assert done.code == 0, done.stderr[-3000:]
        _FINISHED["path"] = os.path.join(base, "run")
    workdir = os.path.join(tmp, "run")
    shutil.copytree(_FINISHED["path"], workdir)
    return workdir


def metric_rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]  # every line must parse


def no_duplicate_rows(workdir) -> bool:
    keys = [(row["step"], row["split"]) for row in metric_rows(workdir)]
    return len(keys) == len(set(keys))


def results_ok(workdir) -> bool:
    try:
        with open(os.path.join(workdir, "results.json")) as f:
            return json.load(f)["steps"] == 20
    except (OSError, ValueError, KeyError):
        return False


def listing(directory):
    return sorted(os.path.relpath(os.path.join(r, f), directory)
                  for r, _, files in os.walk(directory) for f in files)


def foreign_directory(tmp) -> str:
    workdir = os.path.join(tmp, "theirs")
    os.makedirs(workdir)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump({"learning_rate": 3e-4, "layers": 12}, f)
    with open(os.path.join(workdir, "notes.txt"), "w") as f:
        f.write("my notes\n")
    return workdir


def read_only_directory(tmp):
    """A directory this process cannot write, or None (root without mount)."""
    directory = os.path.join(tmp, "readonly")
    os.makedirs(directory)
    if os.geteuid() != 0:
        os.chmod(directory, 0o555)
        return directory
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", directory],
                             capture_output=True)
    return directory if mounted.returncode == 0 else None


# ------------------------------------------------------------------- cases

class Case(NamedTuple):
    klass: str
    name: str
    run: Callable[[str], tuple[str, str]]
    in_suite: bool = True  # False: the script's table only (see above)


CASES: list[Case] = []


def case(klass, name, in_suite=True):
    def register(fn):
        CASES.append(Case(klass, name, fn, in_suite))
        return fn
    return register


# 1. --overwrite removes only our files

@case("1 overwrite", "a directory with someone else's config.json and notes.txt")
def _(tmp):
    workdir = foreign_directory(tmp)
    before = listing(workdir)
    out = run(main_argv(workdir), tmp)
    return judge(out, EXIT_BAD_INPUT, message="not a sam_jax config",
                 state_ok=listing(workdir) == before, state="nothing touched")


@case("1 overwrite", "the same with --overwrite")
def _(tmp):
    workdir = foreign_directory(tmp)
    before = listing(workdir)
    out = run(main_argv(workdir, "--overwrite"), tmp)
    return judge(out, EXIT_BAD_INPUT, message="not a sam_jax config",
                 state_ok=listing(workdir) == before, state="nothing touched")


@case("1 overwrite", "--overwrite of our run beside a user's notes.txt", in_suite=False)
def _(tmp):
    workdir = finished_run(tmp)
    with open(os.path.join(workdir, "notes.txt"), "w") as f:
        f.write("my notes\n")
    out = run(main_argv(workdir, "--config.sam.rho=0.2", "--overwrite"), tmp)
    kept = os.path.exists(os.path.join(workdir, "notes.txt"))
    return judge(out, EXIT_OK, state_ok=kept and results_ok(workdir),
                 state="new run trained, notes.txt kept")


# 2. every state a crash can leave resumes with the same command

@case("2 resumable", "truncated last line of metrics.jsonl (killed mid-write)",
      in_suite=False)
def _(tmp):
    workdir = finished_run(tmp)
    # A run killed after its checkpoint at 10, in the middle of a metrics line.
    shutil.rmtree(os.path.join(workdir, "checkpoints", "20"))
    os.remove(os.path.join(workdir, "results.json"))
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        lines = f.readlines()
    kept = [l for l in lines if json.loads(l)["step"] <= 10]
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        f.writelines(kept + [lines[len(kept)][:25]])
    out = run(main_argv(workdir), tmp)
    ok = results_ok(workdir) and no_duplicate_rows(workdir)
    return judge(out, EXIT_OK, state_ok=ok and "resuming at step 10/" in out.stdout,
                 state="resumed at step 10, the torn line dropped with a warning")


def _damaged_config(tmp, text):
    workdir = finished_run(tmp)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(text)
    out = run(main_argv(workdir), tmp)
    with open(os.path.join(workdir, "config.json")) as f:
        repaired = json.load(f)["model"]["name"] == "wrn10_1"
    return judge(out, EXIT_OK, state_ok=repaired and results_ok(workdir),
                 state="config.json rewritten, the run stands")


@case("2 resumable", "an empty config.json")
def _(tmp):
    return _damaged_config(tmp, "")


@case("2 resumable", "a truncated config.json")
def _(tmp):
    return _damaged_config(tmp, '{\n  "augmentation": "basic",\n  "batch_si')


@case("2 resumable", "a corrupt results.json on a finished run")
def _(tmp):
    workdir = finished_run(tmp)
    with open(os.path.join(workdir, "results.json"), "w") as f:
        f.write('{"test_error": 0.')
    out = run(main_argv(workdir), tmp)
    ok = results_ok(workdir) and no_duplicate_rows(workdir)
    return judge(out, EXIT_OK, state_ok=ok,
                 state="evaluated again, results.json rewritten, no duplicate row")


@case("2 resumable", "a deleted results.json")
def _(tmp):
    workdir = finished_run(tmp)
    os.remove(os.path.join(workdir, "results.json"))
    rows_before = len(metric_rows(workdir))
    out = run(main_argv(workdir), tmp)
    ok = (results_ok(workdir) and no_duplicate_rows(workdir)
          and len(metric_rows(workdir)) == rows_before)
    return judge(out, EXIT_OK, state_ok=ok,
                 state="results.json regenerated, no duplicate eval row")


@case("2 resumable", "config.json deleted, then started with another model")
def _(tmp):
    workdir = finished_run(tmp)
    os.remove(os.path.join(workdir, "config.json"))
    before = listing(workdir)
    out = run(main_argv(workdir, "--config.model.name=wrn10_2"), tmp)
    ok = listing(workdir) == before
    return judge(out, EXIT_BAD_INPUT, message="model.name 'wrn10_1' -> 'wrn10_2'",
                 state_ok=ok, state="nothing moved or deleted")


@case("2 resumable", "the corrected command after that refusal")
def _(tmp):
    workdir = finished_run(tmp)
    os.remove(os.path.join(workdir, "config.json"))
    run(main_argv(workdir, "--config.model.name=wrn10_2"), tmp)
    out = run(main_argv(workdir), tmp)
    return judge(out, EXIT_OK, state_ok="already finished" in out.stdout,
                 state="the original run is found finished")


# 3. one run per workdir

@case("3 one run", "two runs started at once on one workdir", in_suite=False)
def _(tmp):
    workdir = os.path.join(tmp, "run")
    first = subprocess.Popen(main_argv(workdir), cwd=REPO, env=environment(tmp),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not os.path.exists(os.path.join(workdir, ".lock")):
        assert time.time() < deadline and first.poll() is None, "first never locked"
        time.sleep(0.1)
    second = run(main_argv(workdir), tmp)
    first_out, first_err = first.communicate(timeout=600)
    ok = (first.returncode == 0 and no_duplicate_rows(workdir)
          and len(os.listdir(os.path.join(workdir, "tensorboard"))) == 1
          and f"pid {first.pid}" in second.stderr)
    return judge(second, EXIT_BAD_INPUT, message="is in use by a run of host",
                 state_ok=ok, state="the first run trained alone")


@case("3 one run", "a lock file left by a killed run")
def _(tmp):
    workdir = finished_run(tmp)
    os.remove(os.path.join(workdir, "results.json"))
    with open(os.path.join(workdir, ".lock"), "w") as f:
        f.write("host elsewhere pid 99999\n")
    out = run(main_argv(workdir), tmp)
    return judge(out, EXIT_OK, state_ok=results_ok(workdir),
                 state="the lock (not held) did not block the resume")


# 4. preemption at any moment: 75; Ctrl-C: 130

def _signal_after(tmp, sig, seconds=None, line=None):
    workdir = os.path.join(tmp, "run")
    err_path = os.path.join(tmp, "stderr.txt")
    with open(err_path, "w") as err:
        child = subprocess.Popen(main_argv(workdir), cwd=REPO, env=environment(tmp),
                                 stdout=subprocess.PIPE, stderr=err, text=True)
        if seconds is not None:
            time.sleep(seconds)
        else:
            for text in child.stdout:
                if text.startswith(line):
                    break
        child.send_signal(sig)
        stdout = child.stdout.read()
        child.wait(timeout=300)
    with open(err_path) as f:
        return workdir, Outcome(child.returncode, stdout, f.read())


@case("4 signals", "SIGTERM 4 s after launch (imports, data loading)")
def _(tmp):
    workdir, out = _signal_after(tmp, signal.SIGTERM, seconds=4)
    checkpoints = os.path.join(workdir, "checkpoints")
    saved = os.path.isdir(checkpoints) and os.listdir(checkpoints)
    return judge(out, EXIT_PREEMPTED, message="preempted (SIGTERM): nothing to save yet",
                 state_ok=not saved, state="nothing to save yet")


@case("4 signals", "SIGTERM while compiling (after 'starting step 0')", in_suite=False)
def _(tmp):
    workdir, out = _signal_after(tmp, signal.SIGTERM, line="starting step 0")
    again = run(main_argv(workdir), tmp)
    return judge(out, EXIT_PREEMPTED, message="preempted (SIGTERM)",
                 state_ok=again.code == 0 and results_ok(workdir),
                 state="the same command then ran to the end")


@case("4 signals", "Ctrl-C (SIGINT) during training")
def _(tmp):
    workdir, out = _signal_after(tmp, signal.SIGINT, line="step 10/")
    checkpoints = os.listdir(os.path.join(workdir, "checkpoints"))
    clean = not any("tmp" in name for name in checkpoints)
    again = run(main_argv(workdir), tmp)
    ok = clean and again.code == 0 and "resuming at step" in again.stdout
    return judge(out, EXIT_INTERRUPTED, message="interrupted (SIGINT): checkpoint saved",
                 state_ok=ok, state="no partial checkpoint; the same command resumed")


# 5. every value checked before any compute

def _bad_value(tmp, override, message):
    workdir = os.path.join(tmp, "run")
    out = run(main_argv(workdir, override), tmp)
    return judge(out, EXIT_BAD_INPUT, message=message,
                 state_ok=not os.path.exists(workdir), state="workdir not created")


_SUITE_OVERRIDES = ("--config.sam.rho=inf", "--config.method=adam")
for _override, _message in [
        ("--config.sharpness.num_iterations=3", "sharpness.num_iterations=3 must be"),
        ("--config.sam.rho=inf", "sam.rho=inf must be a finite number"),
        ("--config.optimizer.momentum=-1", "optimizer.momentum=-1.0 must be"),
        ("--config.label_noise_seed=-1", "label_noise_seed=-1 must be"),
        ("--config.optimizer.learning_rate=nan", "optimizer.learning_rate=nan must be"),
        ("--config.num_steps=0", "num_steps=0 must be"),
        ("--config.sam.examples_per_perturbation=0", "examples_per_perturbation=0"),
        ("--config.randaugment.magnitude=-3", "randaugment.magnitude=-3 must be"),
        ("--config.method=adam", "unknown method 'adam'")]:
    # In the suite: two of them (test_validate checks every message in-process).
    case("5 values", f"`{_override}`", in_suite=_override in _SUITE_OVERRIDES)(
        lambda tmp, o=_override, m=_message: _bad_value(tmp, o, m))


@case("5 values", "a batch larger than the data set, then the corrected command", in_suite=False)
def _(tmp):
    workdir = os.path.join(tmp, "run")
    out = run(main_argv(workdir, "--config.batch_size=4096",
                        "--config.eval_batch_size=4096"), tmp)
    again = run(main_argv(workdir), tmp)
    return judge(out, EXIT_BAD_INPUT, message="larger than the dataset",
                 state_ok=again.code == 0 and results_ok(workdir),
                 state="the corrected command then ran")


@case("5 values", "`analyze --landscape_range=nan`")
def _(tmp):
    workdir = finished_run(tmp)
    out = run(module("sam_jax.analyze", f"--workdir={workdir}",
                     "--landscape_range=nan"), tmp)
    return judge(out, EXIT_BAD_INPUT, message="--landscape_range=nan must be",
                 state_ok=not os.path.exists(os.path.join(workdir, "analysis.json")),
                 state="no analysis.json")


# 6. every CLI error: one line, exit 2

def _cli_error(tmp, argv, message, workdir=None):
    out = run(argv, tmp)
    ok = workdir is None or not os.path.exists(workdir)
    return judge(out, EXIT_BAD_INPUT, message=message, state_ok=ok)


for _args, _message in [
        (("--config.sam.rh0=0.1",), "unknown config key sam.rh0; did you mean sam.rho?"),
        (("--config.batch_size=abc",), "batch_size=abc"),
        (("--distributed=yes",), "--distributed=yes"),
        (("stray_argument",), "unexpected argument 'stray_argument'")]:
    case("6 CLI", f"main `{' '.join(_args)}`")(
        lambda tmp, a=_args, m=_message: _cli_error(
            tmp, main_argv(os.path.join(tmp, "run"), *a), m, os.path.join(tmp, "run")))


@case("6 CLI", "main with a missing config file")
def _(tmp):
    return _cli_error(tmp, [sys.executable, "-m", "sam_jax.main", "--config=nope.py",
                            f"--workdir={tmp}/run"], "config file 'nope.py' does not exist")


@case("6 CLI", "main with a config file with a syntax error")
def _(tmp):
    path = os.path.join(tmp, "broken.py")
    with open(path, "w") as f:
        f.write("def get_config(arg)\n    return None\n")
    return _cli_error(tmp, [sys.executable, "-m", "sam_jax.main", f"--config={path}",
                            f"--workdir={tmp}/run"], "is not valid Python")


@case("6 CLI", "main with an unknown config ARG (quickstart.py:bogus)")
def _(tmp):
    return _cli_error(tmp, [sys.executable, "-m", "sam_jax.main",
                            "--config=configs/quickstart.py:bogus",
                            f"--workdir={tmp}/run"], "unknown config arg 'bogus'")


@case("6 CLI", "a workdir that is a file")
def _(tmp):
    path = os.path.join(tmp, "a_file")
    with open(path, "w") as f:
        f.write("x")
    return _cli_error(tmp, main_argv(path), "is a file, not a directory")


@case("6 CLI", "a workdir on a read-only file system")
def _(tmp):
    directory = read_only_directory(tmp)
    if directory is None:
        return "skipped", "cannot make a read-only directory here"
    try:
        return _cli_error(tmp, main_argv(os.path.join(directory, "run")),
                          "cannot be written")
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", directory], capture_output=True)


@case("6 CLI", "reproduce with a --root that is a file")
def _(tmp):
    path = os.path.join(tmp, "a_file")
    open(path, "w").close()
    return _cli_error(tmp, module("sam_jax.reproduce", "launch",
                                  "--table=cpu_scale.label_noise", f"--root={path}",
                                  "--dry_run"), "is a file, not a directory")


@case("6 CLI", "reproduce with a sweep file with a syntax error")
def _(tmp):
    path = os.path.join(tmp, "sweep.py")
    with open(path, "w") as f:
        f.write("CONFIG = (\n")
    return _cli_error(tmp, module("sam_jax.reproduce", "sweep", f"--sweep={path}",
                                  f"--root={tmp}/runs", "--dry_run"),
                      "is not valid Python")


@case("6 CLI", "reproduce collect --plot into a missing directory")
def _(tmp):
    return _cli_error(tmp, module("sam_jax.reproduce", "collect",
                                  "--table=cpu_scale.label_noise", f"--root={tmp}",
                                  f"--plot={tmp}/missing/plot.png"), "does not exist")


@case("6 CLI", "reproduce collect on a root that does not exist")
def _(tmp):
    return _cli_error(tmp, module("sam_jax.reproduce", "collect",
                                  "--table=cpu_scale.label_noise",
                                  f"--root={tmp}/nowhere"), "does not exist")


@case("6 CLI", "benchmark with an output path it cannot write (checked first)")
def _(tmp):
    path = os.path.join(tmp, "a_file")
    open(path, "w").close()
    start = time.monotonic()
    out = run(module("sam_jax.benchmark", "--cases=methods",
                     f"--json_out={path}/results.json"), tmp)
    verdict = judge(out, EXIT_BAD_INPUT, message="--json_out=",
                    state_ok=time.monotonic() - start < 120,
                    state="before any timing")
    return verdict


@case("6 CLI", "`python -m sam_jax.models --bogus`")
def _(tmp):
    return _cli_error(tmp, module("sam_jax.models", "--bogus"), "bogus")


@case("6 CLI", "analyze on a run whose checkpoints are all damaged")
def _(tmp):
    workdir = finished_run(tmp)
    for root, _, files in os.walk(os.path.join(workdir, "checkpoints")):
        for name in files:
            if os.path.getsize(os.path.join(root, name)) > 1000:
                os.truncate(os.path.join(root, name), 100)
    out = run(module("sam_jax.analyze", f"--workdir={workdir}", "--what=hessian",
                     "--num_examples=32", "--batch_size=32", "--m=8"), tmp)
    return judge(out, EXIT_BAD_INPUT, message="cannot be read")


@case("6 CLI", "resume with the latest checkpoint's arrays damaged", in_suite=False)
def _(tmp):
    workdir = finished_run(tmp)
    os.remove(os.path.join(workdir, "results.json"))
    for root, _, files in os.walk(os.path.join(workdir, "checkpoints", "20")):
        for name in files:
            if os.path.getsize(os.path.join(root, name)) > 1000:
                os.truncate(os.path.join(root, name), 100)
    out = run(main_argv(workdir), tmp)
    moved = os.path.isdir(os.path.join(workdir, "checkpoints_corrupt", "20"))
    return judge(out, EXIT_OK, state_ok=moved and results_ok(workdir),
                 state="one warning; moved aside; resumed from step 10")


# 7. issue 33: the last tracebacks

def _damage_array_files(workdir) -> None:
    """Every array data file (orbax's OCDBT `d/` files) of every checkpoint
    cut in half: the metadata reads, the arrays do not."""
    for root, _, files in os.walk(os.path.join(workdir, "checkpoints")):
        if os.path.basename(root) == "d":
            for name in files:
                os.truncate(os.path.join(root, name),
                            os.path.getsize(os.path.join(root, name)) // 2)


@case("7 issue 33", "every checkpoint's arrays cut in half, then the same command",
      in_suite=False)
def _(tmp):
    workdir = finished_run(tmp)
    with open(os.path.join(workdir, "results.json")) as f:
        before = json.load(f)
    _damage_array_files(workdir)
    out = run(main_argv(workdir), tmp)
    moved = sorted(os.listdir(os.path.join(workdir, "checkpoints_corrupt")))
    with open(os.path.join(workdir, "results.json")) as f:
        after = json.load(f)
    same = all(after[k] == before[k] for k in ("test_error", "test_loss", "steps"))
    warnings = [l for l in out.stderr.splitlines() if l.startswith("warning: ")]
    verdict, what = judge(out, EXIT_OK, state_ok=moved == ["10", "20"] and same,
                          state="both moved aside, retrained, the same results")
    if verdict == "good" and len(warnings) != 2:
        verdict, what = "noisy", what + f" ({len(warnings)} warnings)"
    return verdict, what


@case("7 issue 33", "analysis on a run whose checkpoints' arrays are cut in half")
def _(tmp):
    workdir = finished_run(tmp)
    _damage_array_files(workdir)
    out = run(module("sam_jax.analysis", f"--workdir={workdir}", "--what=msharpness",
                     "--num_examples=32", "--batch_size=32", "--m=8"), tmp)
    return judge(out, EXIT_BAD_INPUT, message="cannot be read",
                 state_ok=not os.path.exists(os.path.join(workdir, "analysis.json")),
                 state="no analysis.json")


@case("7 issue 33", "an empty --workdir=")
def _(tmp):
    return _cli_error(tmp, main_argv(""), "workdir '' is empty")


def _sweep_file(tmp, body):
    path = os.path.join(tmp, "sweep.py")
    with open(path, "w") as f:
        f.write(f"CONFIG = 'configs/quickstart.py'\n\n\ndef get_sweep():\n    {body}\n")
    return path


@case("7 issue 33", "a sweep file whose get_sweep() raises")
def _(tmp):
    sweep = _sweep_file(tmp, "return [{'sam.rho': r} for r in RHOS]")
    return _cli_error(tmp, module("sam_jax.reproduce", "sweep", f"--sweep={sweep}",
                                  f"--root={tmp}/runs", "--launcher=local"),
                      "get_sweep() raised NameError", f"{tmp}/runs")


@case("7 issue 33", "a sweep whose second point has sam.rho=-1 (local launcher)")
def _(tmp):
    # Tiny points: without the check, the first one trains (as it did).
    tiny = "'num_steps': 2, 'model.name': 'wrn10_1', 'batch_size': 32"
    sweep = _sweep_file(tmp, f"return [{{'sam.rho': 0.05, {tiny}}}, "
                        f"{{'sam.rho': -1.0, {tiny}}}]")
    return _cli_error(tmp, module("sam_jax.reproduce", "sweep", f"--sweep={sweep}",
                                  f"--root={tmp}/runs", "--launcher=local"),
                      "sam.rho=-1.0 must be a finite number >= 0 (or a schedule); "
                      "nothing launched",
                      f"{tmp}/runs")


@case("7 issue 33", "--launcher=slurm on a machine without sbatch")
def _(tmp):
    sweep = _sweep_file(tmp, "return [{'sam.rho': 0.05}]")
    out = run(module("sam_jax.reproduce", "sweep", f"--sweep={sweep}",
                     f"--root={tmp}/runs", "--launcher=slurm"), tmp,
              env={"PATH": os.path.dirname(sys.executable)})
    written = all(os.path.getsize(os.path.join(tmp, "runs", "slurm", name)) > 0
                  for name in ("sweep.sbatch", "sweep.commands.tsv"))
    return judge(out, 1, message="are written and complete", state_ok=written,
                 state="the .sbatch and .commands.tsv written")


def _fashion_mnist_dir(tmp, raw: bool) -> str:
    """Fashion-MNIST-shaped IDX files (64 train, 32 test examples); the train
    images cut short: a gzip cut in half, or (raw) an un-gzipped file."""
    import gzip
    import struct
    import numpy as np
    directory = os.path.join(tmp, "fmnist")
    os.makedirs(directory)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 64), ("t10k", 32)):
        for kind, shape in (("images-idx3-ubyte", (count, 28, 28)),
                            ("labels-idx1-ubyte", (count,))):
            array = rng.integers(0, 10 if len(shape) == 1 else 256, shape, np.uint8)
            data = (bytes([0, 0, 8, len(shape)]) + struct.pack(f">{len(shape)}i", *shape)
                    + array.tobytes())
            name = f"{prefix}-{kind}"
            if raw and name == "train-images-idx3-ubyte":
                path = os.path.join(directory, name)
            else:
                path, data = os.path.join(directory, name + ".gz"), gzip.compress(data)
            with open(path, "wb") as f:
                f.write(data[:len(data) // 2] if name == "train-images-idx3-ubyte"
                        else data)
    return directory


for _raw, _what in ((False, "a train-images .gz cut in half"),
                    (True, "an un-gzipped train-images file cut short")):
    case("7 issue 33", f"Fashion-MNIST with {_what}")(
        lambda tmp, raw=_raw: _judge_workdir_untouched(tmp, run(
            main_argv(os.path.join(tmp, "run"), "--config.dataset=fashion_mnist"), tmp,
            env={"SAM_JAX_FASHION_MNIST_DIR": _fashion_mnist_dir(tmp, raw)}),
            "replace it with a whole copy"))


def _judge_workdir_untouched(tmp, out, message):
    return judge(out, EXIT_BAD_INPUT, message=message,
                 state_ok=not os.path.exists(os.path.join(tmp, "run")),
                 state="workdir not created")


@case("7 issue 33", "SWA from start_fraction=0 on a run shorter than one epoch")
def _(tmp):
    out = run(main_argv(os.path.join(tmp, "run"), "--config.swa.start_fraction=0"), tmp)
    return _judge_workdir_untouched(tmp, out, "before its first epoch (40 steps)")


@case("7 issue 33", "--config.data_dir=<a regular file> with the digits")
def _(tmp):
    path = os.path.join(tmp, "a_file")
    open(path, "w").close()
    return _judge_workdir_untouched(
        tmp, run(main_argv(os.path.join(tmp, "run"), f"--config.data_dir={path}"), tmp),
        "is a file, not a directory")


@case("7 issue 33", "--config.grad_accum_steps=4 with m unset")
def _(tmp):
    out = run(main_argv(os.path.join(tmp, "run"), "--config.grad_accum_steps=4"), tmp)
    return _judge_workdir_untouched(tmp, out, "m is unset")


@case("7 issue 33", "config.json deleted, another model: refused before the data load")
def _(tmp):
    workdir = finished_run(tmp)
    os.remove(os.path.join(workdir, "config.json"))
    before = listing(workdir)
    start = time.monotonic()
    out = run(main_argv(workdir, "--config.model.name=wrn10_2"), tmp)
    seconds = time.monotonic() - start
    # (The restore refused it too, after the data load and the model's start,
    # saying "checkpoint 20 ... does not fit this config".)
    return judge(out, EXIT_BAD_INPUT, message="holds a run with a different config "
                 "(model.name 'wrn10_1' -> 'wrn10_2'", state_ok=listing(workdir) == before,
                 state=f"nothing touched; refused in {seconds:.0f} s, before the data load")


# ------------------------------------------------------------------ running

# The script-only cases are the suite's slow ones too (SAM_JAX_SLOW_TESTS=1).
@pytest.mark.parametrize("fault", [
    c if c.in_suite else pytest.param(c, marks=pytest.mark.slow) for c in CASES],
    ids=[c.name for c in CASES])
def test_fault(fault, tmp_path, fault_table):
    verdict, what = fault.run(str(tmp_path))
    if verdict == "skipped":
        pytest.skip(what)
    assert verdict == "good", what
    fault_table((fault.name, what.replace(str(tmp_path), "TMP")))


def _main():
    import argparse
    import tempfile
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="markdown table to write")
    parser.add_argument("--only", default="", help="run only the cases whose class "
                        "starts with this (e.g. '7 issue 33')")
    args = parser.parse_args()
    counts = {"good": 0, "noisy": 0, "bad": 0, "skipped": 0}
    rows = []
    cases = [c for c in CASES if c.klass.startswith(args.only)]
    command = (f"python tests/test_faults_cli.py --out={args.out}"
               + (f" --only='{args.only}'" if args.only else ""))
    with tempfile.TemporaryDirectory() as root:
        for number, fault in enumerate(cases):
            tmp = os.path.join(root, f"case{number}")
            os.makedirs(tmp)
            start = time.monotonic()
            verdict, what = fault.run(tmp)
            counts[verdict] += 1
            rows.append(f"| {fault.klass} | {fault.name} | {verdict} | "
                        f"{what.replace(tmp, 'TMP').replace('|', '/')} |")
            print(f"[{time.monotonic() - start:5.0f} s] {verdict:5s} {fault.name}",
                  flush=True)
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    with open(args.out, "w") as f:
        f.write(f"{len(cases)} cases: {summary} (`{command}`)\n\n"
                "| class | case | verdict | what happened |\n|---|---|---|---|\n"
                + "\n".join(rows) + "\n")
    print(summary)


if __name__ == "__main__":
    _main()
