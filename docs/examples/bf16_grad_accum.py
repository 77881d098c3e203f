"""SAM with a bfloat16 model and gradient accumulation, in your own loop
(docs/guides/bf16_accumulation.md).

    python docs/examples/bf16_grad_accum.py

bf16: the model computes in bfloat16 (`dtype`) while its parameters stay
float32 (`param_dtype`), and the logits are cast to float32 before the loss,
so gradients, optimizer state and SAM's norm are float32. Accumulation: the
batch runs as K microbatches one after another (`lax.scan`), each perturbing
with its own gradient (m = the microbatch), and their SAM gradients are
averaged into one update: the activation memory of a microbatch for K times
the passes. The trainer does the same with `--config.dtype=bfloat16
--config.grad_accum_steps=K`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import sam_jax


class Net(nn.Module):
    dtype: jnp.dtype = jnp.bfloat16  # compute dtype; parameters stay float32

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(64, dtype=self.dtype, param_dtype=jnp.float32)(x.astype(self.dtype))
        x = nn.relu(x)
        logits = nn.Dense(10, dtype=self.dtype, param_dtype=jnp.float32)(x)
        return logits.astype(jnp.float32)  # the loss in float32


def make_sam_gradient(model, *, rho: float, grad_accum_steps: int):
    """(params, batch) -> (SAM gradient averaged over microbatches, clean loss)."""
    def loss_fn(params, batch, group_index):
        del group_index
        logits = model.apply({"params": params}, batch["x"])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])
        return loss.mean(), ()

    def sam_gradient(params, batch):
        microbatches = jax.tree_util.tree_map(
            lambda v: v.reshape(grad_accum_steps, -1, *v.shape[1:]), batch)
        microbatch_size = microbatches["x"].shape[1]

        def one_microbatch(grad_sum, microbatch):
            out = sam_jax.grouped_sam_gradient(
                loss_fn, params, microbatch, rho=rho,
                examples_per_perturbation=microbatch_size)
            grad_sum = jax.tree_util.tree_map(jnp.add, grad_sum, out.grads)
            return grad_sum, out.clean_loss.mean()

        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        grad_sum, clean_losses = jax.lax.scan(one_microbatch, zeros, microbatches)
        grads = jax.tree_util.tree_map(lambda g: g / grad_accum_steps, grad_sum)
        return grads, clean_losses.mean()

    return sam_gradient


def make_problem(key, num_examples: int, dim: int = 32):
    """Ten classes: the index of the largest of ten random projections."""
    kx, kw = jax.random.split(key)
    x = jax.random.normal(kx, (num_examples, dim))
    y = jnp.argmax(x @ jax.random.normal(kw, (dim, 10)), axis=-1)
    return {"x": x, "y": y}


def main(steps: int = 150, batch_size: int = 256, grad_accum_steps: int = 4,
         rho: float = 0.05, dtype=jnp.bfloat16):
    batch = make_problem(jax.random.PRNGKey(0), batch_size)
    model = Net(dtype=dtype)
    params = model.init(jax.random.PRNGKey(1), batch["x"][:1])["params"]
    tx = optax.sgd(0.1, momentum=0.9)
    opt_state = tx.init(params)
    sam_gradient = make_sam_gradient(model, rho=rho, grad_accum_steps=grad_accum_steps)

    @jax.jit
    def train_step(params, opt_state, batch):
        grads, loss = sam_gradient(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for _ in range(steps):
        params, opt_state, loss = train_step(params, opt_state, batch)
        losses.append(float(loss))
    print(f"{jnp.dtype(dtype).name} model, {grad_accum_steps} microbatches of "
          f"{batch_size // grad_accum_steps}: training loss {losses[0]:.3f} -> "
          f"{losses[-1]:.3f} after {steps} steps")
    return params, losses


if __name__ == "__main__":
    main()
