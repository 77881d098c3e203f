"""The deadlock in 30 lines: N devices, all-reduce launches dispatched without waiting.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 PJRT_NPROC=8 \
      python experiments/multidevice_cpu/run_ahead.py     # XLA's pool: aborts
  XLA_FLAGS=--xla_force_host_platform_device_count=8 PJRT_NPROC=16 \
      python experiments/multidevice_cpu/run_ahead.py     # 2N threads: ok

PJRT_NPROC sizes XLA:CPU's pool (max(PJRT_NPROC, N) threads). Nothing of
sam_jax is used, so the pool is exactly what the command line says. See
README.md here for what the threads are doing when it hangs.
"""

import sys
import time

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def main(launches: int = 2000, dim: int = 64) -> None:
    mesh = Mesh(jax.devices(), ("batch",))

    def per_device(x):
        total = jax.lax.psum(jnp.tanh(x @ x.T), "batch")
        return x + 1e-3 * jnp.tanh(total @ x)

    step = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=P("batch"),
                                 out_specs=P("batch")), donate_argnums=0)
    x = jax.device_put(jnp.full((jax.device_count() * dim, dim), 0.01),
                       NamedSharding(mesh, P("batch")))
    x = step(x).block_until_ready()  # compiled
    start = time.time()
    for _ in range(launches):  # the host never waits: it runs far ahead
        x = step(x)
    x.block_until_ready()
    print(f"ok: {launches} launches on {jax.device_count()} devices in "
          f"{time.time() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
