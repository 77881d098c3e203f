"""Runs the quickstart on N virtual CPU devices again and again; counts aborts.

  python scripts/stress_multidevice.py --repeats=10 --num_steps=400 \
      --json_out=experiments/multidevice_cpu/after.json

Each repeat is a fresh `python -m sam_jax.main --config=CONFIG --workdir=TMP
--config.num_steps=NUM_STEPS` with XLA_FLAGS=--xla_force_host_platform_device_count=
DEVICES, one after another (never two at once: the bug is about threads, and
a second run would change the load). A run passes when it exits 0 and prints
its final error; it aborted when it died of a signal (XLA's rendezvous
time-out is SIGABRT) or XLA logged a rendezvous time-out. --xla_cpu_threads=xla
runs without sam_jax/cpu_devices.py's setting (how the trainer ran before the
fix).

The bug it hunts (issue 13): with 8 devices on 2 cores, XLA:CPU aborted with
"Termination timeout for `all reduce ...` of 40 seconds exceeded ... Expected 8
threads to join the rendezvous", twice at the first step and once after step
300 of 600; the default 400 steps cover both.
"""

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from sam_jax import cpu_devices  # noqa: E402  (does not import JAX)


def child_environment(args) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count="
                        f"{args.devices}").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join([REPO] + [p for p in env.get(
        "PYTHONPATH", "").split(os.pathsep) if p])
    if args.xla_cpu_threads:
        env["SAM_JAX_XLA_CPU_THREADS"] = args.xla_cpu_threads
    return env


def xla_pool_threads(env: dict) -> int:
    """The pool the child's XLA:CPU gets (after its cli.run configures it)."""
    env = dict(env)
    cpu_devices.configure(env)
    return max(cpu_devices.pool_threads(env), cpu_devices.requested_devices(env))


def run_once(args, workdir: str) -> dict:
    env = child_environment(args)
    command = [sys.executable, "-m", "sam_jax.main", f"--config={args.config}",
               f"--workdir={workdir}", f"--config.num_steps={args.num_steps}",
               f"--config.log_every_steps={args.log_every_steps}"]
    start = time.time()
    try:
        proc = subprocess.run(command, env=env, cwd=REPO, capture_output=True,
                              text=True, timeout=args.timeout)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        code = None
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
    wall = time.time() - start
    reports = [(int(step), float(rate)) for step, rate in re.findall(
        r"^step (\d+)/\d+ .* ([\d.]+) steps/s", out, re.M)]
    # XLA's own lines: "rendezvous.cc:116] ... may be stuck", ":161] Termination timeout"
    rendezvous = [line if len(line) < 400 else f"{line[:150]} ... {line[-200:]}"
                  for line in err.splitlines() if "rendezvous.cc" in line]
    if code == 0 and "final test error" in out:
        outcome = "pass"
    elif code is None:
        outcome = "hang"  # past --timeout; XLA's own time-out did not fire
    elif code < 0 or rendezvous:
        outcome = "abort"
    else:
        outcome = "error"
    return {"outcome": outcome, "exit_code": code,
            "signal": signal.Signals(-code).name if code is not None and code < 0 else None,
            "wall_seconds": round(wall, 1),
            "last_reported_step": reports[-1][0] if reports else None,
            "steps_per_second": [rate for _, rate in reports],
            "rendezvous_lines": rendezvous[:1] + [
                line for line in rendezvous if "Termination timeout" in line][:1],
            "stderr_tail": [line[:400] for line in err.strip().splitlines()[-3:]]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--config", default="configs/quickstart.py")
    parser.add_argument("--num_steps", type=int, default=400)
    parser.add_argument("--log_every_steps", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds before a run counts as hung")
    parser.add_argument("--xla_cpu_threads", default="",
                        help="SAM_JAX_XLA_CPU_THREADS for the runs; 'xla' = "
                             "XLA's own settings (before the fix)")
    parser.add_argument("--json_out", required=True)
    args = parser.parse_args(argv)

    runs = []
    start = time.time()
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="stress_multidevice_") as tmp:
            run = run_once(args, os.path.join(tmp, "run"))
        runs.append(run)
        print(f"run {i + 1}/{args.repeats}: {run['outcome']} in {run['wall_seconds']} s"
              f" (last reported step {run['last_reported_step']})", flush=True)
        summary = {
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
            "config": args.config, "devices": args.devices,
            "num_steps": args.num_steps,
            "xla_cpu_threads": args.xla_cpu_threads or "default",
            "xla_pool_threads": xla_pool_threads(child_environment(args)),
            "cpu_count": os.cpu_count(), "machine": platform.platform(),
            "load_average_at_end": os.getloadavg(),
            "counts": {k: sum(r["outcome"] == k for r in runs)
                       for k in ("pass", "abort", "hang", "error")},
            "total_wall_seconds": round(time.time() - start, 1),
            "runs": runs}
        os.makedirs(os.path.dirname(os.path.abspath(args.json_out)), exist_ok=True)
        with open(args.json_out, "w") as f:  # after every run: a kill keeps the rest
            json.dump(summary, f, indent=1)
    print(json.dumps(summary["counts"]), f"{summary['total_wall_seconds']} s")
    return 0 if summary["counts"]["pass"] == args.repeats else 1


if __name__ == "__main__":
    sys.exit(main())
