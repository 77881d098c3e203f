"""scripts/nnx_example.py: its NNX SAM step inside nnx.Optimizer equals a
linen reference step on the same weights and batch (BatchNorm from the
pre-step statistics in both passes, the first pass's statistics kept), its
two passes share the dropout masks and advance the RNG once, and it trains."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import sam_jax
from helpers import load_module

example = load_module("scripts/nnx_example.py")
CHANNELS, LR, RHO = 4, 0.1, 0.05


class LinenCNN(nn.Module):
    """The example's CNN written in linen, for the reference."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(CHANNELS, (3, 3), use_bias=False, name="conv")(x)
        x = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5,
                         name="norm")(x)
        return nn.Dense(10, name="head")(nn.relu(x).reshape(x.shape[0], -1))


def batch(seed=0, n=16):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 8, 8, 1)).astype(np.float32),
            rng.integers(0, 10, n).astype(np.int32))


def as_linen(model):
    """The NNX model's parameters and statistics in the linen tree."""
    v = lambda x: np.asarray(x[...])
    params = {"conv": {"kernel": v(model.conv.kernel)},
              "norm": {"scale": v(model.norm.scale), "bias": v(model.norm.bias)},
              "head": {"kernel": v(model.head.kernel), "bias": v(model.head.bias)}}
    stats = {"norm": {"mean": v(model.norm.mean), "var": v(model.norm.var)}}
    return params, stats


def reference_sam_sgd_step(params, stats, images, labels):
    """Linen, float64 between the passes: g at w and g' at w + rho g / ||g||,
    both BatchNorm passes from `stats`; w - lr g'; the first pass's statistics."""
    model = LinenCNN()

    def loss(p):
        logits, mutated = model.apply({"params": p, "batch_stats": stats}, images,
                                      mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(
            logits, labels).mean(), mutated["batch_stats"]

    g, first_stats = jax.grad(loss, has_aux=True)(params)
    norm = np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2)
                       for x in jax.tree_util.tree_leaves(g)))
    shifted = jax.tree_util.tree_map(
        lambda w, d: np.asarray(w, np.float64) + RHO * np.asarray(d, np.float64) / norm,
        params, g)
    g_sam, _ = jax.grad(loss, has_aux=True)(
        jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), shifted))
    new = jax.tree_util.tree_map(
        lambda w, d: np.asarray(w, np.float64) - LR * np.asarray(d, np.float64),
        params, g_sam)
    return new, first_stats


def nnx_step(model, images, labels, rho=RHO):
    optimizer = nnx.Optimizer(model, optax.chain(sam_jax.sam(rho), optax.sgd(LR)),
                              wrt=nnx.Param)
    return nnx.jit(example.train_step)(model, optimizer, images, labels)


def test_nnx_sam_step_equals_the_linen_reference():
    model = example.CNN(channels=CHANNELS, dropout_rate=0.0, rngs=nnx.Rngs(0))
    images, labels = batch()
    # Running statistics away from (0, 1): the kept ones, a moving average
    # from them, show which pass wrote them.
    model.norm.mean[...] = jnp.linspace(-0.5, 0.5, CHANNELS)
    model.norm.var[...] = jnp.linspace(0.5, 2.0, CHANNELS)
    params, stats = as_linen(model)
    want_params, want_stats = reference_sam_sgd_step(params, stats, images, labels)
    nnx_step(model, images, labels)
    got_params, got_stats = as_linen(model)
    for got, want in zip(jax.tree_util.tree_leaves(got_params),
                         jax.tree_util.tree_leaves(want_params), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for got, want in zip(jax.tree_util.tree_leaves(got_stats),
                         jax.tree_util.tree_leaves(want_stats), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    # The step moved the weights by far more than the tolerance, and the
    # second pass's statistics (at w + e) differ from the kept ones.
    moved = max(np.abs(a - b).max() for a, b in zip(
        jax.tree_util.tree_leaves(got_params), jax.tree_util.tree_leaves(params)))
    assert moved > 1e-3


def test_both_passes_share_the_dropout_masks_and_the_rng_advances_once():
    images, labels = batch(1)

    def step_params(rho):
        model = example.CNN(channels=CHANNELS, dropout_rate=0.5, rngs=nnx.Rngs(3))
        nnx_step(model, images, labels, rho=rho)
        return model, np.concatenate([np.ravel(np.asarray(x)) for x in
                                      jax.tree_util.tree_leaves(nnx.state(model, nnx.Param))])

    _, plain = step_params(0.0)  # rho = 0: one pass
    model_sam, tiny = step_params(1e-5)  # shared masks: the gradient barely moves
    before = example.CNN(channels=CHANNELS, dropout_rate=0.5, rngs=nnx.Rngs(3))
    start = np.concatenate([np.ravel(np.asarray(x)) for x in
                            jax.tree_util.tree_leaves(nnx.state(before, nnx.Param))])
    step = np.linalg.norm(plain - start)
    assert np.linalg.norm(tiny - plain) < 1e-3 * step

    # The RNG counters and statistics after the two-pass step: those of one
    # training pass (the first).
    before.train()
    before(images)
    for got, want in zip(
            jax.tree_util.tree_leaves(nnx.state(model_sam, nnx.Not(nnx.Param))),
            jax.tree_util.tree_leaves(nnx.state(before, nnx.Not(nnx.Param))), strict=True):
        np.testing.assert_allclose(np.asarray(jax.random.key_data(got)) if jnp.issubdtype(
            got.dtype, jax.dtypes.prng_key) else np.asarray(got),
            np.asarray(jax.random.key_data(want)) if jnp.issubdtype(
                want.dtype, jax.dtypes.prng_key) else np.asarray(want),
            rtol=1e-6, atol=1e-7)


def test_the_example_trains_on_digits():
    error = example.main(["--epochs", "2"])
    assert error < 0.2
