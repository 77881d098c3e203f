"""SAM in Flax NNX: a small CNN with BatchNorm and dropout trained with
`sam_jax.sam` inside `nnx.Optimizer`, with the official code's semantics.

    python scripts/nnx_example.py            # ~1 minute on a laptop CPU

NNX keeps BatchNorm statistics and the dropout RNG counters inside the
model, and calling the model updates them. A SAM step calls it twice, so the
step is written functionally: `nnx.split` the model into its parameters and
the rest (BatchNorm statistics, RNG state), and run each pass on
`nnx.merge(graphdef, params, rest)` from the SAME pre-step `rest`:
1. both passes start from the same pre-step BatchNorm statistics;
2. only the first (unperturbed) pass's updated statistics (and advanced RNG
   counters) are written back into the model; the second pass's are dropped;
3. both passes draw the same dropout masks (the same RNG state).
`nnx.Optimizer.update(model, grads, grad_fn=...)` hands `grad_fn` to the
transform (optax's GradientTransformationExtraArgs); it is called with the
pure parameter dict that nnx.Optimizer gives the transform. No change to
sam_jax.sam was needed.

Data: scikit-learn's 8 x 8 digits (offline), 1,297 / 500 train / test.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import sam_jax


class CNN(nnx.Module):
    """conv 3x3 -> BatchNorm -> ReLU -> dropout -> flatten -> linear, for 8 x 8
    grey images."""

    def __init__(self, *, channels=8, num_classes=10, dropout_rate=0.2,
                 rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, channels, (3, 3), use_bias=False, rngs=rngs)
        self.norm = nnx.BatchNorm(channels, momentum=0.9, epsilon=1e-5, rngs=rngs)
        self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
        self.head = nnx.Linear(8 * 8 * channels, num_classes, rngs=rngs)

    def __call__(self, x):
        x = self.dropout(nnx.relu(self.norm(self.conv(x))))
        return self.head(x.reshape(x.shape[0], -1))


def cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def train_step(model: CNN, optimizer: nnx.Optimizer, images, labels):
    """The same step through nnx.Optimizer (what a user writes): the first
    pass's gradients and state, then `optimizer.update(..., grad_fn=...)`."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_and_rest(p):
        copy = nnx.merge(graphdef, p, rest, copy=True)  # fresh Variables: `rest` stays
        copy.train()
        loss = cross_entropy(copy(images), labels)
        return loss, nnx.state(copy, nnx.Not(nnx.Param))

    (loss, new_rest), grads = jax.value_and_grad(loss_and_rest, has_aux=True)(params)

    def grad_fn(p):  # p: the pure parameter dict nnx.Optimizer passes on
        return jax.grad(lambda q: loss_and_rest(nnx.State(q))[0])(p)

    optimizer.update(model, grads, grad_fn=grad_fn)
    nnx.update(model, new_rest)  # only the first pass's statistics and RNG counters
    return loss


def load_digits():
    from sklearn.datasets import load_digits as sklearn_digits
    data = sklearn_digits()
    images = (data.images[..., None] / 16.0).astype(np.float32)
    labels = data.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(labels))
    images, labels = images[order], labels[order]
    return (images[:1297], labels[:1297]), (images[1297:], labels[1297:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rho", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    (train_x, train_y), (test_x, test_y) = load_digits()
    batch = 64
    steps_per_epoch = len(train_y) // batch
    model = CNN(rngs=nnx.Rngs(args.seed))
    schedule = optax.cosine_decay_schedule(0.1, args.epochs * steps_per_epoch)
    optimizer = nnx.Optimizer(
        model, optax.chain(sam_jax.sam(args.rho), optax.sgd(schedule, momentum=0.9)),
        wrt=nnx.Param)
    step = nnx.jit(train_step)
    rng = np.random.default_rng(args.seed)
    for epoch in range(args.epochs):
        order = rng.permutation(len(train_y))
        for i in range(steps_per_epoch):
            idx = order[i * batch:(i + 1) * batch]
            loss = step(model, optimizer, train_x[idx], train_y[idx])
        model.eval()
        error = float(jnp.mean(jnp.argmax(model(test_x), -1) != test_y))
        print(f"epoch {epoch + 1}: train loss {float(loss):.3f}, test error {error:.2%}",
              flush=True)
    return error


if __name__ == "__main__":
    main()
