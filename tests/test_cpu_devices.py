"""sam_jax/cpu_devices.py: XLA:CPU threads for collectives on N virtual devices.

The deadlock it prevents (issue 13): N - 1 device programs wait in an
all-reduce for the N-th, whose program finds no free thread in XLA's pool of
max(cores, N) because the dispatch of a later launch holds one."""

import os
import subprocess
import sys
import textwrap

import pytest

from helpers import REPO
from sam_jax import cpu_devices

EIGHT = "--xla_force_host_platform_device_count=8"


@pytest.mark.parametrize("environ, threads", [
    ({"XLA_FLAGS": EIGHT, "NPROC": "2"}, "16"),
    ({"XLA_FLAGS": "--xla_dump_to=/tmp/d --xla_force_host_platform_device_count=4",
      "NPROC": "2"}, "8"),
    # the last flag is the one XLA keeps
    ({"XLA_FLAGS": "--xla_force_host_platform_device_count=2 " + EIGHT, "NPROC": "2"},
     "16"),
    # jax's own setting wins over XLA_FLAGS
    ({"JAX_NUM_CPU_DEVICES": "4", "XLA_FLAGS": EIGHT, "NPROC": "2"}, "8"),
    # XLA reads PJRT_NPROC before NPROC: a small one is raised
    ({"XLA_FLAGS": EIGHT, "PJRT_NPROC": "4", "NPROC": "64"}, "16"),
    ({"XLA_FLAGS": EIGHT, "NPROC": "2", "JAX_PLATFORMS": "cpu"}, "16"),
])
def test_several_devices_on_few_cores_get_two_threads_per_device(environ, threads):
    assert cpu_devices.configure(environ) is not None
    assert environ["PJRT_NPROC"] == threads


@pytest.mark.parametrize("environ", [
    {"NPROC": "2"},  # one device: the usual path is left as it is
    {"XLA_FLAGS": "--xla_force_host_platform_device_count=1", "NPROC": "2"},
    {"XLA_FLAGS": EIGHT, "NPROC": "16"},  # cores enough
    {"XLA_FLAGS": EIGHT, "PJRT_NPROC": "32", "NPROC": "2"},
    {"XLA_FLAGS": EIGHT, "NPROC": "2", "JAX_PLATFORMS": "cuda"},  # no CPU backend
    {"XLA_FLAGS": EIGHT, "NPROC": "2", "SAM_JAX_XLA_CPU_THREADS": "xla"},  # off
])
def test_environment_left_alone_where_the_pool_suffices(environ):
    before = dict(environ)
    assert cpu_devices.configure(environ) is None
    assert environ == before


def test_this_test_process_has_the_threads_and_too_late_warns(monkeypatch):
    """conftest.py configured the suite's 8 devices; once JAX has started, a
    setting of this process would not apply, and configure says so instead."""
    import jax
    assert jax.device_count() == 8
    assert max(cpu_devices.pool_threads(), 8) >= 16
    monkeypatch.delenv("PJRT_NPROC", raising=False)
    monkeypatch.setenv("NPROC", "2")
    with pytest.warns(RuntimeWarning, match="PJRT_NPROC=16"):
        assert cpu_devices.configure() is None
    assert "PJRT_NPROC" not in os.environ


# A command that runs through cli.run, as every `python -m sam_jax.X` does, and
# dispatches 2,000 all-reduce launches on 8 devices without waiting: the host
# runs ahead, each device's queue fills (XLA admits 32), and dispatch then
# holds pool threads. With XLA's pool of 8 it deadlocked every time tried
# (XLA aborts after 40 s: "only 7 of them arrived"); with 16 it takes seconds.
RUN_AHEAD = textwrap.dedent("""
    import os
    from sam_jax import cli

    def main(argv):
        import jax
        import jax.numpy as jnp
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

        mesh = Mesh(jax.devices(), ("batch",))

        def per_device(x):
            total = jax.lax.psum(jnp.tanh(x @ x.T), "batch")
            return x + 1e-3 * jnp.tanh(total @ x)

        step = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=P("batch"),
                                     out_specs=P("batch")), donate_argnums=0)
        x = jax.device_put(jnp.full((8 * 64, 64), 0.01),
                           NamedSharding(mesh, P("batch")))
        for _ in range(2000):
            x = step(x)
        x.block_until_ready()
        print(jax.device_count(), os.environ.get("PJRT_NPROC"), flush=True)

    cli.run(main)
""")


def test_eight_devices_on_two_cores_survive_a_host_far_ahead():
    env = {k: v for k, v in os.environ.items()
           if k not in ("PJRT_NPROC", "SAM_JAX_XLA_CPU_THREADS")}
    # NPROC=2: XLA sizes its pool as on a 2-core machine, whatever this one has.
    env.update(XLA_FLAGS=EIGHT, JAX_PLATFORMS="cpu", NPROC="2")
    proc = subprocess.run([sys.executable, "-c", RUN_AHEAD], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["8", "16"]
