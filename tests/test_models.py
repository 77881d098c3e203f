"""Model registry and the WideResNet's published size."""

import jax
import jax.numpy as jnp
import pytest

from sam_jax.models import MODELS, get_model

PUBLISHED_PARAMETERS = {"wrn28_10": 36.5e6}  # ../shared/PAPER.md


def count_parameters(model, image_shape=(32, 32, 3)):
    variables = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1,) + image_shape)))
    return sum(x.size for x in jax.tree_util.tree_leaves(variables["params"]))


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMETERS))
def test_parameter_count_matches_published_within_one_percent(name):
    count = count_parameters(get_model(name, 10))
    assert abs(count / PUBLISHED_PARAMETERS[name] - 1) < 0.01, count


def test_wrn_parameter_count_closed_form():
    # WRN-d-k without projection shortcuts: 3x3 convs, BN scale+bias, head.
    depth, width, classes = 16, 2, 10
    n = (depth - 4) // 6
    widths = [16 * width, 32 * width, 64 * width]
    convs = 3 * 3 * 3 * 16
    bns = 0
    in_ch = 16
    for out_ch in widths:
        for i in range(n):
            convs += 9 * in_ch * out_ch + 9 * out_ch * out_ch
            bns += 2 * in_ch + 2 * out_ch
            in_ch = out_ch
    bns += 2 * in_ch
    head = in_ch * classes + classes
    assert count_parameters(get_model("wrn16_2", classes)) == convs + bns + head


def test_forward_shapes_and_batch_stats():
    model = get_model("wrn10_1", 7)
    x = jnp.ones((2, 8, 8, 1))
    variables = model.init(jax.random.PRNGKey(0), x)
    assert "batch_stats" in variables
    logits, mutated = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert logits.shape == (2, 7)
    assert model.apply(variables, x, train=False).shape == (2, 7)


def test_unknown_model_lists_allowed():
    with pytest.raises(ValueError, match="unknown model 'resnet9'; allowed: .*wrn28_10"):
        get_model("resnet9", 10)


def test_every_registered_model_builds():
    for name in MODELS:
        assert count_parameters(get_model(name, 10)) > 0
