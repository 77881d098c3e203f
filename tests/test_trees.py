"""Tests of sam_jax._trees (the leaf names ASAM and the checkpoint checks
share, the float32 inner product) and of the public collectives module."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import sam_jax
from sam_jax import _trees
from sam_jax import checkpoint
from sam_jax import collectives


class Pair(NamedTuple):
    first: jnp.ndarray
    second: list


def test_leaf_names_of_dict_keys_attributes_and_indices():
    tree = {"params": {"conv": {"kernel": jnp.ones(2)}},
            "pair": Pair(jnp.ones(1), [jnp.ones(3), jnp.ones(4)])}
    names = ["/".join(_trees.key_name(k) for k in path)
             for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    assert names == ["pair/first", "pair/second/0", "pair/second/1",
                     "params/conv/kernel"]
    leaves = [_trees.leaf_name(path)
              for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    assert leaves == ["first", "0", "1", "kernel"]
    assert _trees.leaf_name(()) == "None"  # a bare array has no key
    # The checkpoint checks name paths with the same helper.
    assert checkpoint.first_mismatch(tree, {**tree, "extra": jnp.ones(1)}) != ""
    assert set(checkpoint._shapes(tree)) == set(names)


def test_tree_vdot_is_the_float32_inner_product():
    rng = np.random.default_rng(0)
    a = {"w": rng.normal(size=(7, 5)), "b": rng.normal(size=3)}
    b = {"w": rng.normal(size=(7, 5)), "b": rng.normal(size=3)}
    expected = sum(np.sum(a[k] * b[k]) for k in a)  # float64
    as32 = lambda t: {k: jnp.asarray(v, jnp.float32) for k, v in t.items()}
    np.testing.assert_allclose(float(_trees.tree_vdot(as32(a), as32(b))), expected,
                               rtol=1e-5)
    bf16 = {k: v.astype(jnp.bfloat16) for k, v in as32(a).items()}
    assert _trees.tree_vdot(bf16, bf16).dtype == jnp.float32  # upcast before multiplying


def test_per_device_is_exported_from_the_public_collectives_module():
    assert sam_jax.per_device is collectives.per_device
    x = {"w": jnp.arange(3.0)}
    assert collectives.per_device(x, None) is x  # no axis: the identity
    assert collectives.pmean(x, None) is x
