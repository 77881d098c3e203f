"""config.optimizer.weight_decay_mode (issue 33): the training step, SAM on
8 devices with SGD, Nesterov momentum and clipping, against an independent
numpy step in each mode.

- "loss": the L2 term is in the loss, so in both of SAM's gradients (the
  perturbation's and the one at the perturbed weights): the official SAM code.
- "decoupled": the loss has no L2 term; torch.optim.SGD(weight_decay=wd) as
  the authors of GSAM, LookSAM, ESAM, RWP and SAMPa use it: after clipping,
  d_p = g + wd * w; buf = mu * buf + d_p; d_p = d_p + mu * buf (Nesterov);
  w = w - lr * d_p (torch/optim/sgd.py, dampening 0).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import load_config
from sam_jax import parallel
from sam_jax import steps
from sam_jax import train
from sam_jax import validate

NUM_CLASSES, NUM_DEVICES, PER_DEVICE = 3, 8, 2
LR, MOMENTUM, RHO, WD, CLIP = 0.1, 0.9, 0.1, 0.05, 0.5


class Linear(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(NUM_CLASSES)(x.reshape(x.shape[0], -1))


def config_for(mode):
    config = load_config("configs/quickstart.py")
    config.method, config.sam.rho = "sam", RHO
    config.batch_size = NUM_DEVICES * PER_DEVICE
    config.optimizer.update(learning_rate=LR, momentum=MOMENTUM, nesterov=True,
                            schedule="constant", weight_decay=WD,
                            grad_clip_norm=CLIP, weight_decay_mode=mode)
    return config


def ce_grad(kernel, bias, x, y):
    """Gradient of the mean softmax cross-entropy of x @ kernel + bias, float64."""
    logits = x @ kernel + bias
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    return x.T @ p / len(y), p.mean(0)


def reference_steps(kernel, bias, images, labels, mode, num_steps):
    """numpy: SAM per device (m = its batch), mean over devices, clipping,
    then the weight decay where `mode` puts it, Nesterov momentum."""
    w = [kernel.astype(np.float64), bias.astype(np.float64)]
    buf = [np.zeros_like(v) for v in w]
    in_loss = WD if mode == "loss" else 0.0
    for step in range(num_steps):
        x_all = images[step].reshape(len(labels[step]), -1).astype(np.float64)
        sam_grads = []
        for x, y in zip(np.split(x_all, NUM_DEVICES), np.split(labels[step], NUM_DEVICES)):
            g = [a + in_loss * v for a, v in zip(ce_grad(*w, x, y), w)]
            norm = np.sqrt(sum(np.sum(a ** 2) for a in g))
            shifted = [v + RHO * a / norm for v, a in zip(w, g)]
            sam_grads.append([a + in_loss * v
                              for a, v in zip(ce_grad(*shifted, x, y), shifted)])
        g = [np.mean([s[i] for s in sam_grads], axis=0) for i in range(2)]
        norm = np.sqrt(sum(np.sum(a ** 2) for a in g))
        g = [a * min(1.0, CLIP / norm) for a in g]
        if mode == "decoupled":  # torch SGD: d_p = d_p.add(p, alpha=weight_decay)
            g = [a + WD * v for a, v in zip(g, w)]
        buf = [MOMENTUM * b + a for b, a in zip(buf, g)]
        w = [v - LR * (a + MOMENTUM * b) for v, a, b in zip(w, g, buf)]
    return w


def trained(mode, kernel, bias, images, labels, num_steps):
    config = config_for(mode)
    validate.validate_config(config, NUM_DEVICES)
    model = Linear()
    chain = train.training_chain(config, total_steps=100, steps_per_epoch=10)
    params = {"Dense_0": {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)}}
    state = steps.new_train_state(params, {}, chain.tx.init(params))
    mesh = parallel.make_mesh()
    step = parallel.shard_train_step(
        train.train_step_from_config(config, model, chain, NUM_DEVICES), mesh)
    state = jax.device_put(state, parallel.replicated(mesh))
    for i in range(num_steps):
        state = step(state, parallel.global_batch(
            mesh, {"image": images[i], "label": labels[i]}), jax.random.PRNGKey(0))
    params = jax.device_get(state.params)["Dense_0"]
    return [params["kernel"], params["bias"]]


@pytest.mark.parametrize("mode", ["loss", "decoupled"])
def test_three_sam_sgd_steps_equal_the_numpy_step_of_the_mode(mode):
    assert jax.device_count() == NUM_DEVICES
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(4, NUM_CLASSES)).astype(np.float32)
    bias = rng.normal(size=NUM_CLASSES).astype(np.float32)
    images = rng.normal(size=(3, NUM_DEVICES * PER_DEVICE, 2, 2, 1)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, (3, NUM_DEVICES * PER_DEVICE)).astype(np.int32)
    got = trained(mode, kernel, bias, images, labels, num_steps=3)
    want = reference_steps(kernel, bias, images, labels, mode, num_steps=3)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # The modes differ by more than the tolerance: the test tells them apart.
    other = reference_steps(kernel, bias, images, labels,
                            "loss" if mode == "decoupled" else "decoupled", num_steps=3)
    assert max(np.abs(a - b).max() for a, b in zip(got, other)) > 1e-4


def test_an_unknown_weight_decay_mode_is_refused_naming_the_allowed():
    config = config_for("adamw")
    with pytest.raises(validate.ConfigError,
                       match="unknown optimizer.weight_decay_mode 'adamw'; allowed: "
                             "loss, decoupled"):
        validate.validate_config(config, NUM_DEVICES)


def test_the_loss_mode_leaves_the_optimizer_state_as_before():
    # Checkpoints of earlier runs (loss mode) keep restoring.
    from sam_jax import optimizers
    params = {"w": jnp.ones(3)}
    before = jax.tree_util.tree_structure(
        optimizers.clipped(config_for("loss"), optimizers.base_transform(
            config_for("loss"), lambda _: LR)).init(params))
    now = jax.tree_util.tree_structure(
        optimizers.make_optimizer(config_for("loss"), 100).init(params))
    assert now == before
