"""Tests of sam_jax.steps: one training step on 8 devices (under parallel's
shard_map) against Python loops over the shards with the official semantics:
SAM, frozen BatchNorm, Shake-Shake's true gradient in the first pass,
BatchNorm over the device batch, gradient accumulation, skipped steps."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import sam_jax
from helpers import TinyBatchNormNet
from helpers import slow_except
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


# ------------------------------------- Shake-Shake / ShakeDrop: the first pass

def official_shake_step(model, variables, images, labels, key, *, rho, lr, wd,
                        num_devices, exact_first_pass=True):
    """The official code's step (true_gradient fix) as a loop over the devices.

    The first pass differentiates the forward computation exactly: shake's
    forward/backward mix is replaced by the forward value alone, so no
    backward gate is drawn there. The second pass keeps the shake gradient.
    Both passes draw with the trainer's key (step 0, the device's group).
    """
    from unittest import mock
    from sam_jax.models import shake
    step_key = jax.random.fold_in(key, 0)
    grads = []
    for device, (x, y) in enumerate(zip(np.split(images, num_devices),
                                        np.split(labels, num_devices))):
        rng = jax.random.fold_in(step_key, device)

        def loss(p):
            logits, _ = model.apply({"params": p, "batch_stats": variables["batch_stats"]},
                                    x, train=True, mutable=["batch_stats"],
                                    rngs={"dropout": rng})
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return ce + 0.5 * wd * sum(jnp.sum(w ** 2)
                                       for w in jax.tree_util.tree_leaves(p))
        params = variables["params"]
        if exact_first_pass:
            with mock.patch.object(shake, "_mix", lambda forward, backward: forward):
                g = jax.grad(loss)(params)
        else:
            g = jax.grad(loss)(params)
        norm = optax.tree.norm(g)
        g_sam = jax.grad(loss)(jax.tree_util.tree_map(lambda w, v: w + rho * v / norm,
                                                      params, g))
        grads.append(g_sam)
    mean = jax.tree_util.tree_map(lambda *g: sum(g) / num_devices, *grads)
    tx = optax.chain(optax.clip_by_global_norm(5.0),
                     optax.sgd(lr, momentum=0.9, nesterov=True))
    updates, _ = tx.update(mean, tx.init(variables["params"]), variables["params"])
    return optax.apply_updates(variables["params"], updates), mean


def flat(tree):
    return np.concatenate([np.ravel(np.asarray(x, np.float64))
                           for x in jax.tree_util.tree_leaves(tree)])


@pytest.mark.parametrize("name", slow_except(
    ["shake_shake_8_2x16d", "pyramidnet_11_24_shakedrop"], ("shake_shake_8_2x16d",)))
def test_shake_models_first_pass_takes_the_true_gradient(name, capsys):
    model = get_model(name, 10)
    rng = np.random.default_rng(3)
    images = rng.normal(size=(16, 8, 8, 3)).astype(np.float32)
    labels = rng.integers(0, 10, 16).astype(np.int32)
    variables = model.init(jax.random.PRNGKey(0), images[:1])
    lr, rho, wd, key = 0.1, 0.3, 5e-4, jax.random.PRNGKey(7)
    method = sam_jax.sam(rho, axis_name=steps.AXIS, grouped=True,
                         aux_init=steps.aux_example())
    base = optax.chain(optax.clip_by_global_norm(5.0),
                       optax.sgd(lr, momentum=0.9, nesterov=True))
    state = steps.new_train_state(variables["params"], variables["batch_stats"],
                                  optax.chain(method, base).init(variables["params"]))
    mesh = parallel.make_mesh()
    step = parallel.shard_train_step(steps.make_train_step(
        model, method, base, examples_per_perturbation=2, per_device_batch=2,
        weight_decay=wd, label_smoothing=0.0, grad_clip_norm=5.0,
        clean_pass_true_gradient=True), mesh)
    new = step(jax.device_put(jax.tree_util.tree_map(jnp.copy, state),
                              parallel.replicated(mesh)),
               parallel.global_batch(mesh, {"image": images, "label": labels}), key)
    want, official = official_shake_step(model, variables, images, labels, key, rho=rho,
                                         lr=lr, wd=wd, num_devices=8)
    np.testing.assert_allclose(flat(new.params), flat(want), rtol=2e-4, atol=2e-6)
    # The earlier rule (shake gradient in both passes) is another gradient.
    _, earlier = official_shake_step(model, variables, images, labels, key, rho=rho,
                                     lr=lr, wd=wd, num_devices=8, exact_first_pass=False)
    a, b = flat(earlier), flat(official)
    cosine = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    relative = np.linalg.norm(a - b) / np.linalg.norm(b)
    with capsys.disabled():
        print(f"\n{name}: shake gradient in the first pass vs the official step: "
              f"cos(g_sam) {cosine:.3f}, relative difference {relative:.3f}")
    assert cosine < 0.999


# ------------------------------------------------- BatchNorm over the device

class DenseBatchNormNet(nn.Module):
    """Dense, BatchNorm, ReLU, Dense: small enough to write out by hand."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(5)(x.reshape(x.shape[0], -1))
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
        return nn.Dense(3)(x)


def device_batch_norm_step(model, variables, images, labels, rho, lr, wd):
    """One SAM step at m = 1, 4 examples per device, BatchNorm over the device."""
    return one_step(model, variables, images, labels, rho=rho, base=optax.sgd(lr),
                    weight_decay=wd, examples_per_perturbation=1, per_device_batch=4,
                    batch_norm_over="device")


def test_batch_norm_over_the_device_batch_with_small_groups():
    """m = 1 with config.sam.batch_norm 'device': each example perturbs its own
    weights, and BatchNorm normalises with the statistics of the device's
    whole batch (each example through its own weights), gradients through
    them. Reference: the device batch's loss written out in jnp as a function
    of per-example weights; an example's gradient is 4 x that loss's gradient
    in its weights."""
    model = DenseBatchNormNet()
    rng = np.random.default_rng(4)
    images = rng.normal(size=(32, 2, 2, 1)).astype(np.float32)
    labels = rng.integers(0, 3, 32).astype(np.int32)
    variables = model.init(jax.random.PRNGKey(0), images[:1])
    lr, rho, wd = 0.1, 0.05, 5e-4
    new = device_batch_norm_step(model, variables, images, labels, rho, lr, wd)

    def hidden(W, x):
        return jnp.einsum("nf,nfk->nk", x, W["Dense_0"]["kernel"]) + W["Dense_0"]["bias"]

    def device_loss(W, x, y):  # W: every parameter with a leading example axis
        h = hidden(W, x)
        mean, var = h.mean(0), ((h - h.mean(0)) ** 2).mean(0)
        h = ((h - mean) / jnp.sqrt(var + 1e-5) * W["BatchNorm_0"]["scale"]
             + W["BatchNorm_0"]["bias"])
        logits = (jnp.einsum("nf,nfk->nk", jnp.maximum(h, 0), W["Dense_1"]["kernel"])
                  + W["Dense_1"]["bias"])
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        l2 = 0.5 * sum(jnp.sum(w.reshape(len(x), -1) ** 2, axis=1)
                       for w in jax.tree_util.tree_leaves(W))
        return jnp.mean(ce + wd * l2)

    params = variables["params"]
    grads, stats = [], []
    for x, y in zip(np.split(images, 8), np.split(labels, 8)):
        x = x.reshape(4, -1)
        W = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (4,) + a.shape), params)
        g = jax.tree_util.tree_map(lambda a: 4 * a, jax.grad(device_loss)(W, x, y))
        norms = jnp.sqrt(sum(jnp.sum(a.reshape(4, -1) ** 2, axis=1)
                             for a in jax.tree_util.tree_leaves(g)))
        shifted = jax.tree_util.tree_map(
            lambda w, a: w + rho * a / norms.reshape((4,) + (1,) * (a.ndim - 1)), W, g)
        perturbed = jax.grad(device_loss)(shifted, x, y)  # 4 x it / 4 examples
        grads.append(jax.tree_util.tree_map(lambda a: a.sum(0), perturbed))
        h = hidden(W, x)
        old = variables["batch_stats"]["BatchNorm_0"]
        stats.append({"mean": 0.9 * old["mean"] + 0.1 * h.mean(0),
                      "var": 0.9 * old["var"] + 0.1 * ((h - h.mean(0)) ** 2).mean(0)})
    mean = jax.tree_util.tree_map(lambda *g: sum(g) / len(g), *grads)
    want = jax.tree_util.tree_map(lambda w, g: w - lr * g, params, mean)
    np.testing.assert_allclose(flat(new.params), flat(want), rtol=1e-4, atol=1e-6)
    want_stats = jax.tree_util.tree_map(lambda *s: sum(s) / 8, *stats)
    np.testing.assert_allclose(flat(new.batch_stats["BatchNorm_0"]), flat(want_stats),
                               rtol=1e-4, atol=1e-6)


def test_batch_norm_over_the_device_batch_at_rho_zero_is_the_device_batch_step():
    """With rho = 0 the groups' weights are all w, so m = 1 with BatchNorm over
    the device is the plain gradient step of each device's batch (WRN-10-1,
    whose BatchNorm then sees the batch it sees at m = the device batch)."""
    model = get_model("wrn10_1", 10)
    rng = np.random.default_rng(5)
    images = rng.normal(size=(32, 8, 8, 1)).astype(np.float32)
    labels = rng.integers(0, 10, 32).astype(np.int32)
    variables = model.init(jax.random.PRNGKey(0), images[:1])
    lr, wd = 0.1, 5e-4
    new = device_batch_norm_step(model, variables, images, labels, 0.0, lr, wd)

    def loss(p, x, y):
        logits, mutated = model.apply({"params": p, "batch_stats": variables["batch_stats"]},
                                      x, train=True, mutable=["batch_stats"])
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return ce + 0.5 * wd * sum(jnp.sum(w ** 2)
                                   for w in jax.tree_util.tree_leaves(p)), mutated
    grads, stats = [], []
    for x, y in zip(np.split(images, 8), np.split(labels, 8)):
        g, mutated = jax.grad(loss, has_aux=True)(variables["params"], x, y)
        grads.append(g)
        stats.append(mutated["batch_stats"])
    mean = jax.tree_util.tree_map(lambda *g: sum(g) / len(g), *grads)
    want = jax.tree_util.tree_map(lambda w, g: w - lr * g, variables["params"], mean)
    np.testing.assert_allclose(flat(new.params), flat(want), rtol=1e-4, atol=1e-6)
    want_stats = jax.tree_util.tree_map(lambda *s: sum(s) / 8, *stats)
    np.testing.assert_allclose(flat(new.batch_stats), flat(want_stats), rtol=1e-4,
                               atol=1e-6)


# ----------------------------------------------- accumulation and skipped steps

def one_step(model, variables, images, labels, rho=0.1, base=None, weight_decay=5e-4,
             **settings):
    """One SAM step on the 8 devices (base: SGD, lr 0.1, momentum 0.9)."""
    method = sam_jax.sam(rho, axis_name=steps.AXIS, grouped=True,
                         aux_init=steps.aux_example())
    base = base or optax.sgd(0.1, momentum=0.9)
    state = steps.new_train_state(variables["params"], variables["batch_stats"],
                                  optax.chain(method, base).init(variables["params"]))
    mesh = parallel.make_mesh()
    step = parallel.shard_train_step(steps.make_train_step(
        model, method, base, weight_decay=weight_decay, label_smoothing=0.0,
        **settings), mesh)
    return step(jax.device_put(jax.tree_util.tree_map(jnp.copy, state),
                               parallel.replicated(mesh)),
                parallel.global_batch(mesh, {"image": images, "label": labels}),
                jax.random.PRNGKey(0))


@pytest.mark.parametrize("group_loop", slow_except(steps.GROUP_LOOPS, ("unrolled",)))
def test_each_group_perturbs_alone_whichever_the_group_loop(group_loop):
    """4 groups of 4 on each of the 8 devices against a loop over the 32
    groups, each its own perturbation and BatchNorm statistics."""
    model = get_model("wrn10_1", 10)
    rng = np.random.default_rng(7)
    images = rng.normal(size=(128, 8, 8, 1)).astype(np.float32)
    labels = rng.integers(0, 10, 128).astype(np.int32)
    variables = model.init(jax.random.PRNGKey(0), images[:1])
    base = optax.chain(optax.clip_by_global_norm(5.0),
                       optax.sgd(0.1, momentum=0.9, nesterov=True))
    new = one_step(model, variables, images, labels, rho=0.2, base=base,
                   examples_per_perturbation=4, per_device_batch=16,
                   group_loop=group_loop)
    want_params, want_stats = reference_sam_step(
        model, variables["params"], variables["batch_stats"], images, labels,
        rho=0.2, weight_decay=5e-4, lr=0.1, num_shards=32)
    np.testing.assert_allclose(flat(new.params), flat(want_params), rtol=2e-4, atol=2e-6)
    np.testing.assert_allclose(flat(new.batch_stats), flat(want_stats),
                               rtol=2e-4, atol=2e-6)


def test_auto_group_loop_unrolls_a_few_groups_on_the_cpu_only():
    assert steps.auto_group_loop(4, False, "cpu") == "unrolled"
    assert steps.auto_group_loop(1, False, "cpu") == "vmap"  # nothing to unroll
    assert steps.auto_group_loop(steps.MAX_UNROLLED_GROUPS + 1, False, "cpu") == "vmap"
    assert steps.auto_group_loop(4, True, "cpu") == "vmap"  # pooled BatchNorm
    assert steps.auto_group_loop(4, False, "gpu") == "vmap"


def test_gradient_accumulation_equals_one_pass_for_the_same_m():
    model = get_model("wrn10_1", 10)
    rng = np.random.default_rng(5)
    images = rng.normal(size=(64, 8, 8, 1)).astype(np.float32)
    labels = rng.integers(0, 10, 64).astype(np.int32)
    variables = model.init(jax.random.PRNGKey(0), images[:1])
    whole = one_step(model, variables, images, labels, examples_per_perturbation=2,
                     per_device_batch=8)
    for k in (2, 4):
        accumulated = one_step(model, variables, images, labels,
                               examples_per_perturbation=2, per_device_batch=8,
                               grad_accum_steps=k)
        np.testing.assert_allclose(flat(accumulated.params), flat(whole.params),
                                   rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(flat(accumulated.batch_stats),
                                   flat(whole.batch_stats), rtol=1e-5, atol=1e-7)


def test_a_skipped_step_keeps_the_weights_and_advances_the_counters():
    model = get_model("wrn10_1", 10)
    images = np.full((16, 8, 8, 1), np.nan, np.float32)  # a non-finite loss
    labels = np.zeros(16, np.int32)
    variables = model.init(jax.random.PRNGKey(0), images[:1] * 0)
    new = one_step(model, variables, images, labels, examples_per_perturbation=2,
                   per_device_batch=2, skip_nonfinite=True)
    assert int(new.step) == 1 and int(new.nonfinite_steps) == 1
    np.testing.assert_array_equal(flat(new.params), flat(variables["params"]))
    counts = [int(x) for path, x in jax.tree_util.tree_leaves_with_path(new.opt_state)
              if jax.tree_util.keystr(path).endswith(".count")]
    assert counts and all(count == 1 for count in counts)  # schedules in step


@pytest.mark.parametrize("group_loop", steps.GROUP_LOOPS)
def test_logged_diagnostics_equal_the_loop_over_groups(group_loop):
    """What a SAM step logs (||g||, ||e||, cos(g, g_sam), the perturbed minus
    the clean loss, each group's share of ||e||^2) against a loop over the 16
    groups of 2 examples (8 devices x 2 groups), means over groups."""
    model = TinyBatchNormNet()
    rng = np.random.default_rng(3)
    images = rng.normal(size=(32, 6, 6, 2)).astype(np.float32)
    labels = rng.integers(0, 3, 32).astype(np.int32)
    params, batch_stats = tiny_variables(images, 3)
    rho, wd = 0.2, 1e-3

    @jax.jit
    def loss_and_grad(p, x, y):
        def loss(p):
            logits, _ = model.apply({"params": p, "batch_stats": batch_stats}, x,
                                    train=True, mutable=["batch_stats"])
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return ce + 0.5 * wd * sum(jnp.sum(w ** 2)
                                       for w in jax.tree_util.tree_leaves(p)), ce
        (_, ce), g = jax.value_and_grad(loss, has_aux=True)(p)
        return ce, g

    def flat(tree):
        return np.asarray(ravel_pytree(tree)[0], np.float64)

    want = {k: [] for k in ("clean_grad_norm", "perturbation_norm", "cosine",
                            "sharpness")}
    shares, sam_grads = [], []
    for x, y in zip(np.split(images, 16), np.split(labels, 16)):
        clean_ce, g = loss_and_grad(params, x, y)
        norm = np.linalg.norm(flat(g))
        e = jax.tree_util.tree_map(lambda v: rho * np.asarray(v, np.float64) / norm, g)
        perturbed_ce, g_sam = loss_and_grad(
            jax.tree_util.tree_map(lambda w, d: w + d.astype(np.float32), params, e), x, y)
        want["clean_grad_norm"].append(norm)
        want["perturbation_norm"].append(np.linalg.norm(flat(e)))
        want["cosine"].append(flat(g) @ flat(g_sam) / norm / np.linalg.norm(flat(g_sam)))
        want["sharpness"].append(float(perturbed_ce) - float(clean_ce))
        shares.append({k: np.sum(flat(e[k]) ** 2) / rho ** 2 for k in e})
        sam_grads.append(flat(g_sam))
    want = {k: np.mean(v) for k, v in want.items()}
    want.update({steps.SHARE_PREFIX + k: np.mean([s[k] for s in shares])
                 for k in params})
    want["grad_norm_before_clip"] = np.linalg.norm(np.mean(sam_grads, axis=0))

    method = sam_jax.sam(rho, axis_name=steps.AXIS, grouped=True,
                         aux_init=steps.aux_example())
    base = optax.sgd(0.1)
    mesh = parallel.make_mesh()
    step = parallel.shard_train_step(steps.make_train_step(
        model, method, base, examples_per_perturbation=2, per_device_batch=4,
        weight_decay=wd, label_smoothing=0.0, group_loop=group_loop), mesh)
    state = jax.tree_util.tree_map(jnp.copy, steps.new_train_state(
        params, batch_stats, optax.chain(method, base).init(params)))
    new = step(jax.device_put(state, parallel.replicated(mesh)),
               parallel.global_batch(mesh, {"image": images, "label": labels}),
               jax.random.PRNGKey(0))
    logged = jax.device_get(new.metrics_sum)
    assert logged["steps"] == 1 and logged["rho"] == pytest.approx(rho)
    assert set(want) <= set(logged)
    assert sum(want[steps.SHARE_PREFIX + k] for k in params) == pytest.approx(1.0)
    for key, value in want.items():
        assert logged[key] == pytest.approx(value, rel=2e-4, abs=1e-6), key
