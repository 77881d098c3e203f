"""Launchers: run a table's runs here, as a SLURM array job, or on a TPU pod.

Every launcher runs the same command lines (`Run.argv`); a run that stops
resumes from its workdir when launched again, and a finished one (its workdir,
or its line in the root's run_outputs.jsonl) is skipped. When a run ends, its
line in run_outputs.jsonl is refreshed (the local launcher here; a SLURM task
at its end).
"""

import dataclasses
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from typing import Callable, Optional, Sequence

from sam_jax import workdir as workdir_lib
from sam_jax.errors import EXIT_PREEMPTED
from sam_jax.reproduce import collect
from sam_jax.reproduce import registry
from sam_jax.reproduce import run_outputs


def write_status(workdir: str, **fields) -> None:
    """status.json: the launcher's record of a run (collect reads it)."""
    os.makedirs(workdir, exist_ok=True)
    fields.update(host=socket.gethostname(), time=time.time())
    workdir_lib.write_json_atomic(workdir_lib.path(workdir, workdir_lib.STATUS_FILE),
                                  fields)


def pending_analyses(run: registry.Run, root: str) -> list[str]:
    analysis = collect.run_status(run, root).outputs.get("analysis", {})
    return [what for what in run.analyses if what not in analysis]


def is_trained(run: registry.Run, root: str) -> bool:
    """results.json reads, in the workdir or (without one) in the root's record."""
    return "results" in collect.run_status(run, root).outputs


def is_finished(run: registry.Run, root: str) -> bool:
    """Trained (results.json) and every analysis written."""
    return is_trained(run, root) and not pending_analyses(run, root)


class _TermForwarder:
    """While a run is in flight, SIGTERM to the launcher goes to the run (which
    saves a checkpoint and exits 75) and the launcher stops after it."""

    def __init__(self):
        self.child: Optional[subprocess.Popen] = None
        self.received = False

    def _handler(self, signum, frame):
        del signum, frame
        self.received = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)

    def __enter__(self):
        self._previous = signal.signal(signal.SIGTERM, self._handler)
        return self

    def __exit__(self, *exc):
        signal.signal(signal.SIGTERM, self._previous)
        return False


def _run_logged(argv: list[str], log_path: str, cwd: str, forwarder: _TermForwarder,
                echo: Callable[[str], None], env: Optional[dict] = None) -> int:
    """Runs argv, appending its output to log_path and echoing it; the exit code."""
    with open(log_path, "a") as log:
        log.write(f"$ {shlex.join(argv)}\n")
        log.flush()
        child = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, bufsize=1,
                                 env=env)
        forwarder.child = child
        try:
            for line in child.stdout:
                log.write(line)
                log.flush()
                echo(line.rstrip("\n"))
            return child.wait()
        finally:
            forwarder.child = None


COMPILATION_CACHE_DIR = ".jax_compilation_cache"


def compilation_cache_env(root: str) -> dict:
    """The runs' environment: JAX's persistent compilation cache under the root
    (unless the caller chose one), so runs that differ only in seed, label
    noise or a hyper-parameter the step takes as data skip XLA's compile
    (~10 s of every CPU run); the same executable, the same numbers."""
    env = dict(os.environ)
    env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(root, COMPILATION_CACHE_DIR))
    return env


def launch_local(runs: Sequence[registry.Run], root: str, repo: str, *,
                 python: str = sys.executable, dry_run: bool = False,
                 echo: Callable[[str], None] = print) -> dict[str, str]:
    """Runs `runs` one after another here; returns {run name: outcome}.

    Outcomes: skipped (finished before), done, preempted (exit 75: unfinished,
    the next launch resumes it), failed (any other non-zero exit, recorded in
    status.json). A failure does not stop the others; SIGTERM to the launcher
    stops it after the current run has saved its checkpoint.
    """
    outcomes = {}
    with _TermForwarder() as forwarder:
        for index, run in enumerate(runs):
            if forwarder.received:
                break
            workdir = run.workdir(root)
            trained = is_trained(run, root)
            analyses = pending_analyses(run, root) if trained else list(run.analyses)
            header = f"[{index + 1}/{len(runs)}] {run.name}"
            if trained and not analyses:
                echo(f"{header}: finished, skipped")
                outcomes[run.name] = "skipped"
                continue
            argvs = [] if trained else [run.argv(root, python)]
            argvs += [argv for argv in run.analysis_argvs(root, python)
                      if argv[-1].removeprefix("--what=") in analyses]
            if dry_run:
                echo(f"{header}: would run")
                for argv in argvs:
                    echo("  " + shlex.join(argv))
                outcomes[run.name] = "would run"
                continue
            echo(f"{header}: {'analysing' if trained else 'training'} in {workdir}")
            write_status(workdir, state="running", launcher="local", pid=os.getpid())
            started = time.time()
            code = 0
            try:
                for argv in argvs:
                    code = _run_logged(
                        argv, workdir_lib.path(workdir, workdir_lib.LAUNCH_LOG_FILE),
                        repo, forwarder, echo, env=compilation_cache_env(root))
                    if code:
                        break
            except KeyboardInterrupt:  # Ctrl-C reached the run too; it resumes later
                write_status(workdir, state="interrupted", launcher="local")
                run_outputs.refresh([workdir])
                raise
            elapsed_s = round(time.time() - started, 1)
            if code == 0:
                outcomes[run.name] = "done"
            elif code == EXIT_PREEMPTED:
                outcomes[run.name] = "preempted"
            else:
                outcomes[run.name] = "failed"
            write_status(workdir, state=outcomes[run.name], launcher="local",
                         exit_code=code, elapsed_s=elapsed_s, command=shlex.join(argv),
                         log=workdir_lib.path(workdir, workdir_lib.LAUNCH_LOG_FILE))
            run_outputs.refresh([workdir])
            echo(f"{header}: {outcomes[run.name]} (exit code {code}, {elapsed_s:.0f} s)")
    return outcomes


@dataclasses.dataclass(frozen=True)
class SlurmOptions:
    """#SBATCH resources of one array task (one run)."""
    partition: Optional[str] = None
    time: str = "24:00:00"
    nodes: int = 1
    tasks_per_node: int = 1  # processes per node; 1 drives all the node's GPUs
    gpus_per_node: int = 8
    cpus_per_task: Optional[int] = None
    max_parallel: Optional[int] = None  # array throttle: at most this many at once
    signal_seconds: int = 300  # SIGTERM this long before the time limit
    setup: str = ""  # shell lines before the run, e.g. "source .venv/bin/activate"
    extra: tuple[str, ...] = ()  # more #SBATCH options, e.g. "--account=abc"

    @property
    def processes(self) -> int:
        return self.nodes * self.tasks_per_node


def slurm_commands(runs: Sequence[registry.Run], root: str,
                   options: SlurmOptions) -> str:
    """The commands file: line i (from 0) is array task i,
    `WORKDIR<TAB>TRAINING COMMAND<TAB>ANALYSIS COMMANDS (may be empty)`."""
    lines = []
    for run in runs:
        argv = run.argv(root)
        if options.processes > 1:  # jax.distributed.initialize() reads SLURM's env
            argv.append("--distributed=yes")
        after = " && ".join(shlex.join(a) for a in run.analysis_argvs(root))
        lines.append("\t".join([run.workdir(root), shlex.join(argv), after]))
    return "\n".join(lines) + "\n"


def slurm_script(job_name: str, num_runs: int, commands_path: str, repo: str,
                 log_dir: str, options: SlurmOptions) -> str:
    """An sbatch array script: task i runs line i of `commands_path` with srun.

    Exit 75 (the run saved a checkpoint on SIGTERM: preemption or the time
    limit, signalled `signal_seconds` early) requeues the task, which resumes;
    any other non-zero exit is recorded in the run's status.json.
    """
    array = f"0-{num_runs - 1}" + (f"%{options.max_parallel}" if options.max_parallel
                                   else "")
    sbatch = [f"--job-name={job_name}", f"--array={array}"]
    if options.partition:
        sbatch.append(f"--partition={options.partition}")
    sbatch += [f"--time={options.time}", f"--nodes={options.nodes}",
               f"--ntasks-per-node={options.tasks_per_node}"]
    if options.gpus_per_node:
        sbatch.append(f"--gpus-per-node={options.gpus_per_node}")
    if options.cpus_per_task:
        sbatch.append(f"--cpus-per-task={options.cpus_per_task}")
    sbatch += ["--requeue", "--open-mode=append",
               f"--signal=B:TERM@{options.signal_seconds}",
               f"--output={log_dir}/%x_%A_%a.out"]
    sbatch += list(options.extra)
    header = ["#!/bin/bash"] + [f"#SBATCH {line}" for line in sbatch]
    q = shlex.quote
    body = f"""
# One array task per run: line $SLURM_ARRAY_TASK_ID (from 0) of the commands file.
set -uo pipefail
cd {q(repo)}
{options.setup}
COMMANDS={q(commands_path)}
IFS=$'\\t' read -r WORKDIR TRAIN AFTER < <(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" "$COMMANDS")
TASK="${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
mkdir -p "$WORKDIR"
write_status() {{  # state exit_code: the run's status.json, read by collect
  printf '{{"state": "%s", "exit_code": %s, "launcher": "slurm", "job": "%s"}}\\n' \\
    "$1" "$2" "$TASK" > "$WORKDIR/{workdir_lib.STATUS_FILE}.tmp"
  mv -f "$WORKDIR/{workdir_lib.STATUS_FILE}.tmp" "$WORKDIR/{workdir_lib.STATUS_FILE}"  # atomic
}}
finished() {{  # results.json reads: what collect and the local launcher call done
  python -c 'import json, sys; assert isinstance(json.load(open(sys.argv[1])), dict)' \\
    "$WORKDIR/{workdir_lib.RESULTS_FILE}" 2>/dev/null
}}

STATUS=0
if ! finished; then
  # SIGTERM (preemption, or the time limit soon) goes to the run, which saves a
  # checkpoint and exits {EXIT_PREEMPTED}; the task is then requeued and resumes. It goes
  # through SLURM to the job step: srun turns a SIGTERM of its own into SIGKILL.
  # In the background: while SLURM ends the job itself, scancel blocks until KillWait.
  # $TASK, not $SLURM_JOB_ID: one task's job id is the array's, which means every task.
  TERMINATING=0
  forward_term() {{ TERMINATING=1; scancel --signal=TERM "$TASK" & }}
  trap forward_term TERM
  write_status running null
  eval "TRAIN_ARGS=($TRAIN)"
  srun "${{TRAIN_ARGS[@]}}" &
  CHILD=$!
  wait "$CHILD"; STATUS=$?
  # The trap cuts wait short (status > 128): wait on while the run saves.
  while (( STATUS > 128 && TERMINATING )); do
    TERMINATING=0
    wait "$CHILD"; STATUS=$?
  done
fi

if (( STATUS == {EXIT_PREEMPTED} )); then
  write_status preempted {EXIT_PREEMPTED}
  # Still RUNNING: the time limit is near, or a signal came: requeue. Otherwise
  # SLURM is ending the task and its own choice stands: requeued (preemption,
  # scontrol requeue, a node failure) or cancelled (scancel, which signals too).
  STATE=$(scontrol show job "$TASK" | grep -o "JobState=[A-Z_]*")
  if [[ -z "$STATE" || "$STATE" == JobState=RUNNING ]]; then
    echo "preempted: requeueing $TASK"
    scontrol requeue "$TASK"
  else
    echo "preempted: not requeued here, SLURM is ending $TASK ($STATE)"
  fi
elif (( STATUS != 0 )); then
  write_status failed "$STATUS"
elif [[ -n "$AFTER" ]]; then
  eval "$AFTER"; STATUS=$?
  if (( STATUS == 0 )); then write_status done 0; else write_status failed "$STATUS"; fi
else
  write_status done 0
fi
# The run's line in the root's run_outputs.jsonl (what a study commits).
python -m sam_jax.reproduce.run_outputs "$WORKDIR" || echo "run_outputs.jsonl not refreshed"
exit "$STATUS"
"""
    return "\n".join(header) + "\n" + body


TPU_PYTHON = "python3"  # TPU VM images have python3, not python


def tpu_command(run: registry.Run, root: str, tpu_name: str, zone: str,
                repo_dir: str) -> list[str]:
    """gcloud ssh lines: train on every worker of the pod at once, then the
    analyses on worker 0.

    --distributed=yes: on a TPU VM the pod's workers are in the VM metadata,
    which jax.distributed.initialize() reads, not in the environment that
    --distributed=auto looks at. The analyses (one process) run on worker 0's
    CPU: a program that uses a multi-host slice's TPUs must run on every worker.
    """
    def gcloud(worker: str, command: str) -> str:
        escaped = (command.replace("\\", "\\\\").replace('"', '\\"')
                   .replace("$", "\\$").replace("`", "\\`"))
        return (f"gcloud compute tpus tpu-vm ssh {tpu_name} --zone={zone} "
                f"--worker={worker} --command=\"cd {repo_dir} && {escaped}\"")
    train = run.argv(root, TPU_PYTHON) + ["--distributed=yes"]
    lines = [gcloud("all", shlex.join(train))]
    lines += [gcloud("0", "JAX_PLATFORMS=cpu " + shlex.join(argv))
              for argv in run.analysis_argvs(root, TPU_PYTHON)]
    return lines
