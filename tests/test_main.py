"""python -m sam_jax.main as a process: bad input, and faults: preemption
(SIGTERM), SIGKILL at any point, a kill during a checkpoint write, corrupt
checkpoints, a reused workdir, non-finite losses.

Each kill test runs the real command in a subprocess and compares the
restarted run with an uninterrupted one: final parameters bitwise equal, same
metrics. With SAM_JAX_FAULT_TABLE=PATH, the rows recorded here become the
README's fault table:

    SAM_JAX_FAULT_TABLE=experiments/faults.md python -m pytest -q -n 0 tests
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from helpers import REPO
from helpers import load_config
from helpers import truncate_files
from sam_jax import checkpoint
from sam_jax import steps
from sam_jax import train
from sam_jax.models import get_model
from sam_jax.preemption import EXIT_PREEMPTED

# Subprocess runs use 2 devices: cheaper to start than 8, still data-parallel.
SUBPROCESS_DEVICES = 2
TINY_RUN = [
    "--config=configs/quickstart.py", "--config.model.name=wrn10_1",
    "--config.num_epochs=2", "--config.batch_size=64",
    "--config.optimizer.learning_rate=0.1", "--config.log_every_steps=5",
    "--config.eval_every_epochs=1", "--config.checkpoint_every_steps=10",
    "--config.label_noise=0.2"]
TOTAL_STEPS = 2 * (1297 // 64)  # 40


def command(workdir, *extra):
    return [sys.executable, "-u", "-m", "sam_jax.main", f"--workdir={workdir}",
            *TINY_RUN, *extra]


def environment(tmp_path):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={SUBPROCESS_DEVICES}"
    env["TFDS_DATA_DIR"] = str(tmp_path / "tfds")  # the digits build there
    return env


class Started:
    """A training subprocess whose stdout is read line by line; its stderr goes
    to a file (a pipe nobody reads could fill up and stall the child)."""

    def __init__(self, workdir, tmp_path):
        self.stderr_path = tmp_path / f"stderr_{time.monotonic_ns()}.txt"
        self._stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(command(workdir), cwd=REPO,
                                     env=environment(tmp_path),
                                     stdout=subprocess.PIPE, stderr=self._stderr,
                                     text=True)

    def wait_for_line(self, prefix):
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return line
        raise AssertionError(f"never printed {prefix!r}: {self.stderr()[-2000:]}")

    def finish(self, sig=None, timeout=300):
        if sig is not None:
            self.proc.send_signal(sig)
        self.proc.stdout.read()
        self.proc.wait(timeout=timeout)
        self._stderr.close()
        return self.proc.returncode

    def stderr(self):
        if not self._stderr.closed:
            self._stderr.flush()
        return self.stderr_path.read_text()


def run(workdir, tmp_path, *extra):
    return subprocess.run(command(workdir, *extra), cwd=REPO, env=environment(tmp_path),
                          capture_output=True, text=True, timeout=600)


def final_state(workdir, config=None):
    config = config or get_config()
    model = get_model(config.model.name, 10)
    target = steps.initial_state(config.seed, model,
                                 train.training_chain(config, 1).tx, (8, 8, 1))
    return checkpoint.restore_latest(str(workdir), target)


def get_config():
    config = load_config("configs/quickstart.py")
    config.model.name = "wrn10_1"
    return config


def metrics_rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    for row in rows:  # wall-clock, differs by nature
        row.pop("steps_per_second", None)
        row.pop("train_seconds", None)
    return rows


def same_run(a, b) -> bool:
    """Final parameters bitwise equal, same results and metric rows."""
    # Everything but the wall-clock seconds.
    leaves_a = jax.tree_util.tree_leaves(final_state(a).replace(train_seconds=0))
    leaves_b = jax.tree_util.tree_leaves(final_state(b).replace(train_seconds=0))
    params_equal = all(np.array_equal(x, y) for x, y in zip(leaves_a, leaves_b))
    with open(os.path.join(a, "results.json")) as f, \
            open(os.path.join(b, "results.json")) as g:
        results_a, results_b = json.load(f), json.load(g)
    results_a.pop("train_seconds"), results_b.pop("train_seconds")
    results_equal = results_a == results_b
    return params_equal and results_equal and metrics_rows(a) == metrics_rows(b)


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("override, message", [
    ("--config.model.name=resnet9", "unknown model 'resnet9'; allowed:"),
    ("--config.sam.rho=-0.1", "sam.rho=-0.1 must be a finite number >= 0"),
    ("--config.batch_size=100", "batch_size=100 must be a positive multiple of the "
                                "device count 8"),
    ("--config.sam.examples_per_perturbation=3",
     "sam.examples_per_perturbation=3 must divide the per-device batch 8"),
    ("--config.label_noise=1.0", "label_noise=1.0 must be a finite number in [0, 1)"),
    ("--config.dataset=cifar10", "dataset 'cifar10' is not prepared"),
    ("--config.dataset=mnist", "unknown dataset 'mnist'; allowed:"),
    ("--config.augmentation=mixup", "unknown augmentation 'mixup' for digits; allowed:"),
    ("--config.optimizer.name=lamb", "unknown optimizer 'lamb'; allowed:"),
])
def test_bad_input_exits_2_with_one_line_and_no_workdir(tmp_path, override, message,
                                                       fault_table):
    workdir = tmp_path / "run"
    env = dict(os.environ, TFDS_DATA_DIR=str(tmp_path / "tfds"))
    proc = subprocess.run(
        [sys.executable, "-m", "sam_jax.main", "--config=configs/quickstart.py",
         f"--workdir={workdir}", override],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    error_lines = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
    assert len(error_lines) == 1 and message in error_lines[0], proc.stderr[-2000:]
    assert not workdir.exists()
    shown = error_lines[0].replace(str(tmp_path), "TMP")  # the table is machine-free
    fault_table((f"`{override}`", f"exit code {proc.returncode}, workdir not created: "
                 f"`{shown}`"))


# ---------------------------------------------------------------- kills

@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """One uninterrupted run every interrupted run is compared with."""
    tmp_path = tmp_path_factory.mktemp("reference")
    workdir = tmp_path / "run"
    proc = run(workdir, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def test_sigterm_saves_exits_75_and_resumes_exactly(reference_run, tmp_path,
                                                    fault_table):
    workdir = tmp_path / "run"
    child = Started(workdir, tmp_path)
    child.wait_for_line("step 15/")  # between the checkpoints at 10 and 20
    returncode = child.finish(signal.SIGTERM)
    stderr = child.stderr()
    assert returncode == EXIT_PREEMPTED, stderr[-3000:]
    stopped_at = int(stderr.split("checkpoint saved at step ")[1].split(";")[0])
    assert 15 <= stopped_at < TOTAL_STEPS
    assert stopped_at in checkpoint.make_manager(str(workdir)).all_steps()
    resumed = run(workdir, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming at step {stopped_at}/" in resumed.stdout
    assert same_run(reference_run, workdir)
    fault_table((f"SIGTERM after step 15 (of {TOTAL_STEPS})",
                 f"checkpoint saved at step {stopped_at}, exit code {returncode}; "
                 "the same command resumed there and ended with bitwise-equal "
                 "parameters, results and metrics"))


def test_sigkill_loses_only_steps_since_the_checkpoint(reference_run, tmp_path,
                                                       fault_table):
    kill_after = "eval step 20"  # while the checkpoint of step 20 may be writing
    workdir = tmp_path / "run"
    child = Started(workdir, tmp_path)
    child.wait_for_line(kill_after)
    child.finish(signal.SIGKILL)
    steps_on_disk = checkpoint.make_manager(str(workdir)).all_steps()
    resumed = run(workdir, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    resumed_from = int(resumed.stdout.split("at step ")[1].split("/")[0]) \
        if "resuming at step" in resumed.stdout else 0
    assert resumed_from == max(steps_on_disk, default=0)
    assert same_run(reference_run, workdir)
    fault_table((f"SIGKILL after '{kill_after.strip()}'",
                 f"restarted from the last checkpoint (step {resumed_from}); "
                 "bitwise-equal final parameters, results and metrics"))


def test_kill_during_a_checkpoint_write_and_a_corrupt_checkpoint(
        reference_run, tmp_path, fault_table):
    """A write killed midway leaves a temporary directory, which is ignored; an
    unreadable complete checkpoint is moved aside and the previous one used."""
    workdir = tmp_path / "run"
    checkpoints = workdir / "checkpoints"
    child = Started(workdir, tmp_path)
    child.wait_for_line("step 25/")
    deadline = time.time() + 120  # checkpoints are written in the background
    while not (checkpoints / "20").exists():
        assert time.time() < deadline, "checkpoint 20 never completed"
        time.sleep(0.05)
    child.finish(signal.SIGKILL)
    assert sorted(p for p in os.listdir(checkpoints) if p.isdigit()) == ["10", "20"]
    # Damage the latest complete checkpoint (20): truncate its files.
    assert truncate_files(checkpoints / "20")
    # A second process starts writing a (large) checkpoint for step 30 into the
    # same directory and is killed while the write is in progress.
    writer = subprocess.Popen([sys.executable, "-c", f"""
import numpy as np, orbax.checkpoint as ocp
m = ocp.CheckpointManager({str(checkpoints)!r})
m.save(30, args=ocp.args.StandardSave({{'x': np.ones((64, 1024, 1024), np.float32)}}))
m.wait_until_finished()
"""], cwd=REPO, env=environment(tmp_path))
    deadline = time.time() + 120
    while not any("tmp" in p for p in os.listdir(checkpoints)):
        assert time.time() < deadline and writer.poll() is None, "no write seen"
        time.sleep(0.05)
    writer.kill()
    writer.wait()
    leftovers = sorted(p for p in os.listdir(checkpoints) if "tmp" in p)
    assert leftovers and not (checkpoints / "30").exists()

    resumed = run(workdir, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    warning = [l for l in resumed.stderr.splitlines()
               if l.startswith("warning: checkpoint at step 20")]
    assert len(warning) == 1
    assert "resuming at step 10/" in resumed.stdout
    assert (workdir / "checkpoints_corrupt" / "20").exists()  # kept, not deleted
    assert not any("tmp" in p for p in os.listdir(checkpoints))
    assert same_run(reference_run, workdir)
    fault_table(("SIGKILL during a checkpoint write",
                 f"the partial write ({leftovers[0]}) was ignored and removed on "
                 "restart"))
    fault_table(("latest complete checkpoint truncated on disk",
                 "one-line warning; moved to checkpoints_corrupt/ (kept); resumed "
                 "from the previous one (step 10) with bitwise-equal final parameters,"
                 " results and metrics"))


def test_workdir_with_another_config_is_refused_then_overwritten(reference_run,
                                                                 tmp_path,
                                                                 fault_table):
    workdir = tmp_path / "run"
    shutil.copytree(reference_run, workdir)
    before = {p: os.path.getmtime(os.path.join(r, p))
              for r, _, files in os.walk(workdir) for p in files}
    refused = run(workdir, tmp_path, "--config.sam.rho=0.2")
    assert refused.returncode == 2
    error = [l for l in refused.stderr.splitlines() if l.startswith("error: ")]
    assert len(error) == 1 and "different config (sam.rho 0.1 -> 0.2)" in error[0]
    after = {p: os.path.getmtime(os.path.join(r, p))
             for r, _, files in os.walk(workdir) for p in files}
    assert before == after  # nothing written
    overwritten = run(workdir, tmp_path, "--config.sam.rho=0.2", "--overwrite")
    assert overwritten.returncode == 0, overwritten.stderr[-3000:]
    assert json.load(open(workdir / "config.json"))["sam"]["rho"] == 0.2
    fault_table(("same workdir, different config (sam.rho 0.1 -> 0.2)",
                 f"refused with exit code {refused.returncode} and one line naming "
                 "the difference, no file touched; --overwrite started a new run"))


# ---------------------------------------------------------------- non-finite

def diverging_config(**overrides):
    config = get_config()
    # A checkpoint every step: there are good ones before the divergence.
    config.update(num_epochs=1, batch_size=64, log_every_steps=5,
                  checkpoint_every_steps=1, eval_every_epochs=1)
    config.optimizer.learning_rate = 1e4  # diverges within a few steps
    config.optimizer.grad_clip_norm = 0.0
    config.update(overrides)
    return config


def test_nonfinite_loss_stops_naming_the_step_and_keeps_good_checkpoint(
        tmp_path, fault_table):
    with pytest.raises(train.NonFiniteError) as error:
        train.train_and_evaluate(diverging_config(), str(tmp_path))
    message = str(error.value)
    assert "\n" not in message and "non-finite loss or gradient at step" in message
    first_bad = int(message.split("at step ")[1].split(";")[0])
    manager = checkpoint.make_manager(str(tmp_path))
    saved = manager.all_steps()
    assert saved and all(step <= first_bad for step in saved)
    # The checkpoint the message names was completed.
    assert f"the last good checkpoint, step {max(saved)} in" in message
    state = final_state(tmp_path, diverging_config()) if saved else None
    if state is not None:
        assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(
            state.params))
    fault_table(("learning rate 1e4 (loss becomes inf/NaN)",
                 f"stopped: '{message.split(' in ')[0]} ...'; checkpoints kept: "
                 f"{saved}, all finite"))


def test_skip_nonfinite_steps_finishes_with_finite_weights(tmp_path, fault_table):
    results = train.train_and_evaluate(
        diverging_config(skip_nonfinite_steps=True), str(tmp_path))
    assert results["skipped_steps"] > 0
    state = final_state(tmp_path, diverging_config())
    assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(state.params))
    fault_table(("learning rate 1e4 with skip_nonfinite_steps=True",
                 f"finished; {results['skipped_steps']} non-finite steps skipped, "
                 "weights finite"))
