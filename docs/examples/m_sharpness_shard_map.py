"""m-sharpness under jax.shard_map: one SAM perturbation per group of m examples
on every device, the gradients averaged over groups and devices
(docs/guides/m_sharpness.md).

    python docs/examples/m_sharpness_shard_map.py

Run as a script it asks XLA for 4 virtual CPU devices; on a machine with
accelerators it uses them all. The global batch is split over the devices
(`P("batch")`), each device splits its share into groups of m examples, and
`sam_jax.grouped_sam_gradient` returns the mean over groups and devices of the
gradient at each group's own perturbed weights: with m = the per-device batch
this is the official code's per-device SAM, with smaller m the paper's
m-sharpness at any device count.
"""

import os

if __name__ == "__main__":  # before JAX starts its CPU backend
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

import sam_jax
from sam_jax import cpu_devices


def loss_fn(params, batch, group_index):
    """One group's loss: `grouped_sam_gradient` calls it per group.

    `group_index` would seed per-group randomness (dropout) that both passes
    share; this model has none.
    """
    del group_index
    hidden = jnp.tanh(batch["x"] @ params["w1"] + params["b1"])
    logits = hidden @ params["w2"] + params["b2"]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
    return loss, ()  # (loss, aux): aux would carry BatchNorm statistics


def make_train_step(mesh: Mesh, tx: optax.GradientTransformation, *, rho: float,
                    examples_per_perturbation: int):
    """A jitted data-parallel step: params and optimizer state replicated, the
    batch split over the mesh's "batch" axis."""
    def per_device_step(params, opt_state, batch):
        out = sam_jax.grouped_sam_gradient(
            loss_fn, params, batch, rho=rho,
            examples_per_perturbation=examples_per_perturbation, axis_name="batch")
        # out.grads is already the mean over groups and devices (replicated).
        updates, opt_state = tx.update(out.grads, opt_state, params)
        clean_loss = jax.lax.pmean(out.clean_loss.mean(), "batch")
        return optax.apply_updates(params, updates), opt_state, clean_loss

    return jax.jit(jax.shard_map(per_device_step, mesh=mesh,
                                 in_specs=(P(), P(), P("batch")),
                                 out_specs=(P(), P(), P())))


def make_problem(key, num_examples: int, dim: int = 16, hidden: int = 32):
    """Two classes split by a random hyperplane, and a small MLP's weights."""
    kx, kw, k1, k2 = jax.random.split(key, 4)
    x = jax.random.normal(kx, (num_examples, dim))
    y = (x @ jax.random.normal(kw, (dim,)) > 0).astype(jnp.int32)
    params = {"w1": jax.random.normal(k1, (dim, hidden)) / np.sqrt(dim),
              "b1": jnp.zeros(hidden),
              "w2": jax.random.normal(k2, (hidden, 2)) / np.sqrt(hidden),
              "b2": jnp.zeros(2)}
    return params, {"x": x, "y": y}


def main(steps: int = 200, examples_per_device: int = 32,
         examples_per_perturbation: int = 4, rho: float = 0.05):
    cpu_devices.configure()  # enough XLA:CPU threads for the virtual devices
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    num_devices = mesh.devices.size
    params, batch = make_problem(jax.random.PRNGKey(0),
                                 examples_per_device * num_devices)
    tx = optax.sgd(0.1, momentum=0.9)
    opt_state = tx.init(params)
    train_step = make_train_step(mesh, tx, rho=rho,
                                 examples_per_perturbation=examples_per_perturbation)
    losses = []
    for _ in range(steps):
        params, opt_state, loss = train_step(params, opt_state, batch)
        losses.append(float(loss))
    groups = examples_per_device // examples_per_perturbation
    print(f"{num_devices} devices x {groups} groups of m={examples_per_perturbation}: "
          f"training loss {losses[0]:.3f} -> {losses[-1]:.3f} after {steps} steps")
    return params, losses


if __name__ == "__main__":
    main()
