"""Adam and AdamW as base optimizers (optimizer.name = adam | adamw), after
SAM, against numpy references written from the papers' update rules:

Adam (Kingma & Ba 2015, Algorithm 1), step t = 1, 2, ...:
  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
  w -= lr_t * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
AdamW (Loshchilov & Hutter 2019, decoupled, lr-scaled as optax and PyTorch):
  w -= lr_t * [(m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + wd * w]
and g is SAM's gradient at w + rho g(w) / ||g(w)||, from the closed-form
logistic-regression gradient (tests/logreg.py). Warm-up: lr_t = peak t / W for
t < W, then the decay over the remaining steps.
"""

import functools
import math

import jax
import numpy as np
import optax
import pytest

import logreg
import sam_jax
from helpers import load_config
from sam_jax import optimizers
from sam_jax import train
from sam_jax import validate
from sam_jax.models import get_model

B1, B2, EPS = 0.8, 0.95, 1e-6  # not optax's defaults: the config's are used


def np_schedule(count, *, peak, warmup, total, kind):
    """The learning rate of the update whose step counter is `count` (0-based)."""
    if count < warmup:
        return peak * count / warmup
    decay_steps = max(total - warmup, 1)
    frac = min(count - warmup, decay_steps) / decay_steps
    if kind == "cosine":
        return peak * 0.5 * (1 + math.cos(math.pi * frac))
    if kind == "linear":
        return peak * (1 - frac)
    return peak


def np_sam_grad(params, x, y, rho):
    g = logreg.grad(params, x, y)
    e = logreg.scale(g, rho / logreg.norm(g))
    return logreg.grad(logreg.add(params, e), x, y)


def np_adam_after_sam(params, x, y, *, steps, rho, lr_fn, wd, decoupled):
    """`steps` steps of SAM then Adam(W) in float64. With decoupled=False the
    decay is the loss's L2 term (Adam + L2): its gradient wd * w joins g
    (SAM's perturbation sees it too); with True it is AdamW's."""
    w = logreg.as64(params)
    m = {k: np.zeros_like(v) for k, v in w.items()}
    v = {k: np.zeros_like(v) for k, v in w.items()}
    for t in range(1, steps + 1):
        if decoupled:
            g = np_sam_grad(w, x, y, rho)
        else:  # the L2 term in the loss, so in both gradients
            def grad_l2(p):
                return logreg.add(logreg.grad(p, x, y), p, wd)
            g0 = grad_l2(w)
            g = grad_l2(logreg.add(w, logreg.scale(g0, rho / logreg.norm(g0))))
        lr = lr_fn(t - 1)
        for k in w:
            m[k] = B1 * m[k] + (1 - B1) * g[k]
            v[k] = B2 * v[k] + (1 - B2) * g[k] ** 2
            direction = (m[k] / (1 - B1 ** t)) / (np.sqrt(v[k] / (1 - B2 ** t)) + EPS)
            if decoupled:
                direction = direction + wd * w[k]
            w[k] = w[k] - lr * direction
    return w


def adam_config(name, *, schedule="cosine", warmup=2, wd=0.1, lr=0.05):
    config = load_config("configs/quickstart.py")
    config.optimizer.name = name
    config.optimizer.schedule = schedule
    config.optimizer.warmup_steps = warmup
    config.optimizer.learning_rate = lr
    config.optimizer.weight_decay = wd
    config.optimizer.b1, config.optimizer.b2, config.optimizer.eps = B1, B2, EPS
    config.optimizer.grad_clip_norm = 0.0
    return config


def run_chain(config, params, x, y, *, steps, total, rho):
    """SAM then the config's base optimizer, `steps` updates, the loss with
    the config's loss L2 term (as steps.py adds it)."""
    wd = optimizers.loss_weight_decay(config)

    def loss(p):
        return logreg.jax_loss(p, x, y) + 0.5 * wd * sum(
            jax.numpy.sum(v ** 2) for v in jax.tree_util.tree_leaves(p))

    tx = optax.chain(sam_jax.sam(rho), optimizers.make_optimizer(config, total))
    grad_fn = jax.grad(loss)
    update = jax.jit(functools.partial(tx.update, grad_fn=grad_fn))
    state = tx.init(params)
    for _ in range(steps):
        updates, state = update(grad_fn(params), state, params)
        params = optax.apply_updates(params, updates)
    return params


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_adamw_after_sam_equals_numpy(schedule):
    params, x, y = logreg.problem()
    total, warmup, steps, rho, wd, lr = 8, 3, 6, 0.05, 0.1, 0.05
    config = adam_config("adamw", schedule=schedule, warmup=warmup, wd=wd, lr=lr)
    got = run_chain(config, params, x, y, steps=steps, total=total, rho=rho)
    want = np_adam_after_sam(
        params, x, y, steps=steps, rho=rho, wd=wd, decoupled=True,
        lr_fn=lambda c: np_schedule(c, peak=lr, warmup=warmup, total=total,
                                    kind=schedule))
    for k in want:
        np.testing.assert_allclose(np.asarray(got[k], np.float64), want[k],
                                   rtol=2e-5, atol=2e-6, err_msg=k)
    # Far above the tolerance (2e-6): what the decoupled decay and rho change
    # (little for rho: Adam's step is nearly sign(g)).
    no_decay = np_adam_after_sam(params, x, y, steps=steps, rho=rho, wd=0.0,
                                 decoupled=True, lr_fn=lambda c: np_schedule(
                                     c, peak=lr, warmup=warmup, total=total,
                                     kind=schedule))
    no_sam = np_adam_after_sam(params, x, y, steps=steps, rho=0.0, wd=wd,
                               decoupled=True, lr_fn=lambda c: np_schedule(
                                   c, peak=lr, warmup=warmup, total=total,
                                   kind=schedule))
    assert logreg.norm(logreg.add(no_decay, want, -1.0)) > 1e-3
    assert logreg.norm(logreg.add(no_sam, want, -1.0)) > 1e-4


def test_adam_keeps_the_loss_l2_term_and_adamw_drops_it():
    config = adam_config("adamw", wd=0.3)
    assert optimizers.loss_weight_decay(config) == 0.0
    config = adam_config("adam", wd=0.3, warmup=0)
    assert optimizers.loss_weight_decay(config) == 0.3
    params, x, y = logreg.problem()
    total, warmup, steps, rho, wd, lr = 6, 0, 4, 0.1, 0.3, 0.05
    got = run_chain(config, params, x, y, steps=steps, total=total, rho=rho)
    want = np_adam_after_sam(
        params, x, y, steps=steps, rho=rho, wd=wd, decoupled=False,
        lr_fn=lambda c: np_schedule(c, peak=lr, warmup=0, total=total, kind="cosine"))
    for k in want:
        np.testing.assert_allclose(np.asarray(got[k], np.float64), want[k],
                                   rtol=2e-5, atol=2e-6, err_msg=k)


def test_warmup_schedules_equal_the_closed_form():
    for kind in ("cosine", "linear", "constant"):
        config = adam_config("adamw", schedule=kind, warmup=10, lr=3e-3)
        schedule = optimizers.learning_rate_schedule(config, 100)
        for count in (0, 1, 5, 9, 10, 11, 50, 99, 100):
            assert float(schedule(count)) == pytest.approx(
                np_schedule(count, peak=3e-3, warmup=10, total=100, kind=kind),
                rel=1e-5, abs=1e-9), (kind, count)
    # No warm-up: the paper's cosine over every step, as before the option.
    config = adam_config("sgd", warmup=0, lr=0.1)
    schedule = optimizers.learning_rate_schedule(config, 100)
    want = optax.cosine_decay_schedule(0.1, 100)
    assert all(float(schedule(c)) == float(want(c)) for c in (0, 7, 50, 99))


def test_trainer_step_with_adamw_has_no_l2_in_the_loss():
    """One step of the trainer (rho 0.05, m = 4, 2 devices' worth of groups
    on one) with adamw equals a reference: per group the gradient of the
    cross-entropy alone at w and at w + e, their mean, then numpy AdamW's
    first step. With the L2 term in the loss the step would differ."""
    from test_train import one_step_on  # the 1-device trainer step helper
    config = adam_config("adamw", warmup=0, wd=0.3, lr=1e-3)
    config.model.name = "wrn10_1"
    config.batch_size = 8
    config.sam.rho = 0.05
    config.sam.examples_per_perturbation = 4
    validate.validate_config(config, 1)
    model = get_model("wrn10_1", 10)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(8, 8, 8, 1)).astype(np.float32)
    labels = rng.integers(0, 10, 8).astype(np.int32)
    variables = model.init(jax.random.PRNGKey(0), images[:1])
    got_params, _ = one_step_on(1, config, model, variables, images, labels)

    flat_w, unravel = jax.flatten_util.ravel_pytree(variables["params"])
    w = np.asarray(flat_w, np.float64)

    def cross_entropy(flat, x, y):
        logits, _ = model.apply({"params": unravel(flat),
                                 "batch_stats": variables["batch_stats"]},
                                x, train=True, mutable=["batch_stats"])
        log_p = jax.nn.log_softmax(logits)
        return -jax.numpy.mean(log_p[jax.numpy.arange(len(y)), y])

    grad = jax.jit(jax.grad(cross_entropy))
    g_sum = np.zeros_like(w)
    for start in (0, 4):
        x, y = images[start:start + 4], labels[start:start + 4]
        g = np.asarray(grad(jax.numpy.asarray(w, jax.numpy.float32), x, y), np.float64)
        e = 0.05 * g / np.linalg.norm(g)
        g_sum += np.asarray(grad(jax.numpy.asarray(w + e, jax.numpy.float32), x, y),
                            np.float64)
    g = g_sum / 2
    lr = 1e-3  # cosine at step 0
    m, v = (1 - B1) * g, (1 - B2) * g ** 2
    want = w - lr * ((m / (1 - B1)) / (np.sqrt(v / (1 - B2)) + EPS) + 0.3 * w)
    got = np.asarray(jax.flatten_util.ravel_pytree(got_params)[0], np.float64)
    # Adam's first step is lr * sign(g) where |g| >> eps; the decay is
    # lr * 0.3 * w. Elements with |g| near eps are sensitive to float32
    # round-off of g: compared where |g| > 100 eps.
    sure = np.abs(g) > 100 * EPS
    np.testing.assert_allclose(got[sure], want[sure], rtol=1e-5, atol=1e-7)
    assert sure.mean() > 0.9
    # With the L2 term in the loss too (AdamW's decay applied twice), the
    # step would differ by far more than the tolerance: the gradient's
    # signs change where |wd * w| > |g|.
    g_l2 = g + 0.3 * w
    assert np.mean(np.sign(g_l2) != np.sign(g)) > 0.01


@pytest.mark.parametrize("key, value, message", [
    ("name", "lamb", "unknown optimizer 'lamb'; allowed: adam, adamw, rmsprop, sgd"),
    ("schedule", "step", "unknown optimizer.schedule 'step'; allowed: constant, "
                         "cosine, linear"),
    ("b1", 1.0, "optimizer.b1=1.0 must be a finite number in [0, 1)"),
    ("b2", -0.1, "optimizer.b2=-0.1 must be a finite number in [0, 1)"),
    ("eps", -1e-8, "optimizer.eps=-1e-08 must be a finite number >= 0"),
    ("warmup_steps", -1, "optimizer.warmup_steps=-1 must be an integer >= 0"),
])
def test_bad_adam_settings_are_refused_in_one_line(key, value, message):
    config = adam_config("adamw")
    config.optimizer[key] = value
    with pytest.raises(validate.ConfigError) as info:
        validate.validate_config(config, 1)
    assert str(info.value) == message


@pytest.mark.parametrize("method", ["sam", "gsam", "looksam", "esam", "rwp",
                                    "sampa", "optimistic", "entropy_sgd"])
def test_adamw_composes_after_every_kind_of_method(method):
    """Each base kind (sgd, optimistic, plain) takes Adam(W): its state has
    Adam's moments."""
    config = adam_config("adamw")
    config.method = method
    chain = train.training_chain(config, total_steps=10)
    params = {"kernel": np.ones(3, np.float32), "bias": np.float32(0.0)}
    state = chain.base.init(params)
    leaves = jax.tree_util.tree_leaves(
        state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))
    assert any(isinstance(s, optax.ScaleByAdamState) for s in leaves), method
