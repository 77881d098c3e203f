"""The guides' runnable examples (docs/examples/*.py, shown in the docs by
literalinclude) run here at tiny sizes, and their numbers are checked against
references written without sam_jax: a loop over groups with jax.grad."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh

import sam_jax
from helpers import REPO
from helpers import load_module

optax_loop = load_module("docs/examples/optax_loop_batchnorm.py")
m_sharpness = load_module("docs/examples/m_sharpness_shard_map.py")
bf16_accum = load_module("docs/examples/bf16_grad_accum.py")
variants = load_module("docs/examples/choosing_a_variant.py")


def test_every_example_is_tested_here():
    # A new example must get its test: the guides promise each one runs.
    examples = sorted(f for f in os.listdir(os.path.join(REPO, "docs", "examples"))
                      if f.endswith(".py"))
    assert examples == ["bf16_grad_accum.py", "choosing_a_variant.py",
                        "m_sharpness_shard_map.py", "optax_loop_batchnorm.py"]


def loop_sam_gradient(loss, params, groups, rho):
    """Mean over groups of grad L_k(w + rho g_k / ||g_k||), g_k = grad L_k(w):
    SAM written out, one group at a time."""
    total = None
    for group in groups:
        g = jax.grad(loss)(params, group)
        norm = np.sqrt(sum(float(jnp.sum(v.astype(jnp.float32) ** 2))
                           for v in jax.tree_util.tree_leaves(g)))
        perturbed = jax.tree_util.tree_map(lambda w, v: w + rho * v / norm, params, g)
        g_sam = jax.grad(loss)(perturbed, group)
        total = g_sam if total is None else jax.tree_util.tree_map(jnp.add, total, g_sam)
    return jax.tree_util.tree_map(lambda v: np.asarray(v) / len(groups), total)


def split(batch, size):
    n = batch["x"].shape[0]
    return [{k: v[i:i + size] for k, v in batch.items()} for i in range(0, n, size)]


def assert_tree_close(actual, expected, rtol=1e-5, atol=1e-6):
    for a, e in zip(jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(np.asarray(a, np.float64), e, rtol=rtol, atol=atol)


# ----------------------------------------------------- SAM in your optax loop

def test_one_step_keeps_first_pass_statistics():
    key = jax.random.PRNGKey(1)
    x = jax.random.normal(key, (64, 8))
    batch = {"x": x, "y": (x[:, 0] > 0).astype(jnp.int32)}
    model = optax_loop.Net()
    variables = model.init(key, x, train=False)
    params, stats = variables["params"], variables["batch_stats"]
    tx = optax.chain(sam_jax.sam(rho=0.5), optax.sgd(0.1))
    step = optax_loop.make_train_step(model, tx)
    _, new_stats, _ = step(params, stats, tx.init(params), batch, key)
    # Independent reference: numpy moving average of the UNPERTURBED first
    # layer's batch statistics (momentum 0.9, from zeros / ones).
    kernel = np.asarray(params["Dense_0"]["kernel"], np.float64)
    hidden = np.asarray(x, np.float64) @ kernel + np.asarray(params["Dense_0"]["bias"])
    np.testing.assert_allclose(new_stats["BatchNorm_0"]["mean"],
                               0.1 * hidden.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(new_stats["BatchNorm_0"]["var"],
                               0.9 + 0.1 * hidden.var(0), rtol=1e-4, atol=1e-6)


def test_optax_loop_example_learns():
    _, _, accuracy = optax_loop.main(steps=100)
    assert accuracy > 0.95


# ----------------------------------------------------- m-sharpness, shard_map

def test_shard_map_step_is_the_mean_over_every_devices_groups():
    # conftest: 8 CPU devices; 8 examples each, m = 4: 16 groups.
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    params, batch = m_sharpness.make_problem(jax.random.PRNGKey(3), 8 * mesh.devices.size)
    tx = optax.sgd(1.0)  # the update is minus the gradient
    step = m_sharpness.make_train_step(mesh, tx, rho=0.2, examples_per_perturbation=4)
    new_params, _, _ = step(params, tx.init(params), batch)
    grads = jax.tree_util.tree_map(lambda a, b: np.asarray(a) - np.asarray(b),
                                   params, new_params)
    loss = lambda p, group: m_sharpness.loss_fn(p, group, 0)[0]
    expected = loop_sam_gradient(loss, params, split(batch, 4), rho=0.2)
    assert_tree_close(grads, expected, rtol=1e-4, atol=1e-6)
    # Guard: one perturbation per device (m = 8) is a different gradient.
    per_device = loop_sam_gradient(loss, params, split(batch, 8), rho=0.2)
    assert max(np.abs(e - d).max() for e, d in zip(
        jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(per_device))) > 1e-5


def test_m_sharpness_example_learns():
    _, losses = m_sharpness.main(steps=30, examples_per_device=8,
                                 examples_per_perturbation=4)
    assert losses[-1] < 0.7 * losses[0]


# ----------------------------------------------------- bf16 and accumulation

def accumulation_problem(dtype):
    batch = bf16_accum.make_problem(jax.random.PRNGKey(4), 64)
    model = bf16_accum.Net(dtype=dtype)
    params = model.init(jax.random.PRNGKey(5), batch["x"][:1])["params"]

    def loss(p, group):
        logits = model.apply({"params": p}, group["x"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, group["y"]).mean()
    return model, params, batch, loss


def test_accumulated_sam_gradient_is_the_mean_over_microbatches():
    model, params, batch, loss = accumulation_problem(jnp.float32)
    grads, _ = jax.jit(bf16_accum.make_sam_gradient(model, rho=0.1, grad_accum_steps=4))(
        params, batch)
    assert_tree_close(grads, loop_sam_gradient(loss, params, split(batch, 16), rho=0.1))


def test_bf16_gradient_is_float32_and_near_the_float32_one():
    model, params, batch, loss = accumulation_problem(jnp.bfloat16)
    grads, clean_loss = jax.jit(bf16_accum.make_sam_gradient(
        model, rho=0.1, grad_accum_steps=4))(params, batch)
    assert {v.dtype for v in jax.tree_util.tree_leaves(grads)} == {jnp.dtype(jnp.float32)}
    assert clean_loss.dtype == jnp.float32
    _, _, _, loss32 = accumulation_problem(jnp.float32)
    reference = loop_sam_gradient(loss32, params, split(batch, 16), rho=0.1)
    for g, r in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(reference)):
        # bf16 keeps 8 bits of mantissa: a few percent of the gradient's norm
        error = np.linalg.norm(np.asarray(g) - r) / np.linalg.norm(r)
        assert error < 0.05, error


def test_bf16_accumulation_example_learns():
    _, losses = bf16_accum.main(steps=20, batch_size=64, grad_accum_steps=4)
    assert losses[-1] < 0.7 * losses[0]


# ----------------------------------------------------- choosing a variant

def test_every_variant_learns_in_the_same_loop():
    initial, final = variants.main(steps=20)
    assert set(final) == set(variants.TRANSFORMS)
    for name, loss in final.items():
        assert np.isfinite(loss) and loss < 0.8 * initial, (name, loss, initial)


@pytest.mark.parametrize("name", sorted(variants.TRANSFORMS))
def test_variant_names_are_the_trainers_methods(name):
    from sam_jax import methods
    assert name in methods.METHODS
