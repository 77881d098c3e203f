"""Tests of sam_jax.sam against numpy closed forms, loops and optax.contrib.sam."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, PartitionSpec as P

import sam_jax

NUM_DEVICES = 8


# ---------------------------------------------------------------- references
# Logistic regression, y in {-1, +1}: L(w, b) = mean log(1 + exp(-y (x.w + b))).

def np_grad(params, x, y):
    """Closed-form gradient of the logistic loss, float64."""
    w, b = np.asarray(params["w"], np.float64), np.float64(params["b"])
    z = x @ w + b
    s = -y / (1.0 + np.exp(y * z))  # dL/dz per example
    return {"w": x.T @ s / len(y), "b": np.mean(s)}


def np_norm(tree):
    return np.sqrt(sum(np.sum(np.square(v)) for v in tree.values()))


def np_sam_grad(params, x, y, rho, adaptive=False, eta=0.01, eps=1e-12):
    """Gradient at w + e, with e from the SAM or ASAM formula, in numpy."""
    g = np_grad(params, x, y)
    if adaptive:
        t = {k: np.abs(np.asarray(v, np.float64)) + eta for k, v in params.items()}
        tg = {k: t[k] * g[k] for k in g}
        e = {k: rho * t[k] * tg[k] / (np_norm(tg) + eps) for k in g}
    else:
        e = {k: rho * g[k] / (np_norm(g) + eps) for k in g}
    shifted = {k: np.asarray(params[k], np.float64) + e[k] for k in params}
    return np_grad(shifted, x, y)


def jax_loss(params, x, y):
    z = x @ params["w"] + params["b"]
    return jnp.mean(jnp.logaddexp(0.0, -y * z))


def make_problem(n=64, d=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = np.where(rng.normal(size=n) + x[:, 0] > 0, 1.0, -1.0).astype(np.float32)
    params = {"w": rng.normal(size=d).astype(np.float32) * 0.5,
              "b": np.float32(0.3)}
    return params, x, y


def sam_update(tx, params, x, y):
    """One tx.update with grads and grad_fn on (x, y); returns updates."""
    grad_fn = lambda p: jax.grad(jax_loss)(p, x, y)
    state = tx.init(params)
    updates, _ = jax.jit(functools.partial(tx.update, grad_fn=grad_fn))(
        grad_fn(params), state, params)
    return updates


def assert_tree_close(a, b, rtol=1e-5, atol=1e-6):
    for k in b:
        np.testing.assert_allclose(np.asarray(a[k], np.float64), b[k],
                                   rtol=rtol, atol=atol, err_msg=k)


# ---------------------------------------------------------------- single device

@pytest.mark.parametrize("rho", [0.01, 0.05, 0.5])
def test_sam_gradient_matches_closed_form(rho):
    params, x, y = make_problem()
    updates = sam_update(sam_jax.sam(rho), params, x, y)
    assert_tree_close(updates, np_sam_grad(params, x, y, rho))


@pytest.mark.parametrize("eta", [0.01, 0.0])
def test_asam_gradient_matches_closed_form(eta):
    params, x, y = make_problem(seed=1)
    # The every-leaf rule ("all"); the authors' default is tested below.
    updates = sam_update(sam_jax.sam(0.5, adaptive=True, eta=eta, asam_leaves="all"),
                         params, x, y)
    assert_tree_close(updates, np_sam_grad(params, x, y, 0.5, adaptive=True, eta=eta))


def test_sam_differs_from_plain_gradient():
    # Guards the closed-form test against a reference that ignores rho.
    params, x, y = make_problem()
    updates = sam_update(sam_jax.sam(0.5), params, x, y)
    plain = np_grad(params, x, y)
    assert np.abs(np.asarray(updates["w"]) - plain["w"]).max() > 1e-3


def test_rho_zero_is_exactly_the_base_optimizer():
    params, x, y = make_problem()
    base = optax.sgd(0.1, momentum=0.9, nesterov=True)
    tx = optax.chain(sam_jax.sam(0.0), base)
    grad_fn = lambda p: jax.grad(jax_loss)(p, x, y)
    s_sam, s_base, p_sam, p_base = tx.init(params), base.init(params), params, params
    for _ in range(3):
        u_sam, s_sam = tx.update(grad_fn(p_sam), s_sam, p_sam, grad_fn=grad_fn)
        u_base, s_base = base.update(grad_fn(p_base), s_base, p_base)
        p_sam = optax.apply_updates(p_sam, u_sam)
        p_base = optax.apply_updates(p_base, u_base)
    for k in params:
        np.testing.assert_array_equal(np.asarray(p_sam[k]), np.asarray(p_base[k]))


@pytest.mark.parametrize("adaptive", [False, True])
def test_zero_gradient_stays_finite(adaptive):
    params = {"w": jnp.zeros(4), "b": jnp.zeros(())}
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    tx = sam_jax.sam(0.05, adaptive=adaptive, eta=0.0)
    updates, _ = tx.update(zeros, tx.init(params), params, grad_fn=lambda p: zeros)
    for v in jax.tree_util.tree_leaves(updates):
        assert np.all(np.isfinite(np.asarray(v)))
        np.testing.assert_array_equal(np.asarray(v), 0.0)


def test_rho_schedule_is_followed_step_by_step():
    params, x, y = make_problem(seed=2)
    schedule = lambda count: 0.05 * (count + 1)  # 0.05, 0.10, 0.15, ...
    lr = 0.2
    tx = optax.chain(sam_jax.sam(schedule), optax.sgd(lr))
    grad_fn = lambda p: jax.grad(jax_loss)(p, x, y)
    state, p = tx.init(params), params
    ref = {k: np.asarray(v, np.float64) for k, v in params.items()}
    for step in range(4):
        updates, state = tx.update(grad_fn(p), state, p, grad_fn=grad_fn)
        p = optax.apply_updates(p, updates)
        g = np_sam_grad(ref, x, y, 0.05 * (step + 1))
        ref = {k: ref[k] - lr * g[k] for k in ref}
        assert_tree_close(p, ref, rtol=1e-5, atol=1e-5)


def test_composes_with_clipping_and_adam_under_jit():
    params, x, y = make_problem(seed=3)
    rho, lr = 0.1, 0.01
    tx = optax.chain(sam_jax.sam(rho), optax.clip_by_global_norm(0.05),
                     optax.adam(lr))
    ref_tx = optax.chain(optax.clip_by_global_norm(0.05), optax.adam(lr))
    grad_fn = lambda p: jax.grad(jax_loss)(p, x, y)
    step = jax.jit(functools.partial(tx.update, grad_fn=grad_fn))
    state, ref_state, p = tx.init(params), ref_tx.init(params), params
    for _ in range(3):
        ref_grads = jax.tree_util.tree_map(
            jnp.float32, np_sam_grad({k: np.asarray(v) for k, v in p.items()},
                                     x, y, rho))
        ref_updates, ref_state = ref_tx.update(ref_grads, ref_state, p)
        updates, state = step(grad_fn(p), state, p)
        assert_tree_close(updates, {k: np.asarray(v, np.float64)
                                    for k, v in ref_updates.items()}, rtol=1e-4,
                          atol=1e-7)
        p = optax.apply_updates(p, updates)


def test_bfloat16_in_bfloat16_out():
    params, x, y = make_problem()
    params16 = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.bfloat16), params)
    grad_fn = lambda p: jax.grad(jax_loss)(p, x.astype(jnp.bfloat16),
                                            y.astype(jnp.bfloat16))
    tx = sam_jax.sam(0.05)
    updates, _ = jax.jit(functools.partial(tx.update, grad_fn=grad_fn))(
        grad_fn(params16), tx.init(params16), params16)
    for v in jax.tree_util.tree_leaves(updates):
        assert v.dtype == jnp.bfloat16
    ref = np_sam_grad(params, x, y, 0.05)
    assert_tree_close(updates, ref, rtol=5e-2, atol=5e-3)


@pytest.mark.parametrize("kwargs, name", [
    (dict(rho=-0.1), "rho"), (dict(rho=0.1, eta=-1.0), "eta"),
    (dict(rho=0.1, eps=0.0), "eps")])
def test_bad_hyperparameters_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        sam_jax.sam(**kwargs)


def test_update_without_grad_fn_is_an_error():
    params, x, y = make_problem()
    tx = sam_jax.sam(0.05)
    with pytest.raises(ValueError, match="grad_fn"):
        tx.update(params, tx.init(params), params)


def test_equals_optax_contrib_sam_opaque_mode():
    params, x, y = make_problem(seed=4)
    rho, lr = 0.05, 0.1
    # eps so small that it cannot move float32 (optax's normalize has none).
    ours = optax.chain(sam_jax.sam(rho, eps=1e-30), optax.sgd(lr))
    theirs = optax.contrib.sam(
        optax.sgd(lr), optax.chain(optax.contrib.normalize(), optax.sgd(rho)),
        sync_period=2, opaque_mode=True)
    grad_fn = lambda p: jax.grad(jax_loss)(p, x, y)
    s_ours, s_theirs, p_ours, p_theirs = (ours.init(params), theirs.init(params),
                                          params, params)
    for _ in range(3):
        u, s_ours = ours.update(grad_fn(p_ours), s_ours, p_ours, grad_fn=grad_fn)
        v, s_theirs = theirs.update(grad_fn(p_theirs), s_theirs, p_theirs,
                                    grad_fn=lambda p, i: grad_fn(p))
        p_ours = optax.apply_updates(p_ours, u)
        p_theirs = optax.apply_updates(p_theirs, v)
    for k in params:
        np.testing.assert_allclose(p_ours[k], p_theirs[k], rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- 8 devices

def per_shard_reference(params, x, y, rho, num_shards, sync=False):
    """Loop over shards: each perturbs with its own gradient; mean of g_sam."""
    xs, ys = np.split(x, num_shards), np.split(y, num_shards)
    if sync:
        return np_sam_grad(params, x, y, rho)
    grads = [np_sam_grad(params, xi, yi, rho) for xi, yi in zip(xs, ys)]
    return {k: np.mean([g[k] for g in grads], axis=0) for k in params}


def device_step(params, x, y, rho, sync):
    tx = sam_jax.sam(rho, axis_name="batch", sync_perturbation=sync)
    grad_fn = lambda p: jax.grad(jax_loss)(p, x, y)
    # Under shard_map, grad of replicated params would be the sum over devices.
    grads = grad_fn(sam_jax.per_device(params, "batch"))
    updates, _ = tx.update(grads, tx.init(params), params, grad_fn=grad_fn)
    return updates


@pytest.mark.parametrize("mapper", ["pmap", "vmap"])
@pytest.mark.parametrize("sync", [False, True])
def test_pmap_per_device_perturbation_equals_loop(sync, mapper):
    assert jax.device_count() == NUM_DEVICES
    params, x, y = make_problem(n=128)
    rho = 0.3
    step = getattr(jax, mapper)(functools.partial(device_step, rho=rho, sync=sync),
                                axis_name="batch", in_axes=(None, 0, 0))
    updates = step(params, x.reshape(NUM_DEVICES, -1, x.shape[1]),
                   y.reshape(NUM_DEVICES, -1))
    first_device = jax.tree_util.tree_map(lambda v: v[0], updates)
    assert_tree_close(first_device,
                      per_shard_reference(params, x, y, rho, NUM_DEVICES, sync))


@pytest.mark.parametrize("sync", [False, True])
def test_shard_map_per_device_perturbation_equals_loop(sync):
    params, x, y = make_problem(n=128, seed=5)
    rho = 0.3
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    step = jax.jit(jax.shard_map(
        functools.partial(device_step, rho=rho, sync=sync), mesh=mesh,
        in_specs=(P(), P("batch"), P("batch")), out_specs=P()))
    updates = step(params, x, y)
    assert_tree_close(updates,
                      per_shard_reference(params, x, y, rho, NUM_DEVICES, sync))


def test_per_device_and_synced_differ():
    # Guards the two tests above: the references must really differ.
    params, x, y = make_problem(n=128)
    a = per_shard_reference(params, x, y, 0.3, NUM_DEVICES, sync=False)
    b = per_shard_reference(params, x, y, 0.3, NUM_DEVICES, sync=True)
    assert np.abs(a["w"] - b["w"]).max() > 1e-4


# ---------------------------------------------------------------- m-sharpness

def grouped_loss(params, batch, index):
    del index
    return jax_loss(params, batch["x"], batch["y"]), ()


@pytest.mark.parametrize("group_map", sam_jax.GROUP_MAPS)
@pytest.mark.parametrize("m", [4, 16, 64])
def test_grouped_equals_loop_over_groups(m, group_map):
    params, x, y = make_problem(n=64, seed=6)
    rho = 0.2
    out = jax.jit(functools.partial(
        sam_jax.grouped_sam_gradient, grouped_loss, rho=rho,
        examples_per_perturbation=m, group_map=group_map))(params, {"x": x, "y": y})
    assert_tree_close(out.grads, per_shard_reference(params, x, y, rho, 64 // m))
    assert out.clean_loss.shape == (64 // m,)


@pytest.mark.parametrize("group_map", sam_jax.GROUP_MAPS)
@pytest.mark.parametrize("m", [8, 64])  # 64: the whole batch is one group
def test_grouped_sync_equals_whole_batch_sam(m, group_map):
    params, x, y = make_problem(n=64, seed=7)
    out = sam_jax.grouped_sam_gradient(
        grouped_loss, params, {"x": x, "y": y}, rho=0.2,
        examples_per_perturbation=m, sync_perturbation=True, group_map=group_map)
    assert_tree_close(out.grads, np_sam_grad(params, x, y, 0.2))


def test_grouped_with_m_per_device_batch_equals_8_devices():
    params, x, y = make_problem(n=128, seed=8)
    rho = 0.3
    single = sam_jax.grouped_sam_gradient(
        grouped_loss, params, {"x": x, "y": y}, rho=rho,
        examples_per_perturbation=128 // NUM_DEVICES)
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    multi = jax.jit(jax.shard_map(
        functools.partial(device_step, rho=rho, sync=False), mesh=mesh,
        in_specs=(P(), P("batch"), P("batch")), out_specs=P()))(params, x, y)
    for k in params:
        np.testing.assert_allclose(single.grads[k], multi[k], rtol=1e-5, atol=1e-7)


def test_grouped_inside_shard_map_groups_every_device():
    # 8 devices x 4 groups of m=4: the same as 32 groups on one device.
    params, x, y = make_problem(n=128, seed=9)
    rho = 0.3
    mesh = Mesh(np.array(jax.devices()), ("batch",))

    def per_device(params, batch):
        return sam_jax.grouped_sam_gradient(
            grouped_loss, params, batch, rho=rho, examples_per_perturbation=4,
            axis_name="batch").grads
    out = jax.jit(jax.shard_map(per_device, mesh=mesh,
                                in_specs=(P(), P("batch")), out_specs=P()))(
        params, {"x": x, "y": y})
    assert_tree_close(out, per_shard_reference(params, x, y, rho, 32))


def test_grouped_rho_zero_is_plain_gradient_one_pass():
    params, x, y = make_problem(n=64)
    calls = []

    def counting_loss(params, batch, index):
        calls.append(1)
        return grouped_loss(params, batch, index)
    out = sam_jax.grouped_sam_gradient(counting_loss, params, {"x": x, "y": y},
                                       rho=0.0, examples_per_perturbation=64)
    assert len(calls) == 1
    assert_tree_close(out.grads, np_grad(params, x, y))


@pytest.mark.parametrize("m", [0, 5, 128])
def test_grouped_rejects_m_not_dividing_the_batch(m):
    params, x, y = make_problem(n=64)
    with pytest.raises(ValueError, match=f"examples_per_perturbation={m}"):
        sam_jax.grouped_sam_gradient(grouped_loss, params, {"x": x, "y": y},
                                     rho=0.1, examples_per_perturbation=m)


# ------------------------------------------------- ASAM's leaves, grouped aux

def np_asam_perturbation(grads, params, rho, scaled, eta=0.01):
    """e = rho T^2 g / ||T g||, T = |w| + eta on the leaves named in `scaled`
    (the authors' rule written out by hand), 1 elsewhere; float64."""
    t = {k: np.abs(np.asarray(params[k], np.float64)) + eta if k in scaled
         else np.ones(np.shape(params[k])) for k in params}
    tg = {k: t[k] * np.asarray(grads[k], np.float64) for k in params}
    norm = np.sqrt(sum(np.sum(v ** 2) for v in tg.values()))
    return {k: rho * t[k] * tg[k] / norm for k in params}


@pytest.mark.parametrize("names,scaled", [
    # Haiku: Linear / Conv w and b, BatchNorm scale and offset, Embed embeddings.
    (("w", "b", "scale", "offset", "embeddings"), ("w", "scale", "embeddings")),
    # PyTorch-style (equinox, ports): the authors' test, "weight" in the name.
    (("weight", "bias", "weight_g", "in_proj_weight"),
     ("weight", "weight_g", "in_proj_weight")),
    # flax: Dense / Conv kernel and bias, BatchNorm scale and bias, Embed embedding.
    (("kernel", "bias", "scale", "embedding"), ("kernel", "scale", "embedding")),
])
def test_asam_scales_the_weights_of_each_naming_convention(names, scaled):
    rng = np.random.default_rng(3)
    params = {k: rng.normal(size=(3, 2)).astype(np.float32) for k in names}
    grads = {k: rng.normal(size=(3, 2)).astype(np.float32) for k in names}
    e = sam_jax.perturbation(grads, params, 0.5, adaptive=True, eta=0.01)
    expected = np_asam_perturbation(grads, params, 0.5, scaled)
    for k in names:
        np.testing.assert_allclose(np.asarray(e[k]), expected[k], rtol=1e-5, atol=1e-7)


def test_asam_that_would_scale_no_leaf_is_an_error_not_plain_sam():
    params = {"alpha": jnp.ones(3), "beta": jnp.ones(())}
    for tx in (sam_jax.asam(0.5), sam_jax.sam(0.5, adaptive=True),
               sam_jax.sam(0.5, adaptive=True, asam_leaves=lambda path: False)):
        with pytest.raises(ValueError, match=r"ASAM scales no parameter: no leaf name "
                           r"of \['alpha', 'beta'\]"):
            tx.update(params, tx.init(params), params, grad_fn=lambda p: p)
    tx = sam_jax.asam(0.5, leaves="all")  # every leaf: allowed
    tx.update(params, tx.init(params), params, grad_fn=lambda p: p)


def test_grouped_perturbed_aux_averages_integer_leaves_without_truncating():
    params, x, y = make_problem(n=16, seed=4)

    def loss_with_count(params, batch, index):
        del index  # the count depends on the data only: the same in both passes
        return (jax_loss(params, batch["x"], batch["y"]),
                {"positives": jnp.sum(batch["y"] > 0).astype(jnp.int32),
                 "any_positive": jnp.any(batch["y"] > 0)})
    out = sam_jax.grouped_sam_gradient(loss_with_count, params, {"x": x, "y": y},
                                       rho=0.1, examples_per_perturbation=4)
    counts = (y.reshape(4, 4) > 0).sum(axis=1)
    np.testing.assert_array_equal(out.clean_aux["positives"], counts)  # per group
    assert float(out.perturbed_aux["positives"]) == pytest.approx(counts.mean())
    assert float(out.perturbed_aux["any_positive"]) == pytest.approx(
        (counts > 0).mean())
