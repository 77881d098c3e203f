"""Where SAM's perturbation goes: each parameter group's share of ||e||^2.

Haas et al. (NeurIPS 2024, muP^2) argue that in wide networks standard SAM
perturbs mostly the last layer. With e = sam_jax.perturbation(g, params, rho),
the share of a group is ||e_group||^2 / ||e||^2; for SAM (not ASAM) it equals
the group's share of ||g||^2, since e is g rescaled.
"""

from collections.abc import Mapping

import jax
import jax.numpy as jnp


def perturbation_share(e) -> dict[str, float]:
    """{top-level key: ||e[key]||^2 / ||e||^2} for a dict-like pytree `e`.

    Pass the parameters' structure (the "params" collection of a flax model,
    e.g. {"init_conv": ..., "group0_block0": ..., "head": ...}), not the whole
    variables dict. The shares sum to 1; all are NaN when e is zero (no
    direction to share).
    """
    if not isinstance(e, Mapping) or not e:
        raise TypeError("e must be a non-empty dict of parameter groups, "
                        f"got {type(e).__name__}")
    squares = {}
    for key, group in e.items():
        leaves = jax.tree_util.tree_leaves(group)
        # Sum in float32 so bf16 perturbations neither overflow nor lose the norm.
        squares[str(key)] = float(sum(jnp.sum(jnp.square(x.astype(jnp.float32)))
                                      for x in leaves)) if leaves else 0.0
    total = sum(squares.values())
    if total == 0:
        return {key: float("nan") for key in squares}
    return {key: value / total for key, value in squares.items()}
