"""The Vision Transformers: parameter counts from a closed-form formula and
the published ones, the forward pass against a numpy transcription of the
ViT paper's equations (1)-(4), and dropout / stochastic depth drawn from the
"dropout" stream only."""

import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import REPO
from helpers import load_config
from sam_jax import validate
from sam_jax.models import DEFAULT_INPUT_SHAPES, PUBLISHED_PARAMETERS
from sam_jax.models import count_parameters, get_model
from sam_jax.models.vit import VisionTransformer, drop_path

# (patch, hidden D, depth L, MLP size M): the ViT paper's Table 1 (B) and
# DeiT's Table 1 (Ti, S), typed here, not read from the module.
ARCHITECTURES = {"vit_ti16": (16, 192, 12, 768), "vit_s16": (16, 384, 12, 1536),
                 "vit_b16": (16, 768, 12, 3072)}


def closed_form_count(patch, hidden, depth, mlp, *, image=224, channels=3,
                      classes=1000):
    """Embedding p^2 C D + D; class token D; position (N + 1) D; per block two
    LayerNorms 4D, attention 4 (D^2 + D), MLP 2 D M + M + D; final LayerNorm
    2D; head D K + K."""
    tokens = (image // patch) ** 2
    block = 4 * hidden + 4 * (hidden ** 2 + hidden) + 2 * hidden * mlp + mlp + hidden
    return (patch ** 2 * channels * hidden + hidden + hidden + (tokens + 1) * hidden
            + depth * block + 2 * hidden + hidden * classes + classes)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_parameter_count_is_the_closed_form_and_the_published_one(name):
    want = closed_form_count(*ARCHITECTURES[name])
    got = count_parameters(get_model(name, 1000), DEFAULT_INPUT_SHAPES[name])
    assert got == want
    # Published to 3 significant figures: 86.6M, 22.1M, 5.7M.
    assert abs(got / PUBLISHED_PARAMETERS[name] - 1) < 0.005


def test_the_models_cli_prints_the_published_counts():
    out = subprocess.run([sys.executable, "-m", "sam_jax.models",
                          "--models=vit_ti16,vit_s16,vit_b16"], cwd=REPO,
                         capture_output=True, text=True, timeout=300, check=True).stdout
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows["vit_b16"][3] == "86,567,656" and rows["vit_b16"][4] == "86.60M"
    assert rows["vit_s16"][3] == "22,050,664"
    assert rows["vit_ti16"][3] == "5,717,416"


# ------------------------------------------------------------ the forward pass

def np_layer_norm(x, p, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def np_gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def np_attention(x, p, heads):
    q = np.einsum("nld,dhk->nlhk", x, p["query"]["kernel"]) + p["query"]["bias"]
    k = np.einsum("nld,dhk->nlhk", x, p["key"]["kernel"]) + p["key"]["bias"]
    v = np.einsum("nld,dhk->nlhk", x, p["value"]["kernel"]) + p["value"]["bias"]
    logits = np.einsum("nqhk,nshk->nhqs", q, k) / math.sqrt(q.shape[-1])
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = np.einsum("nhqs,nshk->nqhk", weights, v)
    return np.einsum("nqhk,hkd->nqd", out, p["out"]["kernel"]) + p["out"]["bias"]


def np_vit(params, images, *, patch, heads, depth):
    """z0 = [x_class; x_p E] + E_pos; z' = MSA(LN(z)) + z; z = MLP(LN(z')) + z';
    y = LN(z_L^0) W_head."""
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    n, h, w, c = images.shape
    x = np.zeros((n, (h // patch) * (w // patch), patch * patch * c))
    for i in range(h // patch):  # patch (i, j), row-major, pixels (row, col, channel)
        for j in range(w // patch):
            x[:, i * (w // patch) + j] = images[:, i * patch:(i + 1) * patch,
                                                j * patch:(j + 1) * patch].reshape(n, -1)
    kernel = p["embedding"]["kernel"].reshape(patch * patch * c, -1)
    z = x @ kernel + p["embedding"]["bias"]
    z = np.concatenate([np.broadcast_to(p["cls"], (n, 1, z.shape[-1])), z], 1)
    z = z + p["pos_embedding"]
    for i in range(depth):
        b = p[f"encoderblock_{i}"]
        z = z + np_attention(np_layer_norm(z, b["LayerNorm_0"]),
                             b["MultiHeadDotProductAttention_0"], heads)
        y = np_layer_norm(z, b["LayerNorm_2"])
        mlp = b["MlpBlock_3"]
        y = np_gelu(y @ mlp["Dense_0"]["kernel"] + mlp["Dense_0"]["bias"])
        z = z + y @ mlp["Dense_1"]["kernel"] + mlp["Dense_1"]["bias"]
    z = np_layer_norm(z[:, 0], p["encoder_norm"])
    return z @ p["head"]["kernel"] + p["head"]["bias"]


def small_vit(**options):
    return VisionTransformer(num_classes=5, patch_size=4, hidden_size=16, depth=2,
                             num_heads=2, mlp_size=24, **options)


def random_params(model, images, seed=0):
    """The model's parameters with every leaf random (the zero-initialised head
    and class token too, so the reference sees them)."""
    params = model.init(jax.random.PRNGKey(seed), images[:1])["params"]
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda a: (0.3 * rng.normal(size=a.shape)).astype(np.float32), params)


def test_forward_pass_equals_a_numpy_transcription_of_the_paper():
    rng = np.random.default_rng(1)
    images = rng.normal(size=(3, 8, 12, 2)).astype(np.float32)  # 2 x 3 patches
    model = small_vit()
    params = random_params(model, images)
    got = model.apply({"params": params}, images, train=False)
    want = np_vit(params, images.astype(np.float64), patch=4, heads=2, depth=2)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-4, atol=1e-4)
    assert np.abs(want).max() > 0.1
    # Training mode without dropout or stochastic depth is the same function.
    train_out = model.apply({"params": params}, images, train=True,
                            rngs={"dropout": jax.random.PRNGKey(0)})
    np.testing.assert_array_equal(train_out, got)


def test_dropout_and_stochastic_depth_come_from_the_dropout_stream_only():
    rng = np.random.default_rng(2)
    images = rng.normal(size=(6, 8, 8, 1)).astype(np.float32)
    for options in ({"dropout_rate": 0.3}, {"stochastic_depth_rate": 0.5},
                    {"attention_dropout_rate": 0.3}):
        model = small_vit(**options)
        params = random_params(model, images)

        def run(key):
            return np.asarray(model.apply({"params": params}, images, train=True,
                                          rngs={"dropout": jax.random.PRNGKey(key)}))
        clean = np.asarray(model.apply({"params": params}, images, train=False))
        np.testing.assert_array_equal(run(0), run(0))  # a pure function of the key
        assert np.abs(run(0) - run(1)).max() > 1e-3, options
        assert np.abs(run(0) - clean).max() > 1e-3, options
        with pytest.raises(Exception, match="dropout"):  # no key, no draws
            model.apply({"params": params}, images, train=True)


def test_drop_path_zeroes_whole_examples_and_scales_the_rest():
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2000, 3, 4)) + 5.0,
                    jnp.float32)
    out = np.asarray(drop_path(x, 0.25, jax.random.PRNGKey(0)))
    dropped = np.all(out == 0, axis=(1, 2))
    np.testing.assert_allclose(out[~dropped], np.asarray(x)[~dropped] / 0.75, rtol=1e-6)
    assert abs(dropped.mean() - 0.25) < 0.04  # 2000 draws: 4 standard errors


def test_rates_come_from_the_config_and_are_refused_for_other_models():
    config = load_config("configs/quickstart.py")
    config.model.name = "vit_micro4"
    config.model.dropout_rate = 0.1
    config.model.stochastic_depth_rate = 0.2
    validate.validate_config(config, 1)
    from sam_jax import models
    model = get_model("vit_micro4", 10, **models.options_from_config(config))
    assert (model.dropout_rate, model.stochastic_depth_rate) == (0.1, 0.2)
    config.model.name = "wrn10_1"
    with pytest.raises(validate.ConfigError, match="are for the ViTs"):
        validate.validate_config(config, 1)
    config.model.name = "vit_micro4"
    config.model.dropout_rate = 1.0
    with pytest.raises(validate.ConfigError,
                       match=r"model.dropout_rate=1.0 must be a finite number in \[0, 1\)"):
        validate.validate_config(config, 1)
    with pytest.raises(ValueError, match="takes no dropout_rate"):
        get_model("wrn10_1", 10, dropout_rate=0.1)
