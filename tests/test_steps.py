"""Tests of sam_jax.steps: one SAM step on 8 devices (under parallel's
shard_map) against a Python loop over the shards."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import sam_jax
from helpers import TinyBatchNormNet
from helpers import tiny_variables
from sam_jax import parallel
from sam_jax import steps
from sam_jax.models import get_model


def reference_sam_step(model, params, batch_stats, images, labels, *, rho,
                       weight_decay, lr, num_shards):
    """Independent reference: a Python loop over the shards, each a 'device'."""
    grads_sum, stats = None, []
    for x, y in zip(np.split(images, num_shards), np.split(labels, num_shards)):
        def loss(p):
            logits, mutated = model.apply({"params": p, "batch_stats": batch_stats},
                                          x, train=True, mutable=["batch_stats"])
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            l2 = sum(jnp.sum(w ** 2) for w in jax.tree_util.tree_leaves(p))
            return ce + 0.5 * weight_decay * l2, mutated["batch_stats"]
        g, new_stats = jax.grad(loss, has_aux=True)(params)
        stats.append(new_stats)
        norm = np.sqrt(sum(np.sum(np.square(np.asarray(v, np.float64)))
                           for v in jax.tree_util.tree_leaves(g)))
        shifted = jax.tree_util.tree_map(lambda w, v: w + rho * v / norm, params, g)
        g_sam, _ = jax.grad(loss, has_aux=True)(shifted)
        grads_sum = g_sam if grads_sum is None else jax.tree_util.tree_map(
            jnp.add, grads_sum, g_sam)
    grads = jax.tree_util.tree_map(lambda v: v / num_shards, grads_sum)
    tx = optax.chain(optax.clip_by_global_norm(5.0),
                     optax.sgd(lr, momentum=0.9, nesterov=True))
    updates, _ = tx.update(grads, tx.init(params), params)
    mean_stats = jax.tree_util.tree_map(lambda *s: sum(s) / num_shards, *stats)
    return optax.apply_updates(params, updates), mean_stats


def test_one_step_on_8_devices_equals_loop_over_shards():
    assert jax.device_count() == 8
    model = get_model("wrn10_1", 10)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(32, 8, 8, 1)).astype(np.float32)
    labels = rng.integers(0, 10, 32).astype(np.int32)
    variables = model.init(jax.random.PRNGKey(0), images[:1])
    lr, rho, wd = 0.1, 0.2, 5e-4
    method = sam_jax.sam(rho, axis_name=steps.AXIS, grouped=True,
                         aux_init=steps.aux_example())
    base = optax.chain(optax.clip_by_global_norm(5.0),
                       optax.sgd(lr, momentum=0.9, nesterov=True))
    tx = optax.chain(method, base)
    state = steps.new_train_state(variables["params"], variables["batch_stats"],
                                  tx.init(variables["params"]))
    mesh = parallel.make_mesh()
    step = parallel.shard_train_step(steps.make_train_step(
        model, method, base, examples_per_perturbation=4, per_device_batch=4,
        weight_decay=wd, label_smoothing=0.0, grad_clip_norm=5.0), mesh)
    # A copy: the step donates (deletes) its input state.
    state = jax.tree_util.tree_map(jnp.copy, state)
    new_state = step(jax.device_put(state, parallel.replicated(mesh)),
                        parallel.global_batch(mesh, {"image": images, "label": labels}),
                        jax.random.PRNGKey(1))
    ref_params, ref_stats = reference_sam_step(
        model, variables["params"], variables["batch_stats"], images, labels,
        rho=rho, weight_decay=wd, lr=lr, num_shards=8)
    for got, want in [(new_state.params, ref_params),
                      (new_state.batch_stats, ref_stats)]:
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
    # The per-device semantics matter: one perturbation for the global batch
    # (a single shard in the loop) gives different weights.
    global_params, _ = reference_sam_step(
        model, variables["params"], variables["batch_stats"], images, labels,
        rho=rho, weight_decay=wd, lr=lr, num_shards=1)
    diffs = [np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in zip(
        jax.tree_util.tree_leaves(new_state.params),
        jax.tree_util.tree_leaves(global_params))]
    assert max(diffs) > 1e-4


def test_frozen_sam_step_on_8_devices_equals_loop_in_evaluation_mode():
    """Both SAM passes use the running statistics, which stay as they are."""
    model = TinyBatchNormNet()  # no random layers: frozen training is evaluation
    rng = np.random.default_rng(0)
    images = rng.normal(size=(16, 6, 6, 2)).astype(np.float32)
    labels = rng.integers(0, 3, 16).astype(np.int32)
    params, batch_stats = tiny_variables(images, 2)
    rho, wd, lr = 0.1, 1e-5, 0.05
    tx = optax.chain(optax.clip_by_global_norm(5.0),
                     optax.sgd(lr, momentum=0.9, nesterov=True))

    # Reference: one 'device' (2 examples) at a time, evaluation-mode model.
    @jax.jit
    @jax.grad
    def grad(p, x, y):
        logits = model.apply({"params": p, "batch_stats": batch_stats}, x, train=False)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return ce + 0.5 * wd * sum(jnp.sum(w ** 2) for w in jax.tree_util.tree_leaves(p))
    grads = []
    for x, y in zip(np.split(images, 8), np.split(labels, 8)):
        g = grad(params, x, y)
        norm = optax.tree.norm(g)
        shifted = jax.tree_util.tree_map(lambda w, v: w + rho * v / norm, params, g)
        grads.append(grad(shifted, x, y))
    mean_grad = jax.tree_util.tree_map(lambda *g: sum(g) / 8, *grads)
    updates, _ = tx.update(mean_grad, tx.init(params), params)
    want = optax.apply_updates(params, updates)

    mesh = parallel.make_mesh()
    method = sam_jax.sam(rho, axis_name=steps.AXIS, grouped=True,
                         aux_init=steps.aux_example())
    step = parallel.shard_train_step(steps.make_train_step(
        model, method, tx, examples_per_perturbation=2, per_device_batch=2,
        weight_decay=wd, label_smoothing=0.0, grad_clip_norm=5.0,
        freeze_batch_norm=True), mesh)
    state = jax.tree_util.tree_map(jnp.copy, steps.new_train_state(
        params, batch_stats, optax.chain(method, tx).init(params)))
    new = step(jax.device_put(state, parallel.replicated(mesh)),
               parallel.global_batch(mesh, {"image": images, "label": labels}),
               jax.random.PRNGKey(0))
    for got, ref in zip(jax.tree_util.tree_leaves(new.params),
                        jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)
    for got, ref in zip(jax.tree_util.tree_leaves(new.batch_stats),
                        jax.tree_util.tree_leaves(batch_stats)):
        np.testing.assert_array_equal(got, ref)
