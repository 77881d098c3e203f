"""Data parallelism: one mesh axis over every device of every host.

The state is replicated; batches are split along the example axis. The training
step runs under `jax.shard_map` so that per-device quantities (the SAM
perturbation, BatchNorm statistics) keep the official code's semantics; so does
the evaluation step, whose per-device sums are added in device order. Every sum
over devices is added in device order (`collectives.psum_in_device_order`), so a run
on 2 processes of 2 devices is bitwise the run on 1 process of 4.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sam_jax.collectives import psum_in_device_order
from sam_jax.steps import AXIS


def make_mesh(devices=None) -> Mesh:
    """One batch axis over `devices` (default: every device of every host)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("make_mesh needs at least one device")
    return Mesh(np.array(devices), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh, axis: str = AXIS) -> NamedSharding:
    return NamedSharding(mesh, P(axis))


def global_batch(mesh: Mesh, local_batch, axis: str = AXIS):
    """This host's slice of the batch (numpy) -> one global jax.Array, sharded
    over the mesh's batch axis."""
    sharding = batch_sharded(mesh, axis)
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
        local_batch)


def batch_shapes(mesh: Mesh, global_batch_size: int, image_shape,
                 example_indices: bool = False) -> dict:
    """The shapes of a global training batch, for compiling ahead of time;
    `example_indices`: the batches carry "index" (data.RunInputs')."""
    sharding = batch_sharded(mesh)
    shapes = {"image": jax.ShapeDtypeStruct((global_batch_size,) + tuple(image_shape),
                                            jnp.float32, sharding=sharding),
              "label": jax.ShapeDtypeStruct((global_batch_size,), jnp.int32,
                                            sharding=sharding)}
    if example_indices:
        shapes["index"] = jax.ShapeDtypeStruct((global_batch_size,), jnp.int32,
                                               sharding=sharding)
    return shapes


def shard_train_step(per_device_step, mesh: Mesh):
    """jit(shard_map(step)): state replicated, batch split, state buffers donated.

    A step with `check_vma = False` (steps.make_train_step's, for BatchNorm
    pooled over groups) runs unchecked: JAX then neither checks nor types which
    values vary over devices, and its gradients stay per device as well."""
    step = jax.shard_map(per_device_step, mesh=mesh,
                         in_specs=(P(), P(AXIS), P()), out_specs=P(),
                         check_vma=getattr(per_device_step, "check_vma", True))
    return jax.jit(step, donate_argnums=0)


def jit_eval_step(eval_step, mesh: Mesh):
    """jit(shard_map(eval_step)): `eval_step(state, batch)` returns sums over the
    examples it is given; each device sums its slice, and the devices' sums are
    added in device order (a plain jit's all-reduce adds them in an order that
    depends on the process layout)."""
    def per_device(state, batch):
        return psum_in_device_order(eval_step(state, batch), AXIS)
    return jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(AXIS)),
                                 out_specs=P()))
