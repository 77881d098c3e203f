"""The SAM family in one optax loop: the method is the chain's first element,
swapped by name (docs/guides/choosing_a_variant.md).

    python docs/examples/choosing_a_variant.py

Every method is a `GradientTransformationExtraArgs` called as
`tx.update(grads, state, params, grad_fn=grad_fn)`, so the loop never changes;
the cost column is what sam_jax/methods.py declares for the trainer's
`--config.method=NAME` (gradient evaluations per step).
"""

import jax
import jax.numpy as jnp
import optax

import sam_jax
from sam_jax import config_schema
from sam_jax import methods

LEARNING_RATE = 0.1

# name -> the transform, at the schema's default hyper-parameters
TRANSFORMS = {
    "sgd": lambda: sam_jax.plain_gradient(),
    "sam": lambda: sam_jax.sam(0.05),
    "asam": lambda: sam_jax.asam(0.5, eta=0.01),
    "usam": lambda: sam_jax.usam(0.05),
    "gsam": lambda: sam_jax.gsam(0.05, rho_min=0.025, alpha=0.01,
                                 learning_rate=LEARNING_RATE),
    "looksam": lambda: sam_jax.looksam(0.05, k=5, alpha=0.7),
    "rwp": lambda: sam_jax.rwp(0.01, mix=0.5),
    "sampa": lambda: sam_jax.sampa(0.1, mix=0.2, learning_rate=LEARNING_RATE,
                                   fused=False),
    "extragradient": lambda: sam_jax.extragradient(LEARNING_RATE),
}


def loss_fn(params, batch):
    # flax's names ("kernel"): ASAM scales the leaves a model names as weights.
    hidden = jnp.tanh(batch["x"] @ params["hidden"]["kernel"])
    logits = hidden @ params["out"]["kernel"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()


def train(method_tx, params, batch, steps: int):
    tx = optax.chain(method_tx, optax.sgd(LEARNING_RATE, momentum=0.9))
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state):
        grad_fn = lambda p: jax.grad(loss_fn)(p, batch)  # same batch, any weights
        updates, opt_state = tx.update(grad_fn(params), opt_state, params,
                                       grad_fn=grad_fn)
        return optax.apply_updates(params, updates), opt_state

    for _ in range(steps):
        params, opt_state = step(params, opt_state)
    return float(loss_fn(params, batch))


def main(steps: int = 100, names=tuple(TRANSFORMS)):
    kx, kw, k1, k2 = jax.random.split(jax.random.PRNGKey(0), 4)
    x = jax.random.normal(kx, (256, 16))
    batch = {"x": x, "y": jnp.argmax(x @ jax.random.normal(kw, (16, 4)), -1)}
    params = {"hidden": {"kernel": jax.random.normal(k1, (16, 32)) / 4.0},
              "out": {"kernel": jax.random.normal(k2, (32, 4)) / 32 ** 0.5}}
    config = config_schema.base_config()
    print(f"initial loss {float(loss_fn(params, batch)):.3f}")
    final = {}
    for name in names:
        evaluations, _ = methods.get(name).cost(config)
        final[name] = train(TRANSFORMS[name](), params, batch, steps)
        print(f"{name:14s} {evaluations:>8s} gradient evaluations / step   "
              f"loss after {steps} steps {final[name]:.3f}")
    return float(loss_fn(params, batch)), final


if __name__ == "__main__":
    main()
