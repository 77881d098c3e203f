"""bfloat16 compute (config.dtype): every model family computes in bf16 with
float32 parameters, BatchNorm statistics and logits; one bf16 SAM step of the
trainer stays within bf16 round-off of an independent float32 reference step;
zero and huge gradients stay finite; the command line takes --config.dtype.

Tolerances. bf16 keeps 8 significant bits (round-off 2^-9 ~ 2e-3 relative per
operation). The logits of these small networks come out within 3e-3 to 2e-2
of float32's; we allow 5e-2 and require more than 1e-4 (less: the model did
not compute in bf16). Gradients are another matter: at initialisation, on
groups of 8 examples, the float32 step itself changes by 0.3% (WRN without
BatchNorm, EfficientNet) to 28% (ResNet-tiny) when nothing but its input
images are rounded to bf16 (BatchNorm over few values, of nearly dead ReLU
channels, amplifies small changes as they flow back). So the bf16 step is
held to 5e-2 of the step or, where the float32 step is that sensitive, to
BF16_STEP_FACTOR times the reference's own change under bf16-rounded inputs
(measured: 1.3x to 2.6x; 4.9x for EfficientNet, whose 2e-2 is within 5e-2),
and under 0.5 of the step in any case; its cosine with the reference above
0.9 (measured: 0.93 to 0.9999).
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import sam_jax
from helpers import REPO
from helpers import load_config
from helpers import slow_except
from sam_jax import parallel
from sam_jax import steps
from sam_jax import train
from sam_jax.models import get_model

BF16_RELATIVE_TOLERANCE = 5e-2  # of the norm of the logits / BatchNorm statistics
BF16_STEP_FACTOR = 5.0  # x the reference's change under bf16-rounded inputs
BF16_STEP_CEILING = 0.5  # of the step's norm, whatever that change
BF16_MINIMUM_COSINE = 0.9
FLOAT32_RELATIVE_TOLERANCE = 1e-3  # the trainer's float32 step vs the reference
BF16_MINIMUM_DIFFERENCE = 1e-4  # less: the model did not compute in bf16

# The small member of each family, with its input shape.
FAMILIES = {
    "wrn10_1": (8, 8, 3),
    "wrn10_2_nobn": (8, 8, 3),
    "shake_shake_8_2x16d": (8, 8, 3),
    "pyramidnet_11_24_shakedrop": (8, 8, 3),
    "resnet8": (8, 8, 3),
    "resnet_tiny": (16, 16, 3),
    "efficientnet_tiny": (16, 16, 3),
    "vit_micro4": (8, 8, 3),
}
SHAKE_MODELS = ("shake_shake_8_2x16d", "pyramidnet_11_24_shakedrop")
# The step test's families: the trainer's bf16 step is the same code for every
# model (each family's bf16 forward pass is tested below); these three cover
# BatchNorm, no BatchNorm and the CIFAR ResNet, the others are slow repeats.
STEP_FAMILIES = slow_except(FAMILIES, ("wrn10_1", "wrn10_2_nobn", "resnet8"))
BATCH, M = 16, 8  # two groups of m = 8 on one device


def problem(name, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(BATCH,) + FAMILIES[name]).astype(np.float32)
    labels = rng.integers(0, 10, BATCH).astype(np.int32)
    return images, labels


def init(model, images):
    """The model's variables; a zero-initialised head (the ViTs') is filled
    with N(0, 0.02^2), or the logits would be 0 in any dtype."""
    key = jax.random.PRNGKey(0)
    variables = model.init({"params": key, "dropout": key}, images[:1])
    head = variables["params"]["head"]["kernel"]
    if not np.any(head):
        variables = jax.tree_util.tree_map(lambda x: x, variables)  # a copy
        variables["params"]["head"]["kernel"] = 0.02 * jax.random.normal(
            jax.random.PRNGKey(1), head.shape)
    return variables


def relative(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def flat(tree):
    return np.concatenate([np.ravel(np.asarray(x, np.float64))
                           for x in jax.tree_util.tree_leaves(tree)])


def layer_outputs(intermediates, top=True):
    """What each submodule's __call__ returned (captured intermediates; the last
    capture of a module is its own, the earlier ones a base class's call)."""
    for key, value in intermediates.items():
        if key == "__call__":
            if not top:
                yield value[-1]
        else:
            yield from layer_outputs(value, top=False)


def dtypes(tree):
    return {x.dtype.name for x in jax.tree_util.tree_leaves(tree)}


# ----------------------------------------------------------- the models

@pytest.mark.parametrize("name", list(FAMILIES))
def test_bf16_model_has_float32_state_and_computes_in_bf16(name):
    images, _ = problem(name)
    model = get_model(name, 10, dtype="bfloat16")
    variables = init(model, images)
    assert dtypes(variables["params"]) == {"float32"}
    assert dtypes(variables.get("batch_stats", {})) <= {"float32"}

    rngs = {"dropout": jax.random.PRNGKey(3)}
    logits, state = model.apply(variables, images, train=True, rngs=rngs,
                                mutable=["batch_stats", "intermediates"],
                                capture_intermediates=True)
    # The logits leave the model as float32; inside, every layer's output
    # (the classifier's included) is bf16.
    assert logits.dtype == jnp.float32
    inner = state["intermediates"]
    assert inner["head"]["__call__"][-1].dtype == jnp.bfloat16
    assert {output.dtype.name for output in layer_outputs(inner)} == {"bfloat16"}
    assert dtypes(state.get("batch_stats", {})) <= {"float32"}

    # Reference: the same weights and draws computing in float32.
    reference, _ = get_model(name, 10).apply(variables, images, train=True, rngs=rngs,
                                             mutable=["batch_stats"])
    assert reference.dtype == jnp.float32
    error = relative(logits, reference)
    print(f"{name}: bf16 logits vs float32, relative error {error:.2e}")
    assert BF16_MINIMUM_DIFFERENCE < error < BF16_RELATIVE_TOLERANCE


def test_dtype_is_checked_by_get_model():
    with pytest.raises(ValueError, match="allowed: float32, bfloat16"):
        get_model("wrn10_1", 10, dtype="float16")


# ------------------------------------------------------ one training step

def reference_float32_sam_step(model, variables, images, labels, *, key, m, rho,
                               weight_decay, lr, momentum, clip_norm,
                               true_gradient_first_pass):
    """Independent float32 reference of the trainer's first step: a loop over
    the groups of m examples (one device), float64 numpy between the passes.

    Group i draws its random layers from fold_in(fold_in(key, step 0), i), in
    both passes; the pass at w takes Shake-Shake / ShakeDrop's true gradient.
    e = rho g / ||g||, the gradient at w + e; the mean over groups, clipped,
    one Nesterov step from zero momentum. BatchNorm: the mean of the first
    passes' updated statistics.
    """
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    flat_w, unravel = ravel_pytree(params)
    w = np.asarray(flat_w, np.float64)

    def loss(flat, x, y, rng, first_pass):
        extra = {"true_gradient": True} if first_pass and true_gradient_first_pass else {}
        logits, mutated = model.apply(
            {"params": unravel(flat), "batch_stats": batch_stats}, x, train=True,
            mutable=["batch_stats"], rngs={"dropout": rng}, **extra)
        log_p = jax.nn.log_softmax(logits)
        cross_entropy = -jnp.mean(log_p[jnp.arange(len(y)), y])
        return (cross_entropy + 0.5 * weight_decay * jnp.sum(flat ** 2),
                mutated.get("batch_stats", {}))

    grad = jax.jit(jax.grad(loss, has_aux=True), static_argnums=4)
    step_key = jax.random.fold_in(key, 0)
    g_sam_sum, stats = np.zeros_like(w), []
    for group, start in enumerate(range(0, len(images), m)):
        x, y = images[start:start + m], labels[start:start + m]
        rng = jax.random.fold_in(step_key, group)
        g, new_stats = grad(jnp.asarray(w, jnp.float32), x, y, rng, True)
        g = np.asarray(g, np.float64)
        stats.append(new_stats)
        e = rho * g / np.linalg.norm(g)
        g_sam, _ = grad(jnp.asarray(w + e, jnp.float32), x, y, rng, False)
        g_sam_sum += np.asarray(g_sam, np.float64)
    g = g_sam_sum / len(stats)
    g *= min(1.0, clip_norm / np.linalg.norm(g))
    new_w = w - lr * (g + momentum * g)
    mean_stats = jax.tree_util.tree_map(
        lambda *s: np.mean(np.stack([np.asarray(v, np.float64) for v in s]), 0), *stats)
    return new_w, mean_stats


def trainer_step(config, model, variables, images, labels, key):
    """One step of the trainer's own step (train.train_step_from_config) on a
    one-device mesh: (flat new params, batch_stats)."""
    mesh = parallel.make_mesh(jax.devices()[:1])
    chain = train.training_chain(config, total_steps=100)
    step = parallel.shard_train_step(
        train.train_step_from_config(config, model, chain, 1), mesh)
    params = variables["params"]
    state = steps.new_train_state(params, variables.get("batch_stats", {}),
                                  chain.tx.init(params))
    state = step(jax.device_put(jax.tree_util.tree_map(jnp.copy, state),
                                parallel.replicated(mesh)),
                 parallel.global_batch(mesh, {"image": images, "label": labels}), key)
    assert dtypes(state.params) == {"float32"}
    assert dtypes(state.opt_state) <= {"float32", "int32"}
    assert dtypes(state.batch_stats) <= {"float32"}
    return (np.asarray(ravel_pytree(state.params)[0], np.float64),
            jax.tree_util.tree_map(np.asarray, state.batch_stats))


@pytest.mark.parametrize("name", STEP_FAMILIES)
def test_bf16_sam_step_is_within_bf16_roundoff_of_a_float32_reference(name):
    config = load_config("configs/cifar_wrn.py:cifar10,basic,200,sam")
    config.model.name = name
    config.batch_size = BATCH
    config.sam.examples_per_perturbation = M
    config.optimizer.grad_clip_norm = 1e3  # off: compare the raw step
    images, labels = problem(name)
    key = jax.random.PRNGKey(5)
    variables = init(get_model(name, 10), images)
    w0 = np.asarray(ravel_pytree(variables["params"])[0], np.float64)
    opt = config.optimizer

    def reference(images):
        return reference_float32_sam_step(
            get_model(name, 10), variables, images, labels, key=key, m=M,
            rho=config.sam.rho, weight_decay=opt.weight_decay, lr=opt.learning_rate,
            momentum=opt.momentum, clip_norm=opt.grad_clip_norm,
            true_gradient_first_pass=name in SHAKE_MODELS)
    want_w, want_stats = reference(images)
    want_update = want_w - w0
    # The yardstick: how far the float32 step moves when only its input is
    # rounded to bf16, the least any bf16 computation of it incurs.
    rounded_w, _ = reference(np.asarray(jnp.asarray(images, jnp.bfloat16), np.float32))
    input_rounding = relative(rounded_w - w0, want_update)

    results = {}
    for dtype in ("float32", "bfloat16"):
        config.dtype = dtype
        model = get_model(name, 10, dtype=config.dtype)
        got_w, got_stats = trainer_step(config, model, variables, images, labels, key)
        update = got_w - w0
        results[dtype] = (
            relative(update, want_update),
            update @ want_update / np.linalg.norm(update) / np.linalg.norm(want_update),
            # Over all statistics at once: some running means are ~0 (of
            # freshly normalised inputs), their own relative error meaningless.
            relative(flat(got_stats), flat(want_stats)) if want_stats else 0.0)
    print(f"{name}: step vs the float32 reference (relative error, cosine, BatchNorm "
          "statistics' relative error): float32 {:.1e}, {:.6f}, {:.1e}; bf16 {:.1e}, "
          "{:.4f}, {:.1e}; float32 step with bf16-rounded input {:.1e}".format(
              *results["float32"], *results["bfloat16"], input_rounding))
    # The reference is the trainer's step: float32 agrees to round-off ...
    assert results["float32"][0] < FLOAT32_RELATIVE_TOLERANCE
    assert results["float32"][2] < FLOAT32_RELATIVE_TOLERANCE
    # ... and bf16 to bf16's.
    error, cosine, stats_error = results["bfloat16"]
    assert BF16_MINIMUM_DIFFERENCE < error < BF16_STEP_CEILING
    assert error < max(BF16_STEP_FACTOR * input_rounding, BF16_RELATIVE_TOLERANCE)
    assert cosine > BF16_MINIMUM_COSINE
    assert stats_error < BF16_RELATIVE_TOLERANCE


# ------------------------------------------------- zero and huge gradients

@pytest.mark.parametrize("name", slow_except(
    ["wrn10_1", "resnet_tiny", "efficientnet_tiny"], ("wrn10_1",)))
@pytest.mark.parametrize("loss_scale", [0.0, 1e30])
def test_bf16_zero_and_huge_gradients_give_finite_perturbations_and_updates(
        name, loss_scale):
    """The loss times 0 (a zero gradient) or 1e30 (gradients ~1e29, whose
    squares overflow float32): SAM with a bf16 model stays finite, and its
    perturbation has the norm the closed form says (0, or rho)."""
    images, labels = problem(name)
    model = get_model(name, 10, dtype="bfloat16")
    variables = init(model, images)
    rho = 0.05

    def loss(params):
        logits, _ = model.apply({"params": params,
                                 "batch_stats": variables["batch_stats"]}, images,
                                train=True, mutable=["batch_stats"],
                                rngs={"dropout": jax.random.PRNGKey(1)})
        return loss_scale * steps.cross_entropy(logits, labels).mean()

    grad_fn = jax.jit(jax.grad(loss))
    params = variables["params"]
    g = grad_fn(params)
    g_norm = np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2)
                         for x in jax.tree_util.tree_leaves(g)))
    if loss_scale:
        assert 1e25 < g_norm < 1e35  # huge, and finite in float32
    else:
        assert g_norm == 0.0

    e = sam_jax.perturbation(g, params, rho)
    tx = optax.chain(sam_jax.sam(rho), optax.sgd(0.1, momentum=0.9))
    updates, state = tx.update(g, tx.init(params), params, grad_fn=grad_fn)
    for tree in (e, updates):
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(tree))
    e_norm = np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2)
                         for x in jax.tree_util.tree_leaves(e)))
    np.testing.assert_allclose(e_norm, rho if loss_scale else 0.0, rtol=1e-5)
    np.testing.assert_allclose(float(state[0].info.perturbation_norm), e_norm,
                               rtol=1e-5)
    if not loss_scale:
        assert all(not np.any(np.asarray(x)) for x in jax.tree_util.tree_leaves(updates))


# ------------------------------------------------------------ the CLI

def cli_environment():
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    return env


def test_cli_trains_in_bf16_and_writes_results(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sam_jax.main", "--config=configs/quickstart.py",
         f"--workdir={tmp_path}", "--config.dtype=bfloat16", "--config.num_steps=3",
         "--config.model.name=wrn10_1", "--config.batch_size=32",
         "--config.log_every_steps=3"],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=cli_environment())
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["steps"] == 3 and 0 <= results["test_error"] <= 1
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"


def test_cli_refuses_an_unknown_dtype_with_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sam_jax.main", "--config=configs/quickstart.py",
         f"--workdir={tmp_path / 'run'}", "--config.dtype=float8"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=cli_environment())
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "float8" in lines[0] and "allowed: float32, bfloat16" in lines[0]
    assert not (tmp_path / "run").exists()
