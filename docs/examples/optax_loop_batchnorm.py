"""SAM in your own optax loop, with BatchNorm and dropout: the official code's
semantics in one step (docs/guides/optax_loop.md).

    python docs/examples/optax_loop_batchnorm.py

A SAM step runs the model twice on the same batch. With mutable state and
random layers, three choices decide what that step means; the paper's code:
1. both passes start from the same pre-step BatchNorm statistics;
2. only the first (unperturbed) pass's updated statistics are kept; the
   second pass's are discarded (it sees perturbed weights, not the model);
3. both passes use the same random draws (dropout masks).
Here `grad_fn` closes over the pre-step statistics and the step's dropout key,
and returns gradients only, so (1)-(3) hold by construction.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import sam_jax


class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(32)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.Dropout(0.2, deterministic=not train)(nn.relu(x))
        return nn.Dense(2)(x)


def make_train_step(model, tx):
    def loss_fn(params, batch_stats, batch, dropout_key):
        logits, mutated = model.apply(
            {"params": params, "batch_stats": batch_stats}, batch["x"], train=True,
            mutable=["batch_stats"], rngs={"dropout": dropout_key})
        loss = optax.softmax_cross_entropy_with_integer_labels(
            logits, batch["y"]).mean()
        return loss, mutated["batch_stats"]

    @jax.jit
    def train_step(params, batch_stats, opt_state, batch, key):
        dropout_key = jax.random.fold_in(key, opt_state[0].count)  # one per step
        grad_and_stats = jax.grad(loss_fn, has_aux=True)
        # First pass: its updated statistics are the ones we keep.
        grads, new_batch_stats = grad_and_stats(params, batch_stats, batch,
                                                dropout_key)
        # Second pass (inside sam): pre-step statistics, same dropout key;
        # its updated statistics are dropped.
        grad_fn = lambda p: grad_and_stats(p, batch_stats, batch, dropout_key)[0]
        updates, opt_state = tx.update(grads, opt_state, params, grad_fn=grad_fn)
        return optax.apply_updates(params, updates), new_batch_stats, opt_state

    return train_step


def main(steps: int = 100):
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (256, 8))
    batch = {"x": x, "y": (x[:, 0] + 0.3 * x[:, 1] > 0).astype(jnp.int32)}
    model = Net()
    variables = model.init(key, x, train=False)
    params, batch_stats = variables["params"], variables["batch_stats"]
    tx = optax.chain(sam_jax.sam(rho=0.05), optax.sgd(0.1, momentum=0.9))
    opt_state = tx.init(params)
    train_step = make_train_step(model, tx)
    for _ in range(steps):
        params, batch_stats, opt_state = train_step(params, batch_stats, opt_state,
                                                    batch, key)
    logits = model.apply({"params": params, "batch_stats": batch_stats}, x,
                         train=False)
    accuracy = float(jnp.mean(jnp.argmax(logits, -1) == batch["y"]))
    print(f"training accuracy after {steps} SAM steps: {accuracy:.3f}")
    return params, batch_stats, accuracy


if __name__ == "__main__":
    main()
