"""Per-group share of the perturbation's squared norm, against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sam_jax
from sam_jax import analysis


def random_tree(seed=0):
    rng = np.random.default_rng(seed)
    shapes = {"init_conv": {"kernel": (3, 3, 3, 4)},
              "block": {"conv": {"kernel": (3, 3, 4, 4)}, "bn": {"scale": (4,),
                                                                 "bias": (4,)}},
              "head": {"kernel": (4, 10), "bias": (10,)}}
    return jax.tree_util.tree_map(
        lambda shape: jnp.asarray(rng.normal(size=shape), jnp.float32), shapes,
        is_leaf=lambda x: isinstance(x, tuple))


def numpy_shares(tree):
    squares = {key: sum(np.sum(np.square(np.asarray(leaf, np.float64)))
                        for leaf in jax.tree_util.tree_leaves(group))
               for key, group in tree.items()}
    total = sum(squares.values())
    return {key: value / total for key, value in squares.items()}


def test_shares_match_numpy_and_sum_to_one():
    e = random_tree()
    shares = analysis.perturbation_share(e)
    assert shares == pytest.approx(numpy_shares(e), rel=1e-5)
    assert sum(shares.values()) == pytest.approx(1.0, rel=1e-6)


def test_sam_perturbation_shares_those_of_the_gradient_asam_does_not():
    grads, params = random_tree(1), random_tree(2)
    e = sam_jax.perturbation(grads, params, 0.05)
    assert analysis.perturbation_share(e) == pytest.approx(numpy_shares(grads), rel=1e-5)
    # ASAM as its authors wrote it: e = rho T^2 g / ||T g||, T = |w| + eta for the
    # kernels and BatchNorm scales ("weight" in the PyTorch name), T = 1 for biases.
    e_asam = sam_jax.perturbation(grads, params, 0.05, adaptive=True, eta=0.01)
    scaled = jax.tree_util.tree_map_with_path(
        lambda path, g, w: ((np.abs(np.asarray(w, np.float64)) + 0.01) ** 2
                            if path[-1].key in ("kernel", "scale") else 1.0)
        * np.asarray(g, np.float64),
        grads, params)
    assert analysis.perturbation_share(e_asam) == pytest.approx(numpy_shares(scaled),
                                                                rel=1e-4)


def test_zero_and_malformed_perturbations():
    zero = jax.tree_util.tree_map(jnp.zeros_like, random_tree())
    assert all(np.isnan(v) for v in analysis.perturbation_share(zero).values())
    with pytest.raises(TypeError):
        analysis.perturbation_share([jnp.ones(3)])
