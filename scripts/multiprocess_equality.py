"""A run split over several processes equals the run on one process, bit for bit.

  python scripts/multiprocess_equality.py --root=/tmp/mp_equality \
      [--layouts=2x2,4x1] [--steps=60] [--config=configs/quickstart.py:sam] \
      [--override=--config.model.name=wrn10_1 ...]

For each layout PxD (P processes of D CPU devices) it launches
`python -m sam_jax.main` as P processes with the variables `srun` sets
(SLURM_JOB_ID, SLURM_STEP_NODELIST=localhost, SLURM_NTASKS, SLURM_PROCID,
SLURM_LOCALID) and --distributed=yes, so jax.distributed.initialize() finds
the coordinator as under SLURM; gloo carries the collectives between them.
Each layout trains twice: uninterrupted, and SIGTERMed midway (every process,
once process 0 has logged a step) and relaunched with the same command. Both
must equal the reference, 1 process of P*D devices: metrics.jsonl (its
wall-clock fields aside), results.json (train_seconds aside) and the whole
final checkpoint (weights, BatchNorm statistics, optimizer state, counters),
compared bitwise. It also checks that the preempted processes all exit 75
after one checkpoint at one step, that the relaunch resumes there, and that
only process 0 writes the run's record (each process records the files it
writes in the workdir through a Python audit hook). One line per check;
exit code 1 if any fails.

tests/test_multiprocess.py runs the 2x2 preempted-and-resumed case (30 steps)
with these functions; this script is the longer version (60 steps by
default, both layouts, uninterrupted runs too). On 2 CPU cores it takes
about 15 minutes with the defaults.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# JAX's SLURM cluster puts the coordinator on port 61440 + job id % 4096.
PORT_BASE = 61440
# Wall-clock quantities, the only ones allowed to differ.
CLOCK_KEYS = ("steps_per_second", "train_seconds")
EXIT_PREEMPTED = 75

# Runs sam_jax.main after installing an audit hook that appends to a file the
# path (relative to the workdir) of every file the process opens for writing
# in the workdir or renames into it. argv: record file, workdir, main's args.
RECORDING_MAIN = r"""
import os, runpy, sys
record, workdir = open(sys.argv[1], "a"), os.path.realpath(sys.argv[2])
def relative(path):
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if isinstance(path, str):
        path = os.path.realpath(path)
        if path.startswith(workdir + os.sep):
            return path[len(workdir) + 1:]
def hook(event, args):
    if event == "open":
        path, mode, flags = args
        writes = (any(c in mode for c in "wax+") if mode else
                  bool(flags & (os.O_WRONLY | os.O_RDWR)))
        names = [relative(path)] if writes else []
    elif event in ("os.rename", "os.replace"):
        names = [relative(args[1])]
    else:
        return
    for name in names:
        if name:
            record.write(name + "\n")
            record.flush()
sys.addaudithook(hook)
sys.argv = ["sam_jax.main"] + sys.argv[3:]
runpy.run_module("sam_jax.main", run_name="__main__", alter_sys=True)
"""


def free_job_id() -> int:
    """A job id whose coordinator port is free here now."""
    for job_id in range(1000, 1000 + 4096):
        with socket.socket() as s:
            try:
                s.bind(("localhost", PORT_BASE + job_id % 4096))
                return job_id
            except OSError:
                continue
    raise RuntimeError("no free coordinator port")


def launch(workdir: str, num_processes: int, devices_per_process: int, args,
           records=None) -> list:
    """`python -m sam_jax.main ARGS --workdir=WORKDIR` as `num_processes`
    processes of `devices_per_process` CPU devices; their Popens (stdout and
    stderr together, as text). With `records` (a path per process), each
    process lists the files it writes in the workdir there."""
    job_id = free_job_id()
    processes = []
    for rank in range(num_processes):
        env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
                   PYTHONPATH=os.pathsep.join(
                       [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(
                           os.pathsep) if p]),
                   XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}")
        # (No JAX_COMPILATION_CACHE_DIR: with a warm cache, the processes of
        # a relaunch failed to set up gloo, "GetKeyValue() timed out".)
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
        main_args = list(args) + [f"--workdir={workdir}"]
        if num_processes > 1:
            env.update(SLURM_JOB_ID=str(job_id), SLURM_STEP_NODELIST="localhost",
                       SLURM_NTASKS=str(num_processes), SLURM_PROCID=str(rank),
                       SLURM_LOCALID=str(rank), JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo")
            main_args.append("--distributed=yes")
        if records is None:
            argv = [sys.executable, "-m", "sam_jax.main"] + main_args
        else:
            argv = [sys.executable, "-c", RECORDING_MAIN, str(records[rank]),
                    str(workdir)] + main_args
        processes.append(subprocess.Popen(argv, cwd=REPO, env=env, text=True,
                                          stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT))
    return processes


def finish(processes, timeout: float = 1200, already_read=None):
    """(return codes, outputs) once every process has ended, all of them
    killed if that takes more than `timeout` seconds in all (their codes are
    then -9); `already_read`: lines taken from process 0's output before."""
    deadline = time.monotonic() + timeout
    outputs = []
    try:
        for process in processes:
            try:
                output = process.communicate(
                    timeout=max(deadline - time.monotonic(), 1))[0]
            except subprocess.TimeoutExpired:
                for other in processes:
                    other.kill()
                output = process.communicate()[0] + f"\n[killed after {timeout:g} s]\n"
            outputs.append(output)
    finally:
        for process in processes:  # none left behind, whatever happened
            if process.poll() is None:
                process.kill()
                process.wait()
    if already_read:
        outputs[0] = "".join(already_read) + outputs[0]
    return [p.returncode for p in processes], outputs


def wait_for_line(process, prefix: str, timeout: float = 1200) -> list:
    """Lines of `process` up to the first that starts with `prefix`."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the run ended before a line {prefix!r}:\n"
                               + "".join(lines[-40:]))
        lines.append(line)
        if line.startswith(prefix):
            return lines
    raise RuntimeError(f"no line {prefix!r} within {timeout} s")


def preempt(processes, after_line: str, timeout: float = 1200):
    """SIGTERM to every process once process 0 prints a line starting with
    `after_line`; (return codes, outputs) once they have ended."""
    try:
        before = wait_for_line(processes[0], after_line, timeout)
    except RuntimeError:
        finish(processes, timeout)
        raise
    for process in processes:
        process.send_signal(signal.SIGTERM)
    return finish(processes, timeout, already_read=before)


def stopped_steps(outputs) -> list:
    """The step each process says it saved on SIGTERM (None: no such line)."""
    prefix = "stopped: preempted (SIGTERM): checkpoint saved at step "
    steps = []
    for output in outputs:
        found = [line[len(prefix):].split(";")[0] for line in output.splitlines()
                 if line.startswith(prefix)]
        steps.append(int(found[0]) if found else None)
    return steps


def saved_steps(workdir: str) -> list:
    directory = os.path.join(workdir, "checkpoints")
    return sorted(int(d) for d in os.listdir(directory) if d.isdigit())


def metrics(workdir: str) -> list:
    """metrics.jsonl's records without their wall-clock fields."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in CLOCK_KEYS}
                for line in f]


def results(workdir: str) -> dict:
    with open(os.path.join(workdir, "results.json")) as f:
        return {k: v for k, v in json.load(f).items() if k not in CLOCK_KEYS}


def final_state(workdir: str) -> dict:
    """The latest checkpoint as {path: numpy array}, train_seconds aside."""
    import jax
    from sam_jax import checkpoint
    tree = checkpoint.read_tree(workdir)
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves
            if "train_seconds" not in jax.tree_util.keystr(path)}


def differences(workdir: str, reference: str) -> list:
    """How the finished run in `workdir` differs from `reference` (bitwise):
    one line per difference, [] when there is none."""
    found = []
    got, want = metrics(workdir), metrics(reference)
    if len(got) != len(want):
        found.append(f"metrics.jsonl: {len(got)} records, the reference {len(want)}")
    for a, b in zip(got, want):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                found.append(f"metrics.jsonl step {b.get('step')} {b.get('split')} "
                             f"{key}: {a.get(key)!r}, the reference {b.get(key)!r}")
    got, want = results(workdir), results(reference)
    for key in sorted(set(got) | set(want)):
        if got.get(key) != want.get(key):
            found.append(f"results.json {key}: {got.get(key)!r}, the reference "
                         f"{want.get(key)!r}")
    got, want = final_state(workdir), final_state(reference)
    if sorted(got) != sorted(want):
        found.append("final checkpoint: another tree than the reference's")
    for path in sorted(set(got) & set(want)):
        a, b = got[path], want[path]
        if a.shape != b.shape or a.dtype != b.dtype:
            found.append(f"final checkpoint {path}: {a.dtype}{list(a.shape)}, the "
                         f"reference {b.dtype}{list(b.shape)}")
        elif not np.array_equal(a, b, equal_nan=True):
            gap = np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))
            found.append(f"final checkpoint {path}: max |difference| {gap:.3g}")
    return found


def written(records) -> list:
    """The set of workdir files each process recorded writing."""
    out = []
    for path in records:
        with open(path) as f:
            out.append(set(f.read().split()))
    return out


def record_keeping_problems(records) -> list:
    """Files that a process other than 0 wrote in the workdir, besides
    checkpoints (written together) and its own lock; and the record files
    process 0 did not write."""
    files = written(records)
    problems = [f"process 0 did not write {name}" for name in
                ("config.json", "metrics.jsonl") if name not in files[0]]
    for rank, names in enumerate(files[1:], start=1):
        problems += [f"process {rank} wrote {name}" for name in sorted(names)
                     if not name.startswith(("checkpoints/", f".lock.{rank}"))]
    return problems


class Checks:
    def __init__(self):
        self.failed = 0

    def __call__(self, ok: bool, what: str, details=()):
        print(f"{'PASS' if ok else 'FAIL'}: {what}", flush=True)
        if not ok:
            self.failed += 1
            for line in list(details)[:10]:
                print(f"    {line}", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True,
                        help="directory for the runs (must not exist, or be empty)")
    parser.add_argument("--layouts", default="2x2,4x1",
                        help="PxD, comma-separated: P processes of D devices")
    parser.add_argument("--config", default="configs/quickstart.py:sam")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--override", action="append", default=None,
                        help="extra trainer flags (repeatable); default: "
                             "--config.model.name=wrn10_1 --config.batch_size=16")
    args = parser.parse_args(argv)
    if os.path.exists(args.root) and os.listdir(args.root):
        parser.error(f"--root={args.root} is not empty")
    layouts = [tuple(int(n) for n in layout.split("x"))
               for layout in args.layouts.split(",")]
    devices = {p * d for p, d in layouts}
    if len(devices) != 1:
        parser.error("every layout must have the same number of devices in all")
    overrides = args.override or ["--config.model.name=wrn10_1",
                                  "--config.batch_size=16"]
    log_every = max(args.steps // 12, 1)
    trainer_args = [f"--config={args.config}", f"--config.num_steps={args.steps}",
                    f"--config.log_every_steps={log_every}",
                    f"--config.checkpoint_every_steps={args.steps}"] + overrides
    os.makedirs(args.root, exist_ok=True)
    commit = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip()
    print(f"# python scripts/multiprocess_equality.py {' '.join(argv or sys.argv[1:])}\n"
          f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, commit {commit or 'unknown'}, "
          f"{os.cpu_count()} CPUs", flush=True)
    check = Checks()

    def timed(what, processes, **kwargs):
        start = time.monotonic()
        codes, outputs = finish(processes, **kwargs)
        print(f"{what}: exit codes {codes}, {time.monotonic() - start:.0f} s", flush=True)
        return codes, outputs

    total_devices = devices.pop()
    reference = os.path.join(args.root, f"1x{total_devices}")
    codes, outputs = timed(f"reference, 1x{total_devices}",
                           launch(reference, 1, total_devices, trainer_args))
    check(codes == [0], "the reference run finished", outputs[0].splitlines()[-10:])
    if codes != [0]:
        return 1
    for processes_count, devices_count in layouts:
        name = f"{processes_count}x{devices_count}"
        workdir = os.path.join(args.root, name)
        records = [os.path.join(args.root, f"{name}.writes.{r}")
                   for r in range(processes_count)]
        codes, outputs = timed(f"{name}, uninterrupted",
                               launch(workdir, processes_count, devices_count,
                                      trainer_args, records))
        check(codes == [0] * processes_count, f"{name}: every process finished",
              outputs[0].splitlines()[-10:])
        if codes == [0] * processes_count:
            check(not differences(workdir, reference),
                  f"{name}: bitwise equal to the reference", differences(workdir, reference))
            check(not record_keeping_problems(records),
                  f"{name}: only process 0 wrote the run's record",
                  record_keeping_problems(records))

        workdir = os.path.join(args.root, f"{name}_preempted")
        records = [[os.path.join(args.root, f"{name}_preempted.writes.{r}.{run}")
                    for r in range(processes_count)] for run in range(2)]
        start = time.monotonic()
        codes, outputs = preempt(launch(workdir, processes_count, devices_count,
                                        trainer_args, records[0]),
                                 f"step {log_every}/")
        print(f"{name}, SIGTERM after step {log_every}: exit codes {codes}, "
              f"{time.monotonic() - start:.0f} s", flush=True)
        steps = stopped_steps(outputs)
        check(codes == [EXIT_PREEMPTED] * processes_count,
              f"{name}: every process exited {EXIT_PREEMPTED}",
              [line for output in outputs for line in output.splitlines()[-5:]])
        check(len(set(steps)) == 1 and steps[0] is not None,
              f"{name}: all saved at one step ({steps})")
        check(os.path.isdir(os.path.join(workdir, "checkpoints")) and
              saved_steps(workdir) == steps[:1],
              f"{name}: that checkpoint is the only one")
        codes, outputs = timed(f"{name}, relaunched",
                               launch(workdir, processes_count, devices_count,
                                      trainer_args, records[1]))
        check(codes == [0] * processes_count, f"{name}: the relaunch finished",
              outputs[0].splitlines()[-10:])
        check(f"resuming at step {steps[0]}/" in outputs[0],
              f"{name}: it resumed at step {steps[0]}")
        if codes == [0] * processes_count:
            found = differences(workdir, reference)
            check(not found, f"{name}, preempted and resumed: bitwise equal to the "
                  "reference", found)
            problems = record_keeping_problems(records[0]) + record_keeping_problems(
                records[1])
            check(not problems, f"{name}, preempted and resumed: only process 0 "
                  "wrote the run's record", problems)
    print(f"{'all checks passed' if not check.failed else f'{check.failed} checks failed'}",
          flush=True)
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
