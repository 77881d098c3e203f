"""Model registry, published sizes, and the stochastic layers against closed forms."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sam_jax.models import DEFAULT_INPUT_SHAPES, MODELS, get_model
from sam_jax.models import efficientnet, pyramidnet, shake, shake_shake

# ../shared/PAPER.md; ResNet-32 from He et al. 2016, Table 6.
PUBLISHED_PARAMETERS = {
    "wrn28_10": 36.5e6,
    "shake_shake_26_2x96d": 26.2e6,
    "pyramidnet_272_200": 26.0e6,
    "pyramidnet_272_200_shakedrop": 26.0e6,
    "resnet32": 0.46e6,
    "resnet50": 25.6e6,
    "resnet101": 44.5e6,
    "resnet152": 60.2e6,
    "efficientnet_b7": 66e6,
    "efficientnet_l2": 480e6,
    "efficientnet_l2_475": 480e6,
}
IMAGENET_MODELS = {"resnet50", "resnet101", "resnet152", "resnet_tiny",
                   *(n for n in MODELS if n.startswith("efficientnet")),
                   *(n for n in MODELS if n.startswith("vit_") and n != "vit_micro4")}
# One per family; vanilla PyramidNet blocks are the ShakeDrop ones without the op.
SMALL_MODELS = ["shake_shake_8_2x16d", "pyramidnet_11_24_shakedrop", "resnet8",
                "resnet_tiny", "efficientnet_tiny"]
STOCHASTIC_SMALL_MODELS = ["shake_shake_8_2x16d", "pyramidnet_11_24_shakedrop",
                           "efficientnet_tiny"]
DETERMINISTIC_SMALL_MODELS = ["resnet8", "resnet_tiny"]


# XLA's CPU compiler dominates these tests' time; its cheapest code generation
# (about 3x faster to compile) changes speed, not results.
fast_jit = functools.partial(jax.jit, compiler_options={
    "xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True,
    "xla_cpu_use_fusion_emitters": False})


def count_parameters(model, image_shape=(32, 32, 3)):
    variables = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1,) + image_shape)))
    return sum(x.size for x in jax.tree_util.tree_leaves(variables["params"]))


_COUNTS = {}  # module -> parameters; equal modules (L2 and L2-475) share one trace


def registered_count(name):
    """Parameters with the published head (1000 ImageNet classes, 10 for CIFAR)."""
    model = get_model(name, 1000 if name in IMAGENET_MODELS else 10)
    if model not in _COUNTS:
        _COUNTS[model] = count_parameters(model, DEFAULT_INPUT_SHAPES[name])
    return _COUNTS[model]


# ---------------------------------------------------------------- sizes

@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMETERS))
def test_parameter_count_matches_published_within_one_percent(name):
    # Only "params" counts, not BN running statistics. WRN-28-10 is 36.2M (-0.8%):
    # the official code's shortcuts have no parameters. PyramidNet-272 is 26.21M
    # (+0.8%): channels are rounded, not truncated, as in the official code.
    # ResNet-32 is 464,154 (+0.9% of the rounded 0.46M).
    count = registered_count(name)
    assert abs(count / PUBLISHED_PARAMETERS[name] - 1) < 0.01, count


def test_imagenet_models_match_reference_implementations_exactly():
    # torchvision's resnet50/101/152 and Keras' EfficientNetB0/B7 trainable
    # counts (Keras B0: 5,330,571 total = 5,288,548 + 42,016 BN statistics + 7
    # for its input normalisation layer).
    assert registered_count("resnet50") == 25_557_032
    assert registered_count("resnet101") == 44_549_160
    assert registered_count("resnet152") == 60_192_808
    assert registered_count("efficientnet_b0") == 5_288_548
    assert registered_count("efficientnet_b7") == 66_347_960


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


def test_wrn_without_batchnorm_starts_with_identity_blocks():
    # The Hessian study's variant: no BatchNorm, biased convs, zero last conv per
    # block. At initialisation each block is its shortcut alone, so the network
    # is init_conv -> relu -> (avg-pool + zero-pad per group) -> relu -> mean -> head.
    model = get_model("wrn10_2_nobn", 10)
    images = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
    variables = model.init(jax.random.key(1), images, train=False)
    assert set(variables) == {"params"}
    p = jax.tree_util.tree_map(np.asarray, variables["params"])
    kernel, bias = p["init_conv"]["kernel"], p["init_conv"]["bias"]
    padded = np.pad(images, [(0, 0), (1, 1), (1, 1), (0, 0)])
    x = bias + sum(padded[:, i:i + 8, j:j + 8, :] @ kernel[i, j]
                   for i in range(3) for j in range(3))
    x = np.maximum(x, 0.0)  # activate_before_residual in the first block
    for _ in range(2):  # groups 1 and 2 halve the size: 2x2 average pool
        x = x.reshape(2, x.shape[1] // 2, 2, x.shape[2] // 2, 2, -1).mean(axis=(2, 4))
    features = np.maximum(x, 0.0).mean(axis=(1, 2))  # channels beyond 16 are zeros
    expected = features @ p["head"]["kernel"][:16] + p["head"]["bias"]
    out = model.apply(variables, images, train=True)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    # Parameters: the BatchNorm model's, less its BatchNorms, plus one bias per conv.
    convs = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(p)
             if "kernel" in jax.tree_util.keystr(path) and leaf.ndim == 4]
    with_bn = get_model("wrn10_2", 10).init(jax.random.key(1), images, train=False)
    bn_params = sum(np.size(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(
        with_bn["params"]) if "bn" in jax.tree_util.keystr(path))
    assert count_parameters(model) == (count_parameters(get_model("wrn10_2", 10))
                                       - bn_params + sum(k.shape[-1] for k in convs))


def test_resnet32_parameter_count_closed_form():
    # Stem conv+BN, 15 basic blocks (two 3x3 convs + two BNs), parameter-free
    # option-A shortcuts, head.
    total, in_ch = 27 * 16 + 2 * 16, 16
    for out_ch in [16, 32, 64]:
        for _ in range(5):
            total += 9 * in_ch * out_ch + 9 * out_ch * out_ch + 4 * out_ch
            in_ch = out_ch
    total += 64 * 10 + 10
    assert registered_count("resnet32") == total


def test_pyramidnet_parameter_count_closed_form():
    # Bottleneck PyramidNet-11, alpha 24: 3 blocks of width 16 + 8 l, each
    # BN, 1x1 conv, BN, 3x3 conv, BN, 1x1 conv to 4x, BN; then BN and head.
    total, in_ch = 27 * 16 + 2 * 16, 16
    for block in range(1, 4):
        ch = 16 + 8 * block
        total += 2 * in_ch + in_ch * ch + 2 * ch + 9 * ch * ch + 2 * ch
        total += ch * 4 * ch + 2 * 4 * ch
        in_ch = 4 * ch
    total += 2 * in_ch + in_ch * 10 + 10
    assert registered_count("pyramidnet_11_24") == total
    assert registered_count("pyramidnet_11_24_shakedrop") == total


def test_every_registered_model_builds_at_its_default_shape():
    assert set(DEFAULT_INPUT_SHAPES) == set(MODELS)
    for name in MODELS:
        assert registered_count(name) > 0


# ---------------------------------------------------------------- registry

def test_registry_names_and_default_shapes():
    expected = {"shake_shake_26_2x96d": (32, 32, 3), "pyramidnet_272_200": (32, 32, 3),
                "pyramidnet_272_200_shakedrop": (32, 32, 3), "resnet32": (32, 32, 3),
                "resnet50": (224, 224, 3), "resnet101": (224, 224, 3),
                "resnet152": (224, 224, 3), "efficientnet_b0": (224, 224, 3),
                "efficientnet_b7": (600, 600, 3), "efficientnet_l2": (800, 800, 3),
                "efficientnet_l2_475": (475, 475, 3), "wrn28_10": (32, 32, 3)}
    for name, shape in expected.items():
        assert DEFAULT_INPUT_SHAPES[name] == shape, name
    assert {f"efficientnet_b{i}" for i in range(8)} <= set(MODELS)


def test_unknown_model_lists_allowed():
    with pytest.raises(ValueError, match="unknown model 'resnet9'; allowed: .*wrn28_10"):
        get_model("resnet9", 10)


def test_forward_shapes_and_batch_stats():
    model = get_model("wrn10_1", 7)
    x = jnp.ones((2, 8, 8, 1))
    variables = fast_jit(model.init)(jax.random.PRNGKey(0), x)
    assert "batch_stats" in variables
    logits, mutated = fast_jit(functools.partial(
        model.apply, train=True, mutable=["batch_stats"]))(variables, x)
    assert logits.shape == (2, 7)
    assert fast_jit(functools.partial(model.apply, train=False))(
        variables, x).shape == (2, 7)


# ---------------------------------------------------------------- small models
# One compiled function per model (init, a train-mode gradient, evaluation):
# XLA compilation dominates the time of these tests on CPU.

NUM_CLASSES = 5
IMAGES = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
LABELS = jnp.array([0, 1, 2, 3])
# The cheap "rbg" generator for the weights (threefry is slow to compile);
# the trainer's threefry keys for the stochastic layers.
INIT_KEY = jax.random.key(0, impl="unsafe_rbg")


@functools.lru_cache(maxsize=None)
def compiled_init_grad_eval(name):
    """jit(dropout_key -> (variables, grads, train logits, new batch_stats,
    eval logits with that key, eval logits without a key))."""
    model = get_model(name, NUM_CLASSES)

    @fast_jit
    def init_grad_eval(dropout_key):
        variables = model.init(INIT_KEY, IMAGES[:1])

        def loss_fn(params):
            logits, mutated = model.apply(
                {"params": params, "batch_stats": variables["batch_stats"]}, IMAGES,
                train=True, mutable=["batch_stats"], rngs={"dropout": dropout_key})
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, LABELS).mean()
            return loss, (logits, mutated["batch_stats"])

        grads, (logits, new_stats) = jax.grad(loss_fn, has_aux=True)(variables["params"])
        eval_logits = model.apply(variables, IMAGES, train=False,
                                  rngs={"dropout": dropout_key})
        keyless_eval_logits = model.apply(variables, IMAGES, train=False)
        return variables, grads, logits, new_stats, eval_logits, keyless_eval_logits

    return init_grad_eval


@functools.lru_cache(maxsize=None)
def run_small_model(name, seed):
    return compiled_init_grad_eval(name)(jax.random.PRNGKey(seed))


def tree_all_finite(tree):
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(tree))


def trees_equal(a, b):
    return all(bool(jnp.array_equal(x, y)) for x, y in
               zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_small_model_train_step_is_finite_and_eval_works(name):
    variables, grads, logits, new_stats, eval_logits, keyless_eval_logits = (
        run_small_model(name, 3))
    assert logits.shape == eval_logits.shape == (4, NUM_CLASSES)
    assert trees_equal(eval_logits, keyless_eval_logits)  # evaluation needs no key
    assert tree_all_finite((grads, logits, new_stats, eval_logits))
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree_util.tree_leaves(grads))
    assert not trees_equal(new_stats, variables["batch_stats"])  # statistics moved
    assert not np.allclose(logits, eval_logits)  # batch vs running statistics


@pytest.mark.parametrize("name", STOCHASTIC_SMALL_MODELS)
def test_stochastic_model_is_a_pure_function_of_its_rng(name):
    _, grads, logits, _, eval_logits, _ = run_small_model(name, 3)
    # SAM's second pass: the same key gives the same draws.
    _, grads_again, logits_again, _, _, _ = compiled_init_grad_eval(name)(
        jax.random.PRNGKey(3))
    assert trees_equal(logits, logits_again) and trees_equal(grads, grads_again)
    _, other_grads, other_logits, _, other_eval_logits, _ = run_small_model(name, 4)
    assert not np.allclose(logits, other_logits)
    assert trees_equal(eval_logits, other_eval_logits)  # evaluation draws nothing


@pytest.mark.parametrize("name", DETERMINISTIC_SMALL_MODELS)
def test_deterministic_model_ignores_its_rng(name):
    _, grads, logits, _, _, _ = run_small_model(name, 3)
    _, other_grads, other_logits, _, _, _ = run_small_model(name, 4)
    assert trees_equal(logits, other_logits) and trees_equal(grads, other_grads)


# ---------------------------------------------------------------- shake-shake op

def test_shake_shake_forward_uses_forward_gate_gradient_uses_backward_gate():
    rng = np.random.default_rng(0)
    a, b, weights = (rng.normal(size=(3, 2, 2, 4)).astype(np.float32) for _ in range(3))
    forward_gate = np.array([0.1, 0.5, 0.9], np.float32).reshape(3, 1, 1, 1)
    backward_gate = np.array([0.7, 0.2, 0.4], np.float32).reshape(3, 1, 1, 1)
    out = shake.shake_shake(a, b, forward_gate, backward_gate)
    np.testing.assert_allclose(out, forward_gate * a + (1 - forward_gate) * b, rtol=1e-6)
    grad_a, grad_b = jax.grad(
        lambda a, b: jnp.sum(weights * shake.shake_shake(a, b, forward_gate, backward_gate)),
        argnums=(0, 1))(a, b)
    np.testing.assert_allclose(grad_a, backward_gate * weights, rtol=1e-6)
    np.testing.assert_allclose(grad_b, (1 - backward_gate) * weights, rtol=1e-6)


def test_shake_shake_train_draws_independent_per_example_gates():
    batch = 256
    rng = np.random.default_rng(1)
    a = rng.normal(size=(batch, 2, 2, 3)).astype(np.float32)
    b = a + 1.0  # so the gate is recoverable: out = b - gate
    key = jax.random.PRNGKey(5)
    out = np.asarray(shake.shake_shake_train(a, b, key))
    forward_gate = b - out
    grad_a = np.asarray(jax.grad(lambda a: shake.shake_shake_train(a, b, key).sum())(a))
    backward_gate = grad_a
    for gate in (forward_gate, backward_gate):
        per_example = gate[:, :1, :1, :1]
        np.testing.assert_allclose(gate, np.broadcast_to(per_example, gate.shape), atol=1e-5)
        assert per_example.min() >= 0 and per_example.max() <= 1
        assert abs(per_example.mean() - 0.5) < 0.1  # U[0, 1]
    assert np.corrcoef(forward_gate[:, 0, 0, 0], backward_gate[:, 0, 0, 0])[0, 1] < 0.3
    other = np.asarray(shake.shake_shake_train(a, b, jax.random.PRNGKey(6)))
    assert not np.allclose(out, other)


def test_shake_shake_eval_is_even_blend():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(2, 3, 3, 2)), rng.normal(size=(2, 3, 3, 2))
    np.testing.assert_allclose(shake.shake_shake_eval(a, b), (a + b) / 2, rtol=1e-6)


def test_shake_shake_block_mixes_its_two_branches():
    # Branch outputs are those of their last BN layers, captured by flax.
    block = shake_shake.ShakeShakeBlock(channels=6, strides=2)
    x = np.random.default_rng(10).normal(size=(8, 4, 4, 4)).astype(np.float32)

    @fast_jit
    def outputs(dropout_key):
        variables = block.init(INIT_KEY, x, train=False)
        results = {}
        for train in (True, False):
            out, state = block.apply(variables, x, train=train, rngs={"dropout": dropout_key},
                                     capture_intermediates=True, mutable=True)
            inter = state["intermediates"]
            results[train] = (out, inter["bn_a_2"]["__call__"][0],
                              inter["bn_b_2"]["__call__"][0],
                              inter["shortcut"]["__call__"][0])
        return results

    results = outputs(jax.random.PRNGKey(11))
    out, a, b, shortcut = (np.asarray(v) for v in results[False])
    np.testing.assert_allclose(out, shortcut + (a + b) / 2, rtol=1e-5, atol=1e-5)
    out, a, b, shortcut = (np.asarray(v) for v in results[True])
    gate = (out - shortcut - b) / (a - b)  # out = shortcut + gate * a + (1 - gate) * b
    per_example = np.median(gate.reshape(len(x), -1), axis=1)
    np.testing.assert_allclose(out, shortcut + per_example[:, None, None, None] * (a - b) + b,
                               rtol=1e-4, atol=1e-4)
    assert 0 <= per_example.min() and per_example.max() <= 1
    assert per_example.std() > 0.05  # a different gate per example


# ---------------------------------------------------------------- shakedrop op

def test_shake_drop_forward_scale_and_backward_scale():
    rng = np.random.default_rng(3)
    x, weights = rng.normal(size=(2, 3, 3, 4)), rng.normal(size=(2, 3, 3, 4))
    x, weights = x.astype(np.float32), weights.astype(np.float32)
    forward = np.array([-0.6, 1.0], np.float32).reshape(2, 1, 1, 1)
    backward = np.array([0.3, 1.0], np.float32).reshape(2, 1, 1, 1)
    np.testing.assert_allclose(shake.shake_drop(x, forward, backward), forward * x,
                               rtol=1e-6)
    grad = jax.grad(lambda x: jnp.sum(weights * shake.shake_drop(x, forward, backward)))(x)
    np.testing.assert_allclose(grad, backward * weights, rtol=1e-6)


@pytest.mark.parametrize("keep_prob,alpha_range", [(0.7, (-1.0, 1.0)), (0.5, (-0.5, 1.0))])
def test_shake_drop_train_draws_match_eqn6(keep_prob, alpha_range):
    batch = 20000
    x = np.ones((batch, 1, 1, 1), np.float32)
    key = jax.random.PRNGKey(7)
    forward = np.asarray(shake.shake_drop_train(x, keep_prob, key, alpha_range)).ravel()
    backward = np.asarray(jax.grad(
        lambda x: shake.shake_drop_train(x, keep_prob, key, alpha_range).sum())(x)).ravel()
    # b = 1: scale 1 both ways (up to rounding of 1 + alpha - alpha); b = 0:
    # alpha forward, beta backward, which hit 1 with probability ~0.
    kept = np.isclose(backward, 1.0, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(kept, np.isclose(forward, 1.0, rtol=0, atol=1e-6))
    assert abs(kept.mean() - keep_prob) < 0.02
    dropped_forward, dropped_backward = forward[~kept], backward[~kept]
    assert alpha_range[0] <= dropped_forward.min() and dropped_forward.max() <= alpha_range[1]
    assert abs(dropped_forward.mean() - np.mean(alpha_range)) < 0.03
    assert 0 <= dropped_backward.min() and dropped_backward.max() <= 1
    assert abs(dropped_backward.mean() - 0.5) < 0.02
    # Evaluation scales by the expectation of the forward scale.
    expected_scale = keep_prob + (1 - keep_prob) * np.mean(alpha_range)
    assert abs(forward.mean() - expected_scale) < 0.03
    np.testing.assert_allclose(shake.shake_drop_eval(x[:1], keep_prob, alpha_range),
                               expected_scale, rtol=1e-6)


def test_shakedrop_keep_probability_decays_linearly_to_one_half():
    probs = pyramidnet.shakedrop_keep_probabilities(90, 0.5)
    np.testing.assert_allclose(probs, 1 - 0.5 * np.arange(1, 91) / 90)
    assert probs[-1] == 0.5


def test_pyramid_block_eval_scales_residual_branch_by_keep_probability():
    keep_prob, channels = 0.6, 6
    x = np.random.default_rng(8).normal(size=(2, 4, 4, 8)).astype(np.float32)
    plain = pyramidnet.PyramidBottleneck(channels)
    shaken = pyramidnet.PyramidBottleneck(channels, keep_prob=keep_prob)

    @fast_jit
    def plain_and_shaken():
        variables = plain.init(INIT_KEY, x, train=False)  # the same for both
        return plain.apply(variables, x, train=False), shaken.apply(variables, x, train=False)

    plain_out, shaken_out = plain_and_shaken()
    shortcut = np.pad(x, [(0, 0)] * 3 + [(0, 4 * channels - 8)])
    branch = np.asarray(plain_out) - shortcut
    np.testing.assert_allclose(shaken_out, shortcut + keep_prob * branch,
                               rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- drop-connect

def test_drop_connect_zeroes_whole_examples_and_keeps_the_mean():
    batch, survival = 20000, 0.8
    x = np.full((batch, 2, 1, 1), 3.0, np.float32)
    out = np.asarray(efficientnet.drop_connect(x, survival, jax.random.PRNGKey(9)))
    kept = out[:, 0, 0, 0] != 0
    np.testing.assert_allclose(out[kept], 3.0 / survival, rtol=1e-6)
    np.testing.assert_array_equal(out[~kept], 0.0)
    assert abs(kept.mean() - survival) < 0.02
    assert abs(out.mean() - 3.0) < 0.05


def test_efficientnet_drop_connect_rate_grows_linearly_over_blocks():
    # Block k of N (0-based) drops its residual branch with rate 0.2 * k / N.
    model = get_model("efficientnet_tiny", NUM_CLASSES)
    variables = jax.eval_shape(lambda: model.init(INIT_KEY, IMAGES[:1]))
    rates = []

    def record_rate(call, args, kwargs, context):
        if (isinstance(context.module, efficientnet.MBConvBlock)
                and context.method_name == "__call__"):
            rates.append(context.module.drop_connect_rate)
        return call(*args, **kwargs)

    with nn.intercept_methods(record_rate):
        jax.eval_shape(lambda v: model.apply(v, IMAGES[:1], train=False), variables)
    np.testing.assert_allclose(rates, [0.0, 0.2 / 3, 0.4 / 3])  # B0's first 3 blocks


def test_efficientnet_scaling_rules():
    # Repeats round up; channels round to a multiple of 8, at most 10% down.
    b7_repeats = [efficientnet.round_repeats(s.num_repeat, 3.1)
                  for s in efficientnet.B0_STAGES]
    assert b7_repeats == [4, 7, 7, 10, 10, 13, 4]
    assert efficientnet.round_filters(32, 2.0) == 64
    assert efficientnet.round_filters(32, 4.3) == 136  # 137.6 -> 136
    assert efficientnet.round_filters(16, 1.1) == 16  # 17.6 -> 16
    assert efficientnet.round_filters(16, 0.25) == 8  # never below 8
    assert efficientnet.round_filters(1280, 4.3) == 5504
