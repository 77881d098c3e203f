"""The paper's appendix ablations and USAM (sam_jax._sam) against numpy.

n inner ascent steps, the p = infinity ball, a random direction of norm rho, and
unnormalised SAM, each written here in float64 on logistic regression
(tests/logreg.py), as the papers define them.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import logreg
import sam_jax
from sam_jax import _sam


one_update = logreg.run_updates


def numpy_multistep_sam(params, x, y, rho, n):
    """n ascent steps of length rho along the normalised gradient, each projected
    back onto the rho-ball (Andriushchenko & Flammarion 2022), then the gradient
    at w + e."""
    w = logreg.as64(params)
    g = logreg.grad(w, x, y)
    e = logreg.scale(g, rho / logreg.norm(g))
    for _ in range(n - 1):
        g_k = logreg.grad(logreg.add(w, e), x, y)
        e = logreg.add(e, g_k, rho / logreg.norm(g_k))
        e = logreg.scale(e, min(1.0, rho / logreg.norm(e)))
    return logreg.grad(logreg.add(w, e), x, y)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_n_ascent_steps_match_the_numpy_loop(n):
    params, x, y = logreg.problem(seed=11)
    (out,), state = one_update(sam_jax.sam(0.3, ascent_steps=n), params, x, y)
    logreg.assert_close(out, numpy_multistep_sam(params, x, y, 0.3, n))
    assert int(state.info.gradient_evaluations) == n + 1


def test_more_ascent_steps_change_the_gradient():
    params, x, y = logreg.problem(seed=11)
    one = numpy_multistep_sam(params, x, y, 0.3, 1)
    five = numpy_multistep_sam(params, x, y, 0.3, 5)
    assert logreg.norm(logreg.add(one, five, -1.0)) > 1e-4


def test_linf_ball_is_rho_times_the_sign_of_the_gradient():
    params, x, y = logreg.problem(seed=12)
    (out,), _ = one_update(sam_jax.sam(0.05, ball="linf"), params, x, y)
    w = logreg.as64(params)
    g = logreg.grad(w, x, y)
    e = {k: 0.05 * np.sign(v) for k, v in g.items()}
    logreg.assert_close(out, logreg.grad(logreg.add(w, e), x, y))


def test_unnormalised_sam_steps_rho_times_the_gradient():
    params, x, y = logreg.problem(seed=13)
    for tx in (sam_jax.sam(0.5, normalize=False), _sam.usam(0.5)):
        (out,), _ = one_update(tx, params, x, y)
        w = logreg.as64(params)
        e = logreg.scale(logreg.grad(w, x, y), 0.5)
        logreg.assert_close(out, logreg.grad(logreg.add(w, e), x, y))


def test_random_direction_has_norm_rho_and_ignores_the_gradient():
    params, x, y = logreg.problem(seed=14)
    recorder = logreg.Recorder(x, y)
    tx = sam_jax.sam(0.2, ball="random", seed=3)
    state = tx.init(params)
    steps = []
    for grads in (logreg.jax_grad_fn(x, y)(params),
                  jax.tree_util.tree_map(lambda g: -7.0 * g, logreg.jax_grad_fn(x, y)(params))):
        recorder.weights.clear()
        _, state = tx.update(grads, state, params, grad_fn=recorder)
        (perturbed,) = recorder.weights
        steps.append(logreg.add(perturbed, logreg.as64(params), -1.0))
    for e in steps:
        assert logreg.norm(e) == pytest.approx(0.2, rel=1e-5)
    # Drawn afresh each step (folded with the count), whatever the gradient.
    assert logreg.norm(logreg.add(steps[0], steps[1], -1.0)) > 1e-3
    # The same seed and step give the same direction, whatever the gradient.
    recorder.weights.clear()
    tx.update(jax.tree_util.tree_map(jnp.zeros_like, params), tx.init(params), params,
              grad_fn=recorder)
    again = logreg.add(recorder.weights[0], logreg.as64(params), -1.0)
    logreg.assert_close(again, steps[0])


def test_random_direction_is_isotropic():
    """Over many steps the direction's mean is ~0 and each coordinate's second
    moment ~rho^2 / d, as for z / ||z|| with z ~ N(0, I)."""
    params, x, y = logreg.problem(seed=15)
    d = 6  # 5 kernel entries and the bias
    recorder = logreg.Recorder(x, y)
    tx = sam_jax.sam(1.0, ball="random", seed=0)
    state = tx.init(params)
    draws = []
    grads = logreg.jax_grad_fn(x, y)(params)
    for _ in range(400):
        recorder.weights.clear()
        _, state = tx.update(grads, state, params, grad_fn=recorder)
        e = logreg.add(recorder.weights[0], logreg.as64(params), -1.0)
        draws.append(np.concatenate([e["kernel"], [e["bias"]]]))
    draws = np.array(draws)
    assert np.abs(draws.mean(0)).max() < 4 * np.sqrt(1 / d / 400)
    np.testing.assert_allclose((draws ** 2).mean(0), 1 / d, rtol=0.35)


def test_bad_ablation_settings_are_refused():
    with pytest.raises(ValueError, match="sam.ball 'l3'; allowed: l2, linf, random"):
        sam_jax.sam(0.05, ball="l3")
    with pytest.raises(ValueError, match="ascent_steps=0"):
        sam_jax.sam(0.05, ascent_steps=0)
    with pytest.raises(ValueError, match="ascent_steps=2 needs sam.ball 'l2'"):
        sam_jax.sam(0.05, ascent_steps=2, ball="linf")


def test_the_family_is_exported_from_the_package():
    import importlib
    for name, module in {"asam": "_sam", "usam": "_sam", "gsam": "_gsam",
                         "looksam": "_looksam", "esam": "_esam", "rwp": "_rwp",
                         "sampa": "_sampa", "extragradient": "_extragradient",
                         "entropy_sgd": "_entropy_sgd"}.items():
        private = importlib.import_module("sam_jax." + module)
        assert getattr(sam_jax, name) is getattr(private, name)
