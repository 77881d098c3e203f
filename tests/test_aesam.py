"""AE-SAM (sam_jax._aesam) against a numpy loop of its rule: the moving
averages of ||g||^2, the threshold c_t and each step's decision, step by step;
then the trainer (the decision is a lax.cond in the step) and an exact resume
(the statistics are in the optax state)."""


import jax
import numpy as np
import optax
import pytest

import logreg
from helpers import load_config
from helpers import Interrupted, interrupt_after
from sam_jax import _aesam
from sam_jax import config_schema
from sam_jax import methods
from sam_jax import train


def numpy_aesam(params, x, y, *, rho, decay, c_start, c_end, total_steps, lr, steps):
    """The paper's Algorithm 1 in float64 with plain SGD: per step (gradient,
    mu_t, sigma2_t, whether SAM)."""
    mu = sigma2 = 0.0
    rows = []
    for t in range(steps):
        g = logreg.grad(params, x, y)
        squared = logreg.norm(g) ** 2
        mu = decay * mu + (1 - decay) * squared
        sigma2 = decay * sigma2 + (1 - decay) * (squared - mu) ** 2
        c = t / total_steps * c_end + (1 - t / total_steps) * c_start
        take = squared >= mu + c * np.sqrt(sigma2)
        out = (logreg.grad(logreg.add(params, logreg.scale(g, rho / logreg.norm(g))), x, y)
               if take else g)
        rows.append((out, mu, sigma2, take))
        params = logreg.add(params, out, -lr)
    return rows


@pytest.mark.parametrize("c_start,c_end", [(1.0, -1.0), (0.5, 0.5)])
def test_statistics_and_decisions_step_by_step(c_start, c_end):
    params, x, y = logreg.problem(seed=14)
    rho, decay, lr, steps = 0.3, 0.9, 1.0, 16
    want = numpy_aesam(logreg.as64(params), x, y, rho=rho, decay=decay, c_start=c_start,
                       c_end=c_end, total_steps=steps, lr=lr, steps=steps)
    decisions = [row[3] for row in want]
    assert any(decisions) and not all(decisions)  # both kinds of step occur
    tx = _aesam.aesam(rho, decay=decay, c_start=c_start, c_end=c_end, total_steps=steps)
    grad_fn = logreg.jax_grad_fn(x, y)
    update = jax.jit(lambda g, s, p: tx.update(g, s, p, grad_fn=grad_fn))
    state = tx.init(params)
    for t, (out_want, mu, sigma2, take) in enumerate(want):
        out, state = update(grad_fn(params), state, params)
        np.testing.assert_allclose(float(state.mean), mu, rtol=1e-5, err_msg=str(t))
        np.testing.assert_allclose(float(state.variance), sigma2, rtol=1e-4, atol=1e-12,
                                   err_msg=str(t))
        assert float(state.info.gradient_evaluations) == (2.0 if take else 1.0), t
        logreg.assert_close(out, out_want, rtol=1e-4, atol=1e-6)
        params = optax.apply_updates(params, {k: -lr * v for k, v in out.items()})
    assert int(state.count) == steps


def test_a_wrong_threshold_schedule_decides_otherwise():
    """The test above would catch c_t running the other way: its decisions differ."""
    params, x, y = logreg.problem(seed=14)
    kwargs = dict(rho=0.3, decay=0.9, total_steps=16, lr=1.0, steps=16)
    right = numpy_aesam(logreg.as64(params), x, y, c_start=1.0, c_end=-1.0, **kwargs)
    wrong = numpy_aesam(logreg.as64(params), x, y, c_start=-1.0, c_end=1.0, **kwargs)
    assert [r[3] for r in right] != [r[3] for r in wrong]


def test_grouped_decides_on_the_batch_gradient():
    """Two groups: ||g||^2 of the mean over groups decides; SAM perturbs per group."""
    params, x, y = logreg.problem(n=64, seed=15)
    xs, ys = x.reshape(2, 32, -1), y.reshape(2, 32)
    rho = 0.3
    tx = _aesam.aesam(rho, c_start=-0.5, c_end=-0.5, grouped=True)

    def grad_fn(weights):
        return jax.vmap(lambda w, xg, yg: jax.grad(logreg.jax_loss)(w, xg, yg))(
            weights, xs, ys)
    stacked = jax.tree_util.tree_map(lambda v: np.stack([v, v]), params)
    out, state = tx.update(grad_fn(stacked), tx.init(params), params, grad_fn=grad_fn)
    p64 = logreg.as64(params)
    g_batch = logreg.grad(p64, x, y)
    squared = logreg.norm(g_batch) ** 2
    np.testing.assert_allclose(float(state.mean), 0.1 * squared, rtol=1e-5)
    # mu_0 + c sigma_0 = (0.1 - 0.5 * 0.9 sqrt(0.1)) G < G: a SAM step.
    assert float(state.info.gradient_evaluations) == 2.0
    per_group = [logreg.grad(logreg.add(p64, logreg.scale(g, rho / logreg.norm(g))),
                             xs[k], ys[k])
                 for k, g in enumerate(logreg.grad(p64, xs[k], ys[k]) for k in range(2))]
    logreg.assert_close(out, logreg.scale(logreg.add(per_group[0], per_group[1]), 0.5),
                        rtol=1e-4, atol=1e-6)


def test_declared_cost():
    config = config_schema.base_config()
    method = methods.get("aesam")
    assert method.cost(config) == ("1 + fraction of SAM steps (adaptive)",) * 2
    assert not method.accumulates and method.second_pass_schedule is None
    assert method.radius == "aesam.rho"


@pytest.mark.parametrize("kwargs,message", [
    (dict(rho=-0.1), "aesam.rho=-0.1"),
    (dict(decay=1.0), "aesam.decay=1.0"),
    (dict(decay=-0.1), "aesam.decay=-0.1"),
    (dict(c_start=float("nan")), "aesam.c_start=nan"),
    (dict(c_end=float("inf")), "aesam.c_end=inf"),
    (dict(total_steps=None), "aesam.total_steps=None"),
    (dict(total_steps=0), "aesam.total_steps=0"),
])
def test_rejects_bad_values(kwargs, message):
    kwargs = {"rho": 0.05, "total_steps": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        _aesam.aesam(kwargs.pop("rho"), **kwargs)


# ------------------------------------------------------------- the trainer



def test_trains_through_the_loop_and_resumes_exactly(tmp_path, monkeypatch):
    """6 steps of digits: each step made 1 or 2 passes (the first a SAM step,
    as c_0 = 1 puts the threshold below ||g||^2); stopped after step 5
    (checkpoint at 3) and resumed, it ends as the uninterrupted run."""
    config = load_config("configs/quickstart.py")
    config.method = "aesam"
    config.model.name = "wrn10_1"
    config.update(batch_size=16, num_steps=6, log_every_steps=3, eval_batch_size=512,
                  checkpoint_every_steps=3)
    whole = train.train_and_evaluate(config, str(tmp_path / "a"))
    assert whole["method"] == "aesam"
    made = whole["gradient_evaluations"]
    assert made == int(made) and 6 + 1 <= made <= 12
    with monkeypatch.context() as patch:
        interrupt_after(5, patch)
        with pytest.raises(Interrupted):
            train.train_and_evaluate(config, str(tmp_path / "b"))
    resumed = train.train_and_evaluate(config, str(tmp_path / "b"))
    assert resumed.pop("train_seconds") > 0 and whole.pop("train_seconds") > 0
    assert resumed == whole
