"""SAF and MESA (sam_jax._saf, sam_jax._mesa; Du et al., NeurIPS 2022): the
trajectory loss and its gradient against numpy; the trainer's step on a softmax
regression over 8 devices against a numpy re-implementation, step by step
across epochs (SAF's records by example index, read E epochs later; MESA's
moving average); their settings refused; each through the trainer's loop on
tiny digits, stopped and resumed equal to uninterrupted."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import load_config
import sam_jax
from sam_jax import checkpoint
from sam_jax import config_schema
from sam_jax import methods
from sam_jax import parallel
from sam_jax import steps
from sam_jax import train
from sam_jax.models import get_model
from test_train import Interrupted, interrupt_after


def softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def numpy_trajectory_loss(z, r, temperature):
    p, q = softmax(z / temperature), softmax(r / temperature)
    return temperature ** 2 * np.mean(np.sum(q * (np.log(q) - np.log(p)), axis=-1))


def test_trajectory_loss_and_its_gradient_against_numpy():
    rng = np.random.default_rng(0)
    z, r = rng.normal(size=(2, 6, 5)) * 3
    for temperature in (1.0, 5.0):
        got = sam_jax.trajectory_loss(jnp.asarray(z, jnp.float32),
                                      jnp.asarray(r, jnp.float32), temperature)
        assert float(got) == pytest.approx(numpy_trajectory_loss(z, r, temperature),
                                           rel=1e-5)
        grad = jax.grad(sam_jax.trajectory_loss, argnums=(0, 1))(
            jnp.asarray(z, jnp.float32), jnp.asarray(r, jnp.float32), temperature)
        want = temperature * (softmax(z / temperature) - softmax(r / temperature)) / 6
        np.testing.assert_allclose(grad[0], want, rtol=1e-4, atol=1e-7)
        np.testing.assert_array_equal(grad[1], 0.0)  # the reference is a constant
    assert float(sam_jax.trajectory_loss(jnp.asarray(z), jnp.asarray(z), 5.0)) == \
        pytest.approx(0.0, abs=1e-6)


def test_moving_average_step_by_step():
    from sam_jax._mesa import moving_average
    rng = np.random.default_rng(1)
    average = {"w": rng.normal(size=3)}
    tree = {"w": jnp.asarray(average["w"], jnp.float32)}
    for _ in range(4):
        new = rng.normal(size=3)
        average["w"] = 0.9 * average["w"] + 0.1 * new
        tree = moving_average(tree, {"w": jnp.asarray(new, jnp.float32)}, 0.9)
        np.testing.assert_allclose(tree["w"], average["w"], rtol=1e-6)


class SoftmaxRegression(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(self.num_classes)(x.reshape((x.shape[0], -1)))


N, D, C, BATCH, SPE = 48, 6, 4, 16, 3  # 48 // 16 = 3 steps an epoch
LR, WEIGHT, TEMPERATURE = 0.5, 0.7, 2.0


def numpy_run(method, x, y, orders, w, b, *, start_epoch, delay_epochs=None,
              decay=None, weight=WEIGHT):
    """SGD on the mean cross entropy plus the trajectory term, step by step:
    (weights, SAF's records or MESA's average) after each step."""
    w, b = w.astype(np.float64), b.astype(np.float64)
    records = np.zeros((delay_epochs or 1, N, C))
    average = (w.copy(), b.copy())
    history = []
    for step, index in enumerate(orders):
        epoch = step // SPE
        z = x[index] @ w + b
        grad_z = (softmax(z) - np.eye(C)[y[index]]) / len(index)
        if method == "saf":
            reference = records[epoch % delay_epochs, index]
        else:
            reference = x[index] @ average[0] + average[1]
        if epoch > start_epoch:
            grad_z += weight * TEMPERATURE * (softmax(z / TEMPERATURE)
                                              - softmax(reference / TEMPERATURE)) / len(index)
        w, b = w - LR * x[index].T @ grad_z, b - LR * grad_z.sum(0)
        if method == "saf":
            records[epoch % delay_epochs, index] = z
        else:
            average = (decay * average[0] + (1 - decay) * w,
                       decay * average[1] + (1 - decay) * b)
        history.append(((w, b), records.copy() if method == "saf" else average))
    return history


@pytest.mark.parametrize("method, grad_accum_steps", [("saf", 1), ("saf", 2),
                                                      ("mesa", 1)])
def test_trainer_step_against_numpy_softmax_regression(method, grad_accum_steps):
    """12 steps (4 epochs) on 8 devices of 2 examples: the term from epoch 2
    (start_epoch 1); SAF compares with the outputs of 2 epochs back, recorded
    on every device from all devices' examples by index (with 2 microbatches
    a device: the logits of each); MESA with the average's (decay 0.75)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(N, D)).astype(np.float32)
    y = rng.integers(0, C, N).astype(np.int32)
    orders = [rng.permutation(N)[s * BATCH:(s + 1) * BATCH] for _ in range(4)
              for s in range(SPE)]
    model = SoftmaxRegression(C)
    params = model.init(jax.random.PRNGKey(0), x[:1])["params"]
    if method == "saf":
        options = dict(delay_epochs=2)
        term = sam_jax.saf_loss_term(weight=WEIGHT, temperature=TEMPERATURE,
                                     start_epoch=1, num_examples=N, num_classes=C,
                                     steps_per_epoch=SPE, **options)
    else:
        options = dict(decay=0.75)
        term = sam_jax.mesa_loss_term(weight=WEIGHT, temperature=TEMPERATURE,
                                      start_epoch=1, steps_per_epoch=SPE, **options)
    method_tx = sam_jax.plain_gradient(axis_name=steps.AXIS, grouped=True,
                                       aux_init=steps.aux_example())
    base = optax.sgd(LR)
    tx = optax.chain(method_tx, base)
    state = steps.new_train_state(params, {}, tx.init(params), loss_term=term)
    mesh = parallel.make_mesh()
    step = parallel.shard_train_step(steps.make_train_step(
        model, method_tx, base, examples_per_perturbation=2 // grad_accum_steps,
        per_device_batch=2, grad_accum_steps=grad_accum_steps, weight_decay=0.0,
        label_smoothing=0.0, loss_term=term), mesh)
    state = jax.device_put(state, parallel.replicated(mesh))
    want = numpy_run(method, x, y, orders, np.asarray(params["Dense_0"]["kernel"]),
                     np.asarray(params["Dense_0"]["bias"]), start_epoch=1, **options)
    without_term = numpy_run(method, x, y, orders, np.asarray(params["Dense_0"]["kernel"]),
                             np.asarray(params["Dense_0"]["bias"]), start_epoch=1,
                             weight=0.0, **options)
    for index, ((w, b), kept) in zip(orders, want):
        batch = {"image": x[index], "label": y[index], "index": index.astype(np.int32)}
        state = step(state, parallel.global_batch(mesh, batch), jax.random.PRNGKey(1))
        got = state.params["Dense_0"]
        np.testing.assert_allclose(got["kernel"], w, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got["bias"], b, rtol=1e-4, atol=1e-5)
        if method == "saf":
            np.testing.assert_allclose(state.loss_term_state["outputs"], kept,
                                       rtol=1e-4, atol=1e-5)
        else:
            average = state.loss_term_state["params"]["Dense_0"]
            np.testing.assert_allclose(average["kernel"], kept[0], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(average["bias"], kept[1], rtol=1e-4, atol=1e-5)
    # One gradient evaluation a step; the term moved the weights.
    assert float(state.gradient_evaluations) == 12.0
    assert np.max(np.abs(want[-1][0][0] - without_term[-1][0][0])) > 1e-2


def test_settings_are_refused_in_one_line():
    from sam_jax import validate
    cases = [("saf", "weight", -0.1), ("saf", "temperature", 0.0),
             ("saf", "start_epoch", -1), ("saf", "delay_epochs", 0),
             ("saf", "delay_epochs", 7),  # > start_epoch + 1: nothing recorded yet
             ("mesa", "decay", 1.0), ("mesa", "temperature", -5.0)]
    for name, key, value in cases:
        config = config_schema.base_config()
        config.method = name
        config[name][key] = value
        with pytest.raises(validate.ConfigError) as error:
            validate.validate_config(config, 8)
        message = str(error.value)
        assert "\n" not in message and f"{name}.{key}={value!r}" in message, message
    config = config_schema.base_config()
    config.update(method="saf", dataset="imagenet2012")
    assert "does not give" in methods.problem(config, per_device_batch=8, microbatch=8)
    config.method = "mesa"  # from the batch's images alone
    assert methods.problem(config, per_device_batch=8, microbatch=8) is None


def test_declared_costs():
    config = config_schema.base_config()
    assert methods.get("saf").cost(config) == ("1", "1")
    assert methods.get("mesa").cost(config) == ("1 (+1 forward)", "1")


def tiny_config(name):
    """6 steps of 2 on 32 digits: 3 epochs, the term on in epochs 1 and 2."""
    config = load_config("configs/quickstart.py")
    config.method = name
    config.model.name = "wrn10_1"
    config.train_subset = 32
    config.update(batch_size=16, num_steps=6, log_every_steps=3, eval_batch_size=512,
                  checkpoint_every_steps=2)
    config[name].start_epoch = 0
    if name == "saf":
        config.saf.delay_epochs = 1
    return config


def final_state(workdir, config):
    model = get_model(config.model.name, 10)
    term = methods.loss_term(config, num_examples=32, num_classes=10, steps_per_epoch=2)
    target = steps.initial_state(config.seed, model,
                                 train.training_chain(config, total_steps=6).tx,
                                 (8, 8, 1), loss_term=term)
    return checkpoint.restore_latest(workdir, target)


@pytest.mark.parametrize("name", ["saf", "mesa"])
def test_trains_through_the_loop_and_resumes_exactly(name, tmp_path, monkeypatch):
    config = tiny_config(name)
    uninterrupted = train.train_and_evaluate(config, str(tmp_path / "a"))
    assert uninterrupted["method"] == name and uninterrupted["test_error"] < 1.0
    assert uninterrupted["gradient_evaluations"] == pytest.approx(6)
    with monkeypatch.context() as patch:  # stopped after step 5 (checkpoint: 4)
        interrupt_after(5, patch)
        with pytest.raises(Interrupted):
            train.train_and_evaluate(config, str(tmp_path / "b"))
    resumed = train.train_and_evaluate(config, str(tmp_path / "b"))
    resumed.pop("train_seconds"), uninterrupted.pop("train_seconds")
    assert resumed == uninterrupted
    a, b = (final_state(str(tmp_path / run), config) for run in "ab")
    assert int(a.step) == 6
    for got, want in zip(jax.tree_util.tree_leaves((b.params, b.loss_term_state)),
                         jax.tree_util.tree_leaves((a.params, a.loss_term_state)),
                         strict=True):
        np.testing.assert_array_equal(got, want)
    if name == "saf":  # every example seen in epochs 1 and 2 (32 = 2 x 16): recorded
        outputs = np.asarray(a.loss_term_state["outputs"])
        assert outputs.shape == (1, 32, 10) and np.all(np.any(outputs != 0, axis=-1))
