"""The theory's predictions about SAM, checked on quadratics.

SAM iterates come from the project's transform (`sam_jax.sam` chained with
`optax.sgd`); the references are closed forms and numpy loops. Notation: lr is
the learning rate (eta in the papers), H the Hessian, g = H x the gradient.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sam_jax
from sam_jax import analysis


def rotated(eigenvalues, seed=0):
    """(Q diag(eigenvalues) Q^T, Q) for a random orthogonal Q."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal(
        (len(eigenvalues),) * 2))
    return q @ np.diag(eigenvalues) @ q.T, q


def sam_iterates(hessian, x0, lr, rho, steps):
    """[steps + 1, dim] iterates of sam_jax.sam + optax.sgd on L = x^T H x / 2."""
    hessian = jnp.asarray(hessian, jnp.float32)
    grad_fn = jax.grad(lambda x: 0.5 * x @ hessian @ x)
    tx = optax.chain(sam_jax.sam(rho), optax.sgd(lr))

    def step(carry, _):
        x, state = carry
        updates, state = tx.update(grad_fn(x), state, x, grad_fn=grad_fn)
        x = optax.apply_updates(x, updates)
        return (x, state), x

    x0 = jnp.asarray(x0, jnp.float32)
    _, xs = jax.jit(lambda x: jax.lax.scan(step, (x, tx.init(x)), None,
                                           length=steps))(x0)
    return np.concatenate([np.asarray(x0)[None], np.asarray(xs)]).astype(np.float64)


def usam_iterates(hessian, x0, lr, rho, steps):
    """Unnormalised SAM (e = rho g), the numpy reference: float64 loop."""
    xs = [np.asarray(x0, np.float64)]
    for _ in range(steps):
        x = xs[-1]
        xs.append(x - lr * hessian @ (x + rho * hessian @ x))
    return np.array(xs)


# ---------------------------------------------------------- (a) edges of stability

def test_gd_and_usam_are_stable_exactly_below_their_closed_form_edges():
    """Cohen et al. (ICLR 2021) for GD: 2 / lr; Agarwala & Dauphin (ICML 2023) for
    unnormalised SAM: lr lambda (1 + rho lambda) < 2, i.e. lambda below
    (sqrt(1 + 8 rho / lr) - 1) / (2 rho). On a quadratic whose spectrum spans the
    edge, the eigen-components above it grow and those below shrink, each at the
    rate |1 - lr lambda (1 + rho lambda)|."""
    lr, steps = 0.1, 60
    for rho, edge in [(0.0, analysis.gd_edge(lr)), (0.05, analysis.usam_edge(lr, 0.05)),
                      (0.5, analysis.usam_edge(lr, 0.5))]:
        factors = np.array([0.6, 0.9, 0.999, 1.001, 1.1, 1.3])
        eigenvalues = edge * factors
        # Diagonal: the components evolve independently, so rounding in a growing
        # one cannot leak into a shrinking one.
        xs = usam_iterates(np.diag(eigenvalues), np.ones(6), lr, rho, steps)
        growth = np.abs(xs[-1])
        assert np.all((growth > 1) == (factors > 1)), (rho, growth)
        rate = growth ** (1 / steps)
        factor = 1 - lr * eigenvalues * (1 + rho * eigenvalues)
        np.testing.assert_allclose(rate, np.abs(factor), rtol=1e-9)
    assert analysis.usam_edge(lr, 0.05) < analysis.gd_edge(lr)


def test_sams_one_step_edge_moves_with_the_gradient_norm():
    """Long & Bartlett (2023), "Sharpness-aware minimization and the edge of
    stability": one SAM step multiplies the eigen-component lambda of g by
    1 - lr lambda (1 + rho lambda / ||g||), so it grows past
    (||g|| / 2 rho)(sqrt(1 + 8 rho / (lr ||g||)) - 1). The same eigenvalue is
    unstable at a small gradient norm and stable at a large one."""
    lr, rho = 0.1, 0.05
    carrier = 0.2  # a flat direction that carries (almost all of) ||g||
    for target_norm in (0.01, 1.0):
        edge = analysis.sam_edge(lr, rho, target_norm)
        factors = np.array([0.8, 0.95, 1.05, 1.2])
        hessian, q = rotated(np.concatenate([[carrier], edge * factors]), seed=1)
        coordinates = np.concatenate([[target_norm / carrier],
                                      1e-3 * target_norm * np.ones(4)])
        x0 = q @ coordinates
        xs = sam_iterates(hessian, x0, lr, rho, steps=1)
        g0, g1 = (q.T @ hessian @ x for x in xs)
        grad_norm = np.linalg.norm(hessian @ xs[0])
        edge = analysis.sam_edge(lr, rho, grad_norm)  # the exact norm, a hair off
        eigenvalues = np.diag(q.T @ hessian @ q)[1:]
        multiplier = g1[1:] / g0[1:]
        np.testing.assert_allclose(
            multiplier, 1 - lr * eigenvalues * (1 + rho * eigenvalues / grad_norm),
            rtol=2e-3)
        assert np.all((np.abs(multiplier) > 1) == (eigenvalues > edge))
    # The edge at ||g|| = 0.01 lies below the one at ||g|| = 1, both below 2 / lr.
    assert (analysis.sam_edge(lr, rho, 0.01) < analysis.sam_edge(lr, rho, 1.0)
            < analysis.gd_edge(lr))


def test_sam_settles_on_its_own_edge_below_two_over_lr():
    """Long & Bartlett (2023): SAM operates at its edge. On a quadratic, SAM's
    2-cycle has lambda_max exactly at sam_edge(lr, rho, ||g||) for the cycle's
    gradient norm, while lambda_max < 2 / lr; edge_of_stability reports both."""
    eigenvalues = np.array([4.0, 2.5, 1.5, 1.0, 0.5])
    hessian, q = rotated(eigenvalues, seed=2)
    lr, rho = 0.3, 0.05
    xs = sam_iterates(hessian, q @ np.ones(5), lr, rho, steps=600)
    rows = np.linalg.cholesky(hessian).T  # rows^T rows = H: a one-example-per-row loss
    rows *= np.sqrt(len(rows))

    def loss(params, batch):
        return 0.5 * jnp.mean(jnp.square(batch["a"] @ params))

    report = analysis.edge_of_stability(loss, jnp.asarray(xs[-1], jnp.float32),
                                        {"a": rows.astype(np.float32)}, lr, rho=rho)
    assert report["lambda_max"] == pytest.approx(4.0, rel=1e-4)
    assert report["ratio"] == pytest.approx(lr * 4.0 / 2)  # 0.6: far below GD's edge
    assert report["sam_ratio"] == pytest.approx(1.0, abs=1e-3)


# ---------------------------------------------------------- (b) the 2-cycle

def two_cycle_amplitude(xs, direction, tolerance=1e-3):
    """|x . v| if the last iterates flip sign along v with a steady nonzero
    amplitude and nothing else remains; None otherwise."""
    along = xs[-4:] @ direction
    rest = np.linalg.norm(xs[-1] - along[-1] * direction)
    amplitude = abs(along[-1])
    flips = np.all(along[1:] * along[:-1] < 0)
    steady = np.all(np.abs(np.abs(along) - amplitude) <= tolerance * amplitude)
    if amplitude > 1e-6 and flips and steady and rest <= tolerance * amplitude:
        return amplitude
    return None


def test_sam_ends_in_a_two_cycle_along_the_top_eigenvector():
    """Bartlett, Long & Bousquet (JMLR 2023): on a quadratic, SAM with a constant
    lr ends bouncing across the minimum along the top eigenvector v_1. In 1-D,
    x -> (1 - lr lambda) x - lr lambda rho sign(x) has the 2-cycle x = +-s with
    s = lr lambda_1 rho / (2 - lr lambda_1); the other components shrink. GD at
    the same (stable) lr converges to the minimum: no cycle."""
    eigenvalues = np.array([4.0, 2.5, 1.5, 1.0, 0.5, 0.25])
    hessian, q = rotated(eigenvalues, seed=3)
    x0 = q @ np.ones(6)
    lr = 0.3  # lr lambda_1 = 1.2 < 2: GD is stable
    for rho in (0.02, 0.1):
        xs = sam_iterates(hessian, x0, lr, rho, steps=800)
        amplitude = two_cycle_amplitude(xs, q[:, 0])
        assert amplitude == pytest.approx(lr * 4.0 * rho / (2 - lr * 4.0), rel=1e-4)
    assert two_cycle_amplitude(sam_iterates(hessian, x0, lr, 0.0, steps=800),
                               q[:, 0]) is None


# ---------------------------------------------------------- (c) the rho^2 floor

def stochastic_sam_final_iterates(rhos, full_batch, steps=4000, chains=4096):
    """x_T of SAM with batch size 1 on f = (f_1 + f_2) / 2, f_i = c_i (x - z_i)^2 / 2,
    for each rho, over independent chains, with a decaying lr."""
    curvature, centre = jnp.array([1.0, 3.0]), jnp.array([1.0, -1.0])
    schedule = lambda t: 0.2 / (1.0 + t / 50.0)  # lr -> 0: no lr-sized noise floor

    def chain(rho, key):
        def loss(x, i):
            if full_batch:
                return jnp.mean(0.5 * curvature * (x - centre) ** 2)
            return 0.5 * curvature[i] * (x - centre[i]) ** 2

        tx = optax.chain(sam_jax.sam(lambda count: rho), optax.sgd(schedule))

        def step(carry, i):
            x, state = carry
            grad_fn = jax.grad(lambda x: loss(x, i))
            updates, state = tx.update(grad_fn(x), state, x, grad_fn=grad_fn)
            return (optax.apply_updates(x, updates), state), None

        x0 = jnp.float32(0.5)
        samples = jax.random.randint(key, (steps,), 0, 2)
        return jax.lax.scan(step, (x0, tx.init(x0)), samples)[0][0]

    keys = jax.random.split(jax.random.PRNGKey(0), chains)
    run = jax.vmap(jax.vmap(chain, in_axes=(None, 0)), in_axes=(0, None))
    return np.asarray(jax.jit(run)(jnp.asarray(rhos, jnp.float32), keys), np.float64)


def test_stochastic_sam_stalls_at_a_rho_squared_distance():
    """Si & Yun (NeurIPS 2023), "Practical sharpness-aware minimization cannot
    converge all the way to optima": with constant rho, stochastic SAM only
    reaches an O(rho^2) neighbourhood (in loss, and in squared distance), while
    full-batch SAM and SGD converge. Here the per-example gradients never vanish
    at x* = -1/2, each perturbation is +-rho towards its own example's slope,
    and the mean SAM gradient is zero at x_rho = x* - rho (c_2 - c_1)/(c_1 + c_2)
    = x* - rho / 2 (while -1 < x_rho < 1): the squared distance is rho^2 / 4, a
    log-log slope of 2 against rho."""
    x_star = -0.5
    rhos = np.array([0.05, 0.1, 0.2, 0.4])
    finals = stochastic_sam_final_iterates(np.concatenate([[0.0], rhos]),
                                           full_batch=False)
    distance = finals.mean(axis=1) - x_star  # the mean over chains
    np.testing.assert_allclose(distance[1:], -rhos / 2, rtol=0.1)
    slope = np.polyfit(np.log(rhos), np.log(distance[1:] ** 2), 1)[0]
    assert slope == pytest.approx(2.0, abs=0.15)
    assert abs(distance[0]) < 0.1 * rhos[0] / 2  # SGD (rho = 0) converges
    full = stochastic_sam_final_iterates(rhos, full_batch=True, chains=1)
    assert np.all(np.abs(full - x_star) < 0.1 * rhos[0] / 2)  # so does full-batch SAM


# ---------------------------------------------------------- (d) normalisation

def test_normalisation_keeps_sam_stable_where_usam_diverges():
    """Dai, Ahn & Sra (NeurIPS 2023), "The crucial role of normalization in
    sharpness-aware minimization": at lr lambda_max = 1.5 < 2, USAM diverges once
    rho > (2 / (lr lambda_max) - 1) / lambda_max (here 1/12), while SAM stays
    within its 2-cycle's amplitude lr lambda rho / (2 - lr lambda) of the
    minimum for every rho. Past lr lambda_max = 2 SAM diverges too: the check
    tells the two regimes apart."""
    eigenvalues = np.array([4.0, 2.0, 1.0, 0.5])
    hessian, q = rotated(eigenvalues, seed=4)
    x0 = q @ np.ones(4)
    lr = 1.5 / 4.0
    for rho in (0.1, 0.3, 1.0):
        assert lr * 4.0 * (1 + rho * 4.0) > 2  # beyond USAM's edge
        usam = usam_iterates(hessian, x0, lr, rho, steps=200)
        assert np.max(np.abs(usam[-1])) > 1e6 * np.max(np.abs(x0))
        sam = sam_iterates(hessian, x0, lr, rho, steps=200)
        assert np.all(np.isfinite(sam))
        assert np.linalg.norm(sam[-1]) == pytest.approx(1.5 * rho / (2 - 1.5), rel=1e-3)
    diverging = sam_iterates(hessian, x0, 2.1 / 4.0, 0.1, steps=200)
    assert np.max(np.abs(diverging[-1])) > 1e6 * np.max(np.abs(x0))
