"""Penultimate features of our models and their rank, against numpy."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from sam_jax import analysis
from sam_jax.models import get_model


def numpy_rank(features, threshold):
    """Components for `threshold` of the variance, from the covariance's eigenvalues."""
    centred = features - features.mean(axis=0)
    variances = np.sort(np.linalg.eigvalsh(centred.T @ centred))[::-1]
    cumulative = np.cumsum(np.clip(variances, 0, None))
    return int(np.argmax(cumulative >= threshold * cumulative[-1]) + 1)


def test_rank_of_synthetic_features_of_known_rank():
    rng = np.random.default_rng(0)
    num_examples, dim, rank = 400, 48, 7
    latent = rng.normal(size=(num_examples, rank))
    mixing = rng.normal(size=(rank, dim))
    noise = 1e-3 * rng.normal(size=(num_examples, dim))
    # A large common offset: counted as a component unless the columns are centred.
    features = latent @ mixing + noise + 50.0 * rng.normal(size=dim)
    assert analysis.feature_rank(features) == rank
    assert analysis.feature_rank(features, threshold=1.0) == dim
    # A graded spectrum, where the count moves with the threshold.
    graded = rng.normal(size=(num_examples, dim)) * 0.8 ** np.arange(dim)
    for threshold in (0.5, 0.9, 0.99, 0.999):
        assert analysis.feature_rank(graded, threshold) == numpy_rank(graded, threshold)
    assert analysis.feature_rank(np.ones((5, 3))) == 0
    with pytest.raises(ValueError):
        analysis.feature_rank(graded, threshold=0.0)


@pytest.fixture(scope="module")
def wrn():
    model = get_model("wrn10_1", num_classes=10)
    # Shapes only (compiling init costs seconds); random weights do as well here,
    # and running statistics away from (0, 1) make evaluation-mode BatchNorm matter.
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                            np.zeros((1, 32, 32, 3), np.float32))
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(
        lambda x: np.asarray(0.2 * rng.normal(size=x.shape), np.float32),
        shapes["params"])
    stats = jax.tree_util.tree_map(
        lambda x: np.asarray(rng.uniform(0.5, 1.5, x.shape), np.float32),
        shapes["batch_stats"])
    images = rng.normal(size=(7, 32, 32, 3)).astype(np.float32)
    return model, {"params": params, "batch_stats": stats}, images


def test_the_head_maps_the_features_to_the_logits(wrn):
    model, variables, images = wrn
    features, logits = analysis.features_and_logits(model, variables, images)
    assert features.shape == (7, 64)  # WRN-10-1's last stage: 64 channels
    head = variables["params"]["head"]
    np.testing.assert_allclose(
        np.asarray(features, np.float64) @ np.asarray(head["kernel"], np.float64)
        + np.asarray(head["bias"]), logits, rtol=1e-5, atol=1e-5)
    # Independent of the interceptor: relu(pre_pool_bn), averaged over space.
    _, state = model.apply(variables, images, train=False, capture_intermediates=True,
                           mutable=["intermediates"])
    pre_pool = np.asarray(state["intermediates"]["pre_pool_bn"]["__call__"][0])
    np.testing.assert_allclose(features, np.maximum(pre_pool, 0).mean(axis=(1, 2)),
                               rtol=1e-5, atol=1e-6)
    # In chunks (with a remainder), the same features.
    np.testing.assert_allclose(
        analysis.penultimate_features(model, variables, images, batch_size=3),
        features, rtol=1e-6, atol=1e-6)


def test_a_model_without_a_head_is_refused():
    class NoHead(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            return nn.Dense(3, name="classifier")(x)

    model = NoHead()
    x = np.ones((2, 4), np.float32)
    variables = model.init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="'head' 0 times"):
        analysis.features_and_logits(model, variables, x)
