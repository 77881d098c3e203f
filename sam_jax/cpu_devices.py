"""Enough XLA:CPU threads for N virtual CPU devices to run collectives.

With `XLA_FLAGS=--xla_force_host_platform_device_count=N` (or
JAX_NUM_CPU_DEVICES=N), XLA:CPU runs the N devices' programs of a launch, and
the dispatch of later launches, on ONE pool of max(cores, N) threads
(PJRT_NPROC, else NPROC, replaces `cores`). A collective (the step's all-reduce)
waits until all N device programs have reached it, each holding a thread. The
training loop dispatches steps without waiting for them; once a device has 32
programs queued (XLA's cap per device), dispatching the next launch blocks its
pool threads until a program finishes, up to N of them. With N - 1 programs in
the all-reduce and one dispatch waiting, the N-th program never gets a thread:
a deadlock, which XLA ends after 40 s with SIGABRT ("Expected 8 threads to join
the rendezvous, but only 7 of them arrived on time"). Which queued task a freed
thread takes first is a race, hence "sometimes", at any step, on 2, 4 or 8
devices of a small machine. 2N threads always leave one for the last program:
XLA runs one multi-device launch at a time, so N - 1 programs in its collective
+ the N dispatches of the next launch (one Python thread dispatching, as in
sam_jax) + 1. Thread dumps and stress runs: experiments/multidevice_cpu/.

`configure()` sets PJRT_NPROC=2N when the pool would be smaller. It must run
before JAX creates its CPU backend (the first `jax.devices()` or computation;
`import jax` alone is fine): `cli.run` (every `python -m sam_jax.X`) and
tests/conftest.py call it. One device, or a machine with 2N cores, is left as
it is. SAM_JAX_XLA_CPU_THREADS=xla turns it off (to reproduce the deadlock).
"""

import os
import re
import sys
import warnings
from typing import MutableMapping, Optional

_DEVICE_COUNT_FLAG = re.compile(r"--?xla_force_host_platform_device_count=(\d+)")


def requested_devices(environ: MutableMapping[str, str] = os.environ) -> int:
    """How many CPU devices JAX will create (JAX_NUM_CPU_DEVICES wins over
    XLA_FLAGS, as in jax's make_cpu_client)."""
    try:
        count = int(environ.get("JAX_NUM_CPU_DEVICES", "-1"))
    except ValueError:
        count = -1
    if count >= 0:
        return count
    flags = _DEVICE_COUNT_FLAG.findall(environ.get("XLA_FLAGS", ""))
    return int(flags[-1]) if flags else 1


def pool_threads(environ: MutableMapping[str, str] = os.environ) -> int:
    """XLA:CPU's pool size before the device count: PJRT_NPROC, else NPROC,
    else the CPUs this process may run on (xla DefaultThreadPoolSize)."""
    for name in ("PJRT_NPROC", "NPROC"):
        try:
            return max(0, int(environ[name]))
        except (KeyError, ValueError):
            continue
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


def _backend_started() -> bool:
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bridge is not None and bridge.backends_are_initialized()


def configure(environ: MutableMapping[str, str] = os.environ) -> Optional[str]:
    """Sets PJRT_NPROC to twice the CPU device count where XLA's pool would be
    smaller; returns what it did (None: nothing needed). Cheap, and touches
    nothing for one device. `environ` may be a child process's environment."""
    if environ.get("SAM_JAX_XLA_CPU_THREADS", "").lower() == "xla":
        return None
    platforms = environ.get("JAX_PLATFORMS", "")
    if platforms and "cpu" not in platforms.split(","):
        return None
    devices = requested_devices(environ)
    if devices <= 1:
        return None
    needed = 2 * devices
    if max(pool_threads(environ), devices) >= needed:
        return None
    if environ is os.environ and _backend_started():
        warnings.warn(f"{devices} CPU devices share a pool of fewer than {needed} "
                      "threads and JAX has already started, so it stays so; "
                      "collectives may deadlock. Call sam_jax.cpu_devices."
                      f"configure() (or set PJRT_NPROC={needed}) before JAX "
                      "creates its devices.", RuntimeWarning, stacklevel=2)
        return None
    environ["PJRT_NPROC"] = str(needed)
    return f"PJRT_NPROC={needed} for {devices} CPU devices"
