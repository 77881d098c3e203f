"""Tests of sam_jax.batch_norm: frozen BatchNorm in training is evaluation mode."""

import jax
import numpy as np

from helpers import TinyBatchNormNet
from helpers import tiny_variables
from sam_jax.batch_norm import frozen_batch_norm


def test_frozen_batch_norm_in_training_is_evaluation_mode():
    model = TinyBatchNormNet()
    images = np.random.default_rng(0).normal(size=(4, 6, 6, 2)).astype(np.float32)
    params, batch_stats = tiny_variables(images, 1)
    variables = {"params": params, "batch_stats": batch_stats}
    evaluation = model.apply(variables, images, train=False)
    with frozen_batch_norm():
        logits, mutated = model.apply(variables, images, train=True,
                                      mutable=["batch_stats"])
    np.testing.assert_allclose(logits, evaluation, rtol=1e-6, atol=1e-6)
    for got, want in zip(jax.tree_util.tree_leaves(mutated["batch_stats"]),
                         jax.tree_util.tree_leaves(batch_stats)):
        np.testing.assert_array_equal(got, want)
    # Outside the context the layers use and update the batch statistics again.
    logits, mutated = model.apply(variables, images, train=True, mutable=["batch_stats"])
    assert not np.allclose(logits, evaluation)
    assert not np.allclose(mutated["batch_stats"]["BatchNorm_0"]["mean"],
                           batch_stats["BatchNorm_0"]["mean"])
