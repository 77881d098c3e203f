"""K-SAM (sam_jax._ksam) against numpy: the k examples of highest loss in each
group, SAM's two passes on them (the examples and weights read back from
grad_fn, the update run eagerly), over several SGD steps; the cost ledger;
bad values refused; a run through the trainer."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import logreg
import sam_jax
from helpers import load_config
from sam_jax import _ksam
from sam_jax import config_schema
from sam_jax import methods
from sam_jax import train
from sam_jax import validate
from sam_jax.errors import BadInputError


class SubsetRecorder(logreg.Recorder):
    """grad_fn(weights, indices=...) on the chosen examples; records both."""

    def __init__(self, x, y):
        super().__init__(x, y)
        self.indices = []

    def __call__(self, params, indices=None):
        self.indices.append(None if indices is None else np.asarray(indices))
        x, y = (self.x, self.y) if indices is None else (self.x[indices], self.y[indices])
        self.weights.append({k: np.asarray(v, np.float64) for k, v in params.items()})
        return jax.grad(logreg.jax_loss)(params, x, y)


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_both_passes_on_the_highest_loss_examples_over_sgd_steps(fraction):
    params, x, y = logreg.problem(n=32, seed=41)
    rho, lr = 0.3, 0.5
    tx = _ksam.ksam(rho, fraction=fraction)
    state = tx.init(params)
    count = int(fraction * len(y))
    w = logreg.as64(params)
    for _ in range(4):
        stored = {k: jnp.asarray(v, jnp.float32) for k, v in w.items()}
        recorder = SubsetRecorder(x, y)
        losses = logreg.example_losses(w, x, y)
        out, state = tx.update(logreg.jax_grad_fn(x, y)(stored), state, stored,
                               grad_fn=recorder,
                               example_losses=jnp.asarray(losses, jnp.float32))
        chosen = np.argsort(-losses, kind="stable")[:count]
        assert len(set(losses.round(6))) == len(losses)  # no ties to break
        # Both passes on the same chosen examples: at w, then at w + e.
        assert [set(i.tolist()) for i in recorder.indices] == [set(chosen.tolist())] * 2
        g_s = logreg.grad(w, x[chosen], y[chosen])
        e = logreg.scale(g_s, rho / logreg.norm(g_s))
        logreg.assert_close(recorder.weights[0], w, rtol=1e-6)
        logreg.assert_close(recorder.weights[1], logreg.add(w, e), rtol=1e-5, atol=1e-6)
        want = logreg.grad(logreg.add(w, e), x[chosen], y[chosen])
        logreg.assert_close(out, want, rtol=1e-4, atol=1e-6)
        assert float(state.info.gradient_evaluations) == pytest.approx(2 * count / 32)
        assert float(state.info.perturbation_norm) == pytest.approx(rho, rel=1e-5)
        w = logreg.add(w, want, -lr)  # an SGD step, so the chosen examples change
    assert int(state.count) == 4


def test_each_group_selects_its_own_examples():
    """Grouped form: group k's top-k of its own losses and its own perturbation;
    the result is the mean over the groups."""
    params, x, y = logreg.problem(n=32, seed=42)
    xs, ys = x.reshape(2, 16, -1), y.reshape(2, 16)
    tx = _ksam.ksam(0.2, fraction=0.25, grouped=True)

    def grad_fn(weights, indices=None):
        return jax.vmap(lambda w, xg, yg, i: jax.grad(logreg.jax_loss)(w, xg[i], yg[i]))(
            weights, xs, ys, indices)
    losses = np.stack([logreg.example_losses(params, xs[k], ys[k]) for k in range(2)])
    g = jax.tree_util.tree_map(lambda v: jnp.stack([jnp.asarray(v)] * 2), params)
    out, _ = tx.update(g, tx.init(params), params, grad_fn=grad_fn,
                       example_losses=jnp.asarray(losses, jnp.float32))
    outs = []
    for k in range(2):
        chosen = np.argsort(-losses[k])[:4]
        g_s = logreg.grad(params, xs[k][chosen], ys[k][chosen])
        e = logreg.scale(g_s, 0.2 / logreg.norm(g_s))
        outs.append(logreg.grad(logreg.add(params, e), xs[k][chosen], ys[k][chosen]))
    logreg.assert_close(out, logreg.scale(logreg.add(outs[0], outs[1]), 0.5),
                        rtol=1e-4, atol=1e-6)


def test_every_example_is_sam():
    params, x, y = logreg.problem(seed=43)
    grad_fn = logreg.jax_grad_fn(x, y)
    tx = _ksam.ksam(0.2, fraction=1.0)
    out, _ = tx.update(grad_fn(params), tx.init(params), params,
                       grad_fn=lambda p, indices=None: grad_fn(p),
                       example_losses=jnp.asarray(logreg.example_losses(params, x, y)))
    sam_tx = sam_jax.sam(0.2)
    want, _ = sam_tx.update(grad_fn(params), sam_tx.init(params), params, grad_fn=grad_fn)
    for a, b in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_at_least_one_example():
    assert _ksam.selected_count(0.01, 16) == 1
    assert _ksam.selected_count(0.5, 2) == 1
    assert _ksam.selected_count(0.3, 10) == 3


def test_needs_the_per_example_losses():
    params, x, y = logreg.problem(seed=44)
    grad_fn = logreg.jax_grad_fn(x, y)
    tx = _ksam.ksam(0.1)
    with pytest.raises(ValueError, match="example_losses"):
        tx.update(grad_fn(params), tx.init(params), params, grad_fn=grad_fn)


def test_declared_cost():
    config = config_schema.base_config()
    config.ksam.fraction = 0.25
    assert methods.get("ksam").cost(config) == ("2 x 0.25 (+1 forward)", "3")
    assert methods.get("ksam").example_losses


@pytest.mark.parametrize("key, value", [("fraction", 0.0), ("fraction", 1.5),
                                        ("rho", -1.0)])
def test_bad_values_refused_in_one_line(key, value):
    config = config_schema.base_config()
    config.method = "ksam"
    config.ksam[key] = value
    with pytest.raises(BadInputError) as error:
        validate.validate_config(config, 1)
    assert f"ksam.{key}={value!r}" in str(error.value) and "\n" not in str(error.value)


def test_trains_through_the_loop_with_its_ledger(tmp_path):
    """Batch 16 on the tests' 8 devices: groups of 2, K = 1, so a step is two
    passes on half of each group: 1 gradient evaluation (and a forward)."""
    config = load_config("configs/quickstart.py")
    config.method = "ksam"
    config.model.name = "wrn10_1"
    config.update(batch_size=16, num_steps=3, log_every_steps=3, eval_batch_size=512)
    results = train.train_and_evaluate(config, str(tmp_path))
    assert results["method"] == "ksam" and results["test_error"] < 1.0
    assert results["gradient_evaluations"] == pytest.approx(3 * 2 * 1 / 2)
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    train_row = next(r for r in rows if r["split"] == "train")
    assert train_row["rho"] == pytest.approx(config.ksam.rho)
    assert train_row["perturbation_norm"] == pytest.approx(config.ksam.rho, rel=1e-4)
