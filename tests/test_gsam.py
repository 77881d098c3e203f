"""GSAM (sam_jax._gsam) against big_vision's update rule written in numpy."""

import jax
import numpy as np
import optax
import pytest

import logreg
import sam_jax
from sam_jax import _gsam


def numpy_gsam(params, x, y, rho, alpha, eps=1e-12):
    """big_vision gsam_gradient (minimize_fp=True) in float64."""
    g = logreg.grad(params, x, y)
    e = logreg.scale(g, rho / (logreg.norm(g) + eps))
    g_p = logreg.grad(logreg.add(params, e), x, y)
    u = logreg.scale(g_p, 1.0 / logreg.norm(g_p))
    g_perp = logreg.add(g, u, -logreg.vdot(g, u))
    return logreg.add(g_p, g_perp, -alpha)


run = logreg.run_updates


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_update_matches_big_vision_rule(alpha):
    params, x, y = logreg.problem(seed=3)
    (out,), _ = run(_gsam.gsam(0.2, alpha=alpha, learning_rate=0.1), params, x, y)
    logreg.assert_close(out, numpy_gsam(params, x, y, 0.2, alpha))


def test_rho_follows_the_learning_rate_between_rho_min_and_rho_max():
    schedule = optax.cosine_decay_schedule(0.1, 10)
    for count in (0, 3, 7, 10):
        rho = float(_gsam.gsam_rho(count, rho_max=0.2, rho_min=0.05,
                                   learning_rate=schedule, lr_max=0.1, lr_min=0.0))
        lr = float(schedule(count))
        assert rho == pytest.approx(0.05 + 0.15 * lr / 0.1, rel=1e-6)
    params, x, y = logreg.problem(seed=4)
    outs, state = run(_gsam.gsam(0.2, rho_min=0.05, alpha=0.4, learning_rate=schedule),
                      params, x, y, steps=4)
    # The same params each step: the radius alone changes, as the schedule says.
    rho_3 = 0.05 + 0.15 * float(schedule(3)) / 0.1
    logreg.assert_close(outs[3], numpy_gsam(params, x, y, rho_3, 0.4))
    assert float(state.info.rho) == pytest.approx(rho_3, rel=1e-5)


def test_constant_radius_and_no_alpha_is_exactly_sam():
    params, x, y = logreg.problem(seed=5)
    (gsam_out,), _ = run(_gsam.gsam(0.1, alpha=0.0,
                                    learning_rate=optax.linear_schedule(0.1, 0.0, 10)),
                         params, x, y)
    (sam_out,), _ = run(sam_jax.sam(0.1), params, x, y)
    for a, b in zip(jax.tree_util.tree_leaves(gsam_out), jax.tree_util.tree_leaves(sam_out)):
        np.testing.assert_array_equal(a, b)


def test_orthogonal_part_is_orthogonal_to_the_perturbed_gradient():
    # With alpha, the output moves from g_p along g's part orthogonal to g_p.
    params, x, y = logreg.problem(seed=6)
    (out0,), _ = run(_gsam.gsam(0.3, alpha=0.0, learning_rate=0.1), params, x, y)
    (out1,), _ = run(_gsam.gsam(0.3, alpha=1.0, learning_rate=0.1), params, x, y)
    difference = logreg.add(logreg.as64(out0), logreg.as64(out1), -1.0)  # = g_perp
    assert logreg.norm(difference) > 1e-4
    assert abs(logreg.vdot(difference, logreg.as64(out0))) < 1e-6
