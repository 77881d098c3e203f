"""Tests of sam_jax.parallel on 8 virtual CPU devices, against numpy."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from sam_jax import parallel
from sam_jax.steps import AXIS


def host_batch(num_examples=16, seed=0):
    rng = np.random.default_rng(seed)
    return {"image": rng.normal(size=(num_examples, 4, 4, 3)).astype(np.float32),
            "label": rng.integers(0, 10, num_examples).astype(np.int32)}


def test_make_mesh_puts_every_device_on_one_batch_axis():
    mesh = parallel.make_mesh()
    assert jax.device_count() == 8
    assert mesh.axis_names == ("batch",) == (AXIS,)
    assert mesh.devices.shape == (8,)
    assert list(mesh.devices) == jax.devices()
    assert parallel.replicated(mesh).spec == P()
    assert parallel.batch_sharded(mesh).spec == P("batch")


def test_make_mesh_over_some_devices_splits_the_batch_over_them_only():
    devices = jax.devices()[2:4]
    mesh = parallel.make_mesh(devices)
    assert mesh.axis_names == (AXIS,) and list(mesh.devices) == devices
    batch = host_batch()
    sharded = parallel.global_batch(mesh, batch)["image"]
    shards = sorted(sharded.addressable_shards, key=lambda s: devices.index(s.device))
    assert [s.device for s in shards] == devices
    for i, shard in enumerate(shards):  # 8 examples each
        np.testing.assert_array_equal(np.asarray(shard.data),
                                      batch["image"][8 * i:8 * i + 8])
    with pytest.raises(ValueError, match="at least one device"):
        parallel.make_mesh([])


def test_global_batch_splits_the_host_batch_along_the_examples():
    mesh = parallel.make_mesh()
    batch = host_batch()
    sharded = parallel.global_batch(mesh, batch)
    assert set(sharded) == {"image", "label"}
    devices = list(mesh.devices)
    for key, want in batch.items():
        got = sharded[key]
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_array_equal(np.asarray(got), want)
        # The i-th device of the mesh holds examples 2i and 2i + 1.
        shards = sorted(got.addressable_shards, key=lambda s: devices.index(s.device))
        assert len(shards) == 8
        for i, shard in enumerate(shards):
            assert shard.index[0] == slice(2 * i, 2 * i + 2)
            np.testing.assert_array_equal(np.asarray(shard.data), want[2 * i:2 * i + 2])


def test_shard_train_step_runs_per_device_and_donates_the_state():
    mesh = parallel.make_mesh()
    batch = host_batch()

    def per_device_step(state, batch, key):
        # Per device: the square of its own shard's mean, averaged over devices
        # (not the square of the global mean); and the number of devices.
        shard_mean = batch["image"].mean(axis=0)
        return {"w": state["w"] + jax.lax.pmean(shard_mean ** 2, AXIS),
                "devices": state["devices"] + jax.lax.psum(1, AXIS)}

    step = parallel.shard_train_step(per_device_step, mesh)
    state = jax.device_put({"w": np.ones((4, 4, 3), np.float32),
                            "devices": np.zeros((), np.int32)},
                           parallel.replicated(mesh))
    new_state = step(state, parallel.global_batch(mesh, batch), jax.random.PRNGKey(0))
    assert all(leaf.is_deleted() for leaf in jax.tree_util.tree_leaves(state))
    want = 1 + np.mean([shard.mean(axis=0) ** 2
                        for shard in np.split(batch["image"], 8)], axis=0)
    np.testing.assert_allclose(new_state["w"], want, rtol=1e-6)
    assert not np.allclose(want, 1 + batch["image"].mean(axis=0) ** 2)
    assert int(new_state["devices"]) == 8
    assert new_state["w"].sharding.is_fully_replicated


def test_jit_eval_step_reads_a_sharded_batch_and_returns_replicated_sums():
    mesh = parallel.make_mesh()
    batch = host_batch()
    weights = np.arange(3, dtype=np.float32)

    def eval_step(w, batch):
        return {"weighted_sum": (batch["image"] * w).sum(),
                "label_sum": batch["label"].sum()}

    step = parallel.jit_eval_step(eval_step, mesh)
    out = step(jax.device_put(weights, parallel.replicated(mesh)),
               parallel.global_batch(mesh, batch))
    np.testing.assert_allclose(out["weighted_sum"],
                               np.sum(batch["image"].astype(np.float64) * weights),
                               rtol=1e-5)
    assert int(out["label_sum"]) == batch["label"].sum()
    assert all(v.sharding.is_fully_replicated for v in out.values())


@pytest.mark.parametrize("mean", [False, True])
def test_psum_in_device_order_adds_left_to_right_like_a_numpy_loop(mean):
    """Bitwise the float32 sum x_0 + x_1 + ... + x_7 (then / 8), added in
    device order; integers exactly (their mean in float, as lax.pmean's); a leaf the devices share is its own mean
    (8 times itself as a sum)."""
    from sam_jax.collectives import psum_in_device_order
    mesh = parallel.make_mesh()
    n = mesh.size
    rng = np.random.default_rng(0)
    # Magnitudes far apart, so that the order of the additions shows in the bits;
    # 13 elements: not a multiple of the 8 slices.
    per_device = {"a": (rng.normal(size=(n, 13)) * 10.0 ** rng.integers(-4, 5, (n, 13))
                        ).astype(np.float32),
                  "b": rng.normal(size=(n, 2, 3)).astype(np.float32),
                  "count": rng.integers(0, 100, (n, 4)).astype(np.int32)}
    shared = rng.normal(size=(5,)).astype(np.float32)

    def per_device_fn(tree, shared):
        tree = jax.tree_util.tree_map(lambda x: x[0], tree)
        return psum_in_device_order({**tree, "shared": shared}, AXIS, mean=mean)

    out = jax.jit(jax.shard_map(per_device_fn, mesh=mesh, in_specs=(P(AXIS), P()),
                                out_specs=P()))(per_device, shared)
    for name in ("a", "b"):
        expected = per_device[name][0]
        for j in range(1, n):
            expected = expected + per_device[name][j]
        if mean:
            expected = expected / np.float32(n)
        assert out[name].dtype == np.float32
        np.testing.assert_array_equal(np.asarray(out[name]), expected)
    count = per_device["count"].sum(0)
    np.testing.assert_array_equal(np.asarray(out["count"]),
                                  count / np.float32(n) if mean else count)
    np.testing.assert_array_equal(np.asarray(out["shared"]),
                                  shared if mean else shared * np.float32(n))
