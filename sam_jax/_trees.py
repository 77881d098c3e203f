"""Pytree helpers that optax.tree does not give with the same numbers, and the
name of a parameter by its key path.

tree_norm scales before squaring (gradients beyond 1e19 keep their norm);
tree_vdot sums each leaf's float32 products with jnp.sum, then the leaves in
order: optax.tree.vdot (a tensordot per leaf, at HIGHEST precision) differs in
the last bit for most trees, which GSAM's and LookSAM's updates would carry
into training.
"""

import functools

import jax
import jax.numpy as jnp


def tree_norm(tree) -> jnp.ndarray:
    """Global L2 norm, accumulated in float32 (bf16 leaves are upcast).

    The leaves are divided by a power of two near their largest |entry| before
    squaring (exact: the result is the plain formula's wherever that neither
    overflows nor underflows), so gradients beyond sqrt(float32 max) ~ 1.8e19,
    or below ~1e-19, still have their true norm rather than inf or 0. An inf or
    NaN entry still gives an inf or NaN norm.
    """
    leaves = [jnp.asarray(x, jnp.float32) for x in jax.tree_util.tree_leaves(tree)]
    leaves = [x for x in leaves if x.size]
    if not leaves:
        return jnp.zeros([], jnp.float32)
    largest = functools.reduce(jnp.maximum, [jnp.max(jnp.abs(x)) for x in leaves])
    # 2^(e - 1) <= largest < 2^e. Clipped so that the scale and its inverse are
    # normal floats (XLA:CPU flushes subnormals to zero), which still keeps the
    # scaled squares in range for any float32 leaves.
    exponent = jnp.clip(jnp.frexp(largest)[1] - 1, -100, 100)
    exponent = jnp.where(jnp.isfinite(largest) & (largest > 0), exponent, 0)
    inverse = jnp.ldexp(jnp.float32(1), -exponent)
    return jnp.ldexp(jnp.sqrt(sum(jnp.sum(jnp.square(x * inverse)) for x in leaves)),
                     exponent)


def tree_vdot(a, b) -> jnp.ndarray:
    return sum(jnp.sum(x.astype(jnp.float32) * y.astype(jnp.float32))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def key_name(key) -> str:
    """A key path entry's name: a dict key, an attribute name or an index."""
    for attribute in ("key", "name", "idx"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def leaf_name(path) -> str:
    """The name of the leaf at key path `path` (its last entry)."""
    return key_name(path[-1] if path else None)
