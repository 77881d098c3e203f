"""Edges of stability: the closed forms as roots of the quadratic model's
stability condition, and edge_of_stability on quadratics of known spectrum."""

import jax.numpy as jnp
import numpy as np
import pytest

from helpers import quadratic_data
from helpers import quadratic_loss
from sam_jax import analysis


def test_each_edge_is_where_the_quadratic_models_factor_reaches_minus_one():
    """lr lambda (1 + c lambda) = 2 at the edge: c = 0 (GD), rho (USAM), rho / ||g||
    (SAM)."""
    for lr, rho in [(0.1, 0.05), (0.01, 0.5), (1.0, 1e-4)]:
        gd = analysis.gd_edge(lr)
        assert lr * gd == pytest.approx(2.0, rel=1e-12)
        usam = analysis.usam_edge(lr, rho)
        assert lr * usam * (1 + rho * usam) == pytest.approx(2.0, rel=1e-12)
        norms = np.logspace(-8, 8, 33)
        sam = analysis.sam_edge(lr, rho, norms)
        np.testing.assert_allclose(lr * sam * (1 + rho * sam / norms), 2.0, rtol=1e-12)
        # The paper's form, where cancellation does not bite.
        g = 1.0
        assert analysis.sam_edge(lr, rho, g) == pytest.approx(
            g / (2 * rho) * (np.sqrt(1 + 8 * rho / (lr * g)) - 1), rel=1e-12)
        # Below 2 / lr, rising with ||g|| towards it, and USAM's at ||g|| = 1.
        assert np.all(sam < gd) and np.all(np.diff(sam) > 0)
        assert sam[-1] == pytest.approx(gd, rel=1e-3)
        assert analysis.sam_edge(lr, rho, 1.0) == pytest.approx(usam, rel=1e-12)
    assert analysis.usam_edge(0.1, 0.0) == analysis.gd_edge(0.1)
    for bad in [lambda: analysis.gd_edge(0.0), lambda: analysis.usam_edge(0.1, -1.0),
                lambda: analysis.sam_edge(0.1, 0.05, 0.0)]:
        with pytest.raises(ValueError):
            bad()


def test_edge_of_stability_on_a_quadratic_of_known_spectrum():
    eigenvalues = np.array([12.0, 6.0, 3.0, 1.0, 0.5, 0.25])
    rows, hessian = quadratic_data(eigenvalues, num_examples=30)
    x = np.random.default_rng(1).normal(size=6).astype(np.float32)
    params = {"a": jnp.asarray(x[:2]), "b": jnp.asarray(x[2:])}
    batches = [{"a": rows[:11]}, {"a": rows[11:]}]
    lr, rho = 0.05, 0.05
    report = analysis.edge_of_stability(quadratic_loss, params, batches, lr, rho=rho)
    assert report["lambda_max"] == pytest.approx(12.0, rel=1e-5)
    assert report["two_over_lr"] == pytest.approx(40.0)
    assert report["ratio"] == pytest.approx(12.0 / 40.0, rel=1e-5)
    grad_norm = np.linalg.norm(hessian @ x.astype(np.float64))
    assert report["grad_norm"] == pytest.approx(grad_norm, rel=1e-5)
    edge = grad_norm / (2 * rho) * (np.sqrt(1 + 8 * rho / (lr * grad_norm)) - 1)
    assert report["sam_edge"] == pytest.approx(edge, rel=1e-5)
    assert report["sam_ratio"] == pytest.approx(12.0 / edge, rel=1e-5)
    assert set(analysis.edge_of_stability(quadratic_loss, params, batches, lr)) == {
        "lambda_max", "two_over_lr", "ratio"}
