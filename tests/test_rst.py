"""RST (sam_jax._rst) against a numpy loop of its rule: the SAM steps are the
Bernoulli trials drawn as the module documents them, here with jax.random
directly; a SAM step returns SAM's gradient, the others the plain gradient.
Then the trainer: its host schedule, the ledger and an exact resume."""

import json

import jax
import numpy as np
import optax
import pytest

import logreg
from helpers import load_config
from helpers import Interrupted, interrupt_after
from sam_jax import _rst
from sam_jax import config_schema
from sam_jax import methods
from sam_jax import train


def trials(seed, steps, p_of_step):
    """The documented draw: u_t uniform from fold_in(fold_in(PRNGKey(seed),
    0x525354), t); SAM at t iff u_t < p_t."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 0x525354)
    return [float(jax.random.uniform(jax.random.fold_in(key, t))) < p_of_step(t)
            for t in range(steps)]


def numpy_rst(params, x, y, *, rho, sam_at, lr):
    """The rule in float64 over the steps of `sam_at`, plain SGD between them;
    returns each step's gradient."""
    outs = []
    for take in sam_at:
        g = logreg.grad(params, x, y)
        out = (logreg.grad(logreg.add(params, logreg.scale(g, rho / logreg.norm(g))), x, y)
               if take else g)
        outs.append(out)
        params = logreg.add(params, out, -lr)
    return outs


def run_transform(tx, params, x, y, *, steps, lr):
    grad_fn = logreg.jax_grad_fn(x, y)
    update = jax.jit(lambda g, s, p: tx.update(g, s, p, grad_fn=grad_fn))
    state, outs, evaluations = tx.init(params), [], []
    for _ in range(steps):
        out, state = update(grad_fn(params), state, params)
        outs.append(out)
        evaluations.append(float(state.info.gradient_evaluations))
        params = optax.apply_updates(params, {k: -lr * v for k, v in out.items()})
    return outs, evaluations


@pytest.mark.parametrize("schedule,seed", [("constant", 3), ("linear", 5)])
def test_sam_on_the_drawn_steps_and_sgd_between(schedule, seed):
    params, x, y = logreg.problem(seed=11)
    rho, lr, steps, p, p_end = 0.3, 0.5, 12, 0.5, 1.0
    if schedule == "constant":
        p_of_step = lambda t: p
    else:
        p_of_step = lambda t: p + (p_end - p) * t / steps
    sam_at = trials(seed, steps, p_of_step)
    assert 0 < sum(sam_at) < steps  # both kinds of step occur
    want = numpy_rst(logreg.as64(params), x, y, rho=rho, sam_at=sam_at, lr=lr)
    tx = _rst.rst(rho, p=p, schedule=schedule, p_end=p_end, total_steps=steps, seed=seed)
    outs, evaluations = run_transform(tx, params, x, y, steps=steps, lr=lr)
    for t in range(steps):
        logreg.assert_close(outs[t], want[t], rtol=1e-4, atol=1e-6)
    assert evaluations == [2.0 if take else 1.0 for take in sam_at]
    # The host's draws (the trainer's schedule) are the same trials.
    host = _rst.sam_steps(seed, steps, p=p, schedule=schedule, p_end=p_end)
    assert host.tolist() == sam_at
    # A wrong rule is caught: the other kind of step differs far beyond the
    # tolerance on every step.
    flipped = numpy_rst(logreg.as64(params), x, y, rho=rho,
                        sam_at=[not take for take in sam_at], lr=lr)
    assert logreg.norm(logreg.add(flipped[0], want[0], -1.0)) > 1e-3


def test_the_trainer_path_makes_the_step_it_is_told():
    """second_pass True / False: the SAM step / the plain step, whatever the trial."""
    params, x, y = logreg.problem(seed=12)
    rho = 0.3
    g = logreg.grad(logreg.as64(params), x, y)
    sam_gradient = logreg.grad(logreg.add(logreg.as64(params),
                                          logreg.scale(g, rho / logreg.norm(g))), x, y)
    for second_pass, want, evaluations in [(True, sam_gradient, 2.0), (False, g, 1.0)]:
        tx = _rst.rst(rho, p=0.0 if second_pass else 1.0, second_pass=second_pass)
        outs, state = logreg.run_updates(tx, params, x, y)
        logreg.assert_close(outs[0], want, rtol=1e-4, atol=1e-6)
        assert float(state.info.gradient_evaluations) == evaluations


def test_a_zero_radius_step_makes_one_pass():
    params, x, y = logreg.problem(seed=13)
    # p = 1: every trial says SAM; the radius schedule is 0 at even steps.
    tx = _rst.rst(lambda count: 0.3 * (count % 2), p=1.0)
    _, evaluations = run_transform(tx, params, x, y, steps=4, lr=0.1)
    assert evaluations == [1.0, 2.0, 1.0, 2.0]
    _, evaluations = run_transform(_rst.rst(0.0, p=1.0), params, x, y, steps=2, lr=0.1)
    assert evaluations == [1.0, 1.0]


def test_declared_cost_and_schedule():
    config = config_schema.base_config()
    config.method = "rst"
    assert methods.get("rst").cost(config) == ("1 + 0.5", "1 + 0.5")
    config.rst.update(schedule="linear", p=0.2, p_end=0.8)
    assert methods.get("rst").cost(config) == ("1 + 0.5", "1 + 0.5")
    config.rst.p = 0.6
    assert methods.get("rst").cost(config) == ("1 + 0.7", "1 + 0.7")
    # The trainer's schedule: the trials, none before late-phase SAM's start.
    config.seed = 4
    want = trials(4, 20, lambda t: 0.6 + (0.8 - 0.6) * t / 20)
    at = methods.second_pass_schedule(config, 20)
    assert [at(t) for t in range(20)] == want
    config.rho_schedule.start_fraction = 0.5
    at = methods.second_pass_schedule(config, 20)
    assert [at(t) for t in range(20)] == [take and t >= 10 for t, take in enumerate(want)]


@pytest.mark.parametrize("kwargs,message", [
    (dict(rho=-0.1), "rst.rho=-0.1"),
    (dict(p=1.5), "rst.p=1.5"),
    (dict(p=-0.2), "rst.p=-0.2"),
    (dict(p_end=2.0), "rst.p_end=2.0"),
    (dict(schedule="cosine"), "rst.schedule 'cosine'"),
    (dict(schedule="linear"), "rst.total_steps=None"),
])
def test_rejects_bad_values(kwargs, message):
    kwargs = {"rho": 0.05, **kwargs}
    with pytest.raises(ValueError, match=message):
        _rst.rst(kwargs.pop("rho"), **kwargs)


# ------------------------------------------------------------- the trainer

def digits_config(num_steps):
    config = load_config("configs/quickstart.py")
    config.method = "rst"
    config.model.name = "wrn10_1"
    config.update(batch_size=16, num_steps=num_steps, log_every_steps=2,
                  eval_batch_size=512, checkpoint_every_steps=4)
    return config




def test_trains_through_the_loop_and_resumes_exactly(tmp_path, monkeypatch):
    """8 steps: the ledger counts 2 passes on the drawn steps, 1 elsewhere; a
    run stopped after step 6 (checkpoint at 4) and resumed ends as the
    uninterrupted one, SAM steps drawn after the resume included."""
    config = digits_config(8)
    sam_at = trials(config.seed, 8, lambda t: config.rst.p)
    assert any(sam_at[:4]) and any(sam_at[4:]) and not all(sam_at)
    whole = train.train_and_evaluate(config, str(tmp_path / "a"))
    assert whole["method"] == "rst"
    assert whole["gradient_evaluations"] == pytest.approx(8 + sum(sam_at))
    rows = [json.loads(line) for line in open(tmp_path / "a" / "metrics.jsonl")]
    ledger = [r["total_gradient_evaluations"] for r in rows if r["split"] == "train"]
    assert ledger == pytest.approx(np.cumsum([1 + t for t in sam_at])[1::2])
    with monkeypatch.context() as patch:
        interrupt_after(6, patch)
        with pytest.raises(Interrupted):
            train.train_and_evaluate(config, str(tmp_path / "b"))
    resumed = train.train_and_evaluate(config, str(tmp_path / "b"))
    assert resumed.pop("train_seconds") > 0 and whole.pop("train_seconds") > 0
    assert resumed == whole
