"""Momentum-SAM (sam_jax._msam) against a numpy loop of the authors' SGD rule
(MarlonBecker/MSAM optimizer/msam.py), step by step: the stored (perturbed)
weights, the momentum, the perturbation's scale and the un-perturbed weights
the trainer evaluates; the configs it refuses; a trainer run that evaluates
the un-perturbed weights, and its exact resume."""


import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import logreg
from helpers import load_config
from helpers import Interrupted, interrupt_after
from sam_jax import _msam
from sam_jax import checkpoint
from sam_jax import config_schema
from sam_jax import methods
from sam_jax import steps
from sam_jax import train
from sam_jax import validate
from sam_jax.errors import BadInputError
from sam_jax.models import get_model


def authors_msam(params, grad, *, lr, momentum, weight_decay, rho, steps):
    """optimizer/msam.py's step in float64, from the stored weights p:
    d_p = grad(p) + wd p; p += rho inv v; v = mu v + d_p; p -= lr v;
    inv = 1 / (||v|| + 1e-12); p -= rho inv v. Yields (p, v, rho inv) after
    each step."""
    p = logreg.as64(params)
    v = {k: np.zeros_like(x) for k, x in p.items()}
    inv = 0.0
    for _ in range(steps):
        d_p = logreg.add(grad(p), p, weight_decay)
        p = logreg.add(p, v, rho * inv)
        v = logreg.add(logreg.scale(v, momentum), d_p)
        p = logreg.add(p, v, -lr)
        inv = 1.0 / (logreg.norm(v) + 1e-12)
        p = logreg.add(p, v, -rho * inv)
        yield p, v, rho * inv


@pytest.mark.parametrize("mode", ["decoupled", "loss"])
def test_steps_like_the_authors_sgd(mode):
    """The training chain's base (methods.base_optimizer: decoupled decay, then
    the msam wrapper of SGD) fed the gradient at the stored weights, for 6
    steps; in "loss" mode the decay is in the gradient, as the trainer's loss
    puts it."""
    params, x, y = logreg.problem(seed=31)
    config = config_schema.base_config()
    config.method = "msam"
    config.msam.rho = 0.3
    config.optimizer.update(learning_rate=0.2, momentum=0.9, weight_decay=0.05,
                            weight_decay_mode=mode, schedule="constant", nesterov=False)
    base = methods.base_optimizer(config, total_steps=6)
    wd = config.optimizer.weight_decay

    def grad(p):  # what the method hands the base: the loss's gradient
        g = logreg.grad(p, x, y)
        return logreg.add(g, p, wd) if mode == "loss" else g

    stored = {k: jnp.asarray(v) for k, v in params.items()}
    state = base.init(stored)
    want = authors_msam(params, lambda p: logreg.grad(p, x, y), lr=0.2, momentum=0.9,
                        weight_decay=wd, rho=0.3, steps=6)
    for p, v, scale in want:
        g = {k: jnp.asarray(a, jnp.float32) for k, a in grad(
            {k: np.asarray(w) for k, w in stored.items()}).items()}
        updates, state = base.update(g, state, stored)
        stored = jax.tree_util.tree_map(lambda w, u: w + u, stored, updates)
        logreg.assert_close(stored, p, rtol=1e-5, atol=1e-6)
        (msam_state,) = [s for s in jax.tree_util.tree_leaves(
            state, is_leaf=lambda s: isinstance(s, _msam.MSAMState))
            if isinstance(s, _msam.MSAMState)]
        logreg.assert_close(_msam.momentum(msam_state.inner), v, rtol=1e-5, atol=1e-6)
        assert float(msam_state.scale) == pytest.approx(scale, rel=1e-5)
        # The evaluated weights: the stored ones moved back, w = w~ + rho v/||v||.
        logreg.assert_close(_msam.unperturbed(stored, (None, state)),
                            logreg.add(p, v, scale), rtol=1e-5, atol=1e-6)
        assert logreg.norm(logreg.add(logreg.as64(_msam.unperturbed(
            stored, (None, state))), p, -1.0)) == pytest.approx(0.3, rel=1e-4)


def test_first_step_is_plain_sgd_then_perturbed():
    """v_0 = 0: the first step is SGD's, then the weights sit rho away along -v."""
    params, x, y = logreg.problem(seed=32)
    tx = _msam.msam(optax.sgd(0.1, momentum=0.9), 0.5)
    state = tx.init(params)
    g = logreg.grad(params, x, y)
    updates, state = tx.update({k: jnp.asarray(a, jnp.float32) for k, a in g.items()},
                               state, params)
    v = g  # v_1 = g
    want = logreg.add(logreg.add(params, v, -0.1), v, -0.5 / logreg.norm(v))
    logreg.assert_close(logreg.add(params, updates), want, rtol=1e-5, atol=1e-6)


def test_one_gradient_evaluation_per_step_declared_and_counted():
    config = config_schema.base_config()
    config.method = "msam"
    method = methods.get("msam")
    assert method.cost(config) == ("1", "1")


@pytest.mark.parametrize("change, words", [
    ({"optimizer.name": "adam"}, "optimizer.name='sgd'"),
    ({"optimizer.momentum": 0.0}, "momentum > 0"),
    ({"optimizer.nesterov": True}, "nesterov=False"),
    ({"swa.start_fraction": 0.5}, "SWA"),
    ({"msam.rho": -1.0}, "msam.rho=-1.0"),
])
def test_configs_it_cannot_run_are_refused_in_one_line(change, words):
    config = config_schema.base_config()
    config.method = "msam"
    config.optimizer.nesterov = False  # (the default is the SAM paper's Nesterov)
    for key, value in change.items():
        section, name = key.split(".")
        config[section][name] = value
    with pytest.raises(BadInputError) as error:
        validate.validate_config(config, 1)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_other_methods_run_under_what_msam_refuses():
    config = config_schema.base_config()
    config.method = "sam"
    config.optimizer.name = "adam"
    validate.validate_config(config, 1)


# ------------------------------------------------------------ through the trainer




def msam_config():
    config = load_config("configs/quickstart.py")
    config.method = "msam"
    config.msam.rho = 0.5
    config.optimizer.nesterov = False
    config.model.name = "wrn10_1"
    config.update(batch_size=16, num_steps=6, log_every_steps=3, eval_batch_size=512,
                  checkpoint_every_steps=3)
    return config


def final_state(workdir, config):
    model = get_model(config.model.name, 10)
    tx = train.training_chain(config, total_steps=config.num_steps).tx
    target = steps.initial_state(config.seed, model, tx, (8, 8, 1))
    return checkpoint.restore_latest(workdir, target)


def test_trainer_evaluates_the_unperturbed_weights_and_resumes_exactly(
        tmp_path, monkeypatch):
    evaluated = []
    real_evaluate = train.evaluate

    def recording(p_eval_step, state, mesh, batches):
        evaluated.append(jax.device_get(state.params))
        return real_evaluate(p_eval_step, state, mesh, batches)
    with monkeypatch.context() as patch:
        patch.setattr(train, "evaluate", recording)
        results = train.train_and_evaluate(msam_config(), str(tmp_path / "a"))
    assert results["method"] == "msam" and results["test_error"] < 1.0
    assert results["gradient_evaluations"] == pytest.approx(6)  # one pass a step
    config = msam_config()
    state = jax.device_get(final_state(str(tmp_path / "a"), config))
    _, base_state = state.opt_state
    (msam_state,) = [s for s in jax.tree_util.tree_leaves(
        base_state, is_leaf=lambda s: isinstance(s, _msam.MSAMState))
        if isinstance(s, _msam.MSAMState)]
    scale = float(msam_state.scale)
    # The stored weights sit rho from the evaluated ones, along -v / ||v||.
    offsets = []
    for got, stored, v in zip(jax.tree_util.tree_leaves(evaluated[-1]),
                              jax.tree_util.tree_leaves(state.params),
                              jax.tree_util.tree_leaves(
                                  _msam.momentum(msam_state.inner))):
        want = np.asarray(stored, np.float64) + scale * np.asarray(v, np.float64)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        offsets.append(np.ravel(np.asarray(got, np.float64) - stored))
    assert np.linalg.norm(np.concatenate(offsets)) == pytest.approx(0.5, rel=1e-3)

    # Killed after step 4 (the checkpoint at 3), resumed: the same run.
    with monkeypatch.context() as patch:
        interrupt_after(4, patch)
        with pytest.raises(Interrupted):
            train.train_and_evaluate(config, str(tmp_path / "b"))
    resumed = train.train_and_evaluate(config, str(tmp_path / "b"))
    assert resumed.pop("train_seconds") > 0 and results.pop("train_seconds") > 0
    assert resumed == results
    again = jax.device_get(final_state(str(tmp_path / "b"), config))
    for a, b in zip(jax.tree_util.tree_leaves((state.params, state.opt_state)),
                    jax.tree_util.tree_leaves((again.params, again.opt_state))):
        np.testing.assert_array_equal(a, b)
