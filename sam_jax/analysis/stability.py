"""Edges of stability: the largest curvature at which GD, SAM and USAM do not blow up.

The quadratic model (Cohen et al. 2021 for GD; Long & Bartlett 2023 for SAM;
Agarwala & Dauphin 2023 for unnormalised SAM): near w, L(w + d) ~ L(w) + g.d +
d^T H d / 2. Along an eigenvector of H with eigenvalue lambda, one step with
learning rate lr multiplies the gradient component by

    GD:    1 - lr lambda
    USAM:  1 - lr lambda (1 + rho lambda)              (e = rho g)
    SAM:   1 - lr lambda (1 + rho lambda / ||g||)      (e = rho g / ||g||)

(the gradient at w + e is g + H e). The component grows once the factor falls
below -1, i.e. once lambda passes the positive root of
c lambda^2 + lambda - 2 / lr = 0, with c = 0 (GD), rho (USAM) or
rho / ||g|| (SAM):

    GD:    2 / lr
    USAM:  (sqrt(1 + 8 rho / lr) - 1) / (2 rho)
    SAM:   (||g|| / (2 rho)) (sqrt(1 + 8 rho / (lr ||g||)) - 1)

SAM's edge is USAM's with rho / ||g|| in place of rho: it depends on the
gradient norm, lies below 2 / lr, tends to 2 / lr as ||g|| grows and to 0 as
||g|| -> 0. ||g|| is the norm of the gradient that is normalised into e (on
the batch the perturbation is computed from). `edge_of_stability` measures
lambda_max on a fixed batch and reports it beside these edges.
"""

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from sam_jax.analysis import hessian


def _check_positive(**values):
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name}={value!r} must be > 0")


def _positive_root(c, learning_rate):
    """The positive root of c x^2 + x - 2 / lr = 0 (c >= 0), cancellation-free."""
    # 2q / (1 + sqrt(1 + 4 c q)) with q = 2 / lr equals (sqrt(1 + 4cq) - 1) / (2c)
    # but keeps its precision when 4cq is tiny (and gives 2 / lr at c = 0).
    q = 2.0 / learning_rate
    return 2.0 * q / (1.0 + np.sqrt(1.0 + 4.0 * c * q))


def gd_edge(learning_rate: float) -> float:
    """2 / lr: GD on a quadratic diverges along eigenvalues above it."""
    _check_positive(learning_rate=learning_rate)
    return 2.0 / learning_rate


def usam_edge(learning_rate: float, rho: float) -> float:
    """(sqrt(1 + 8 rho / lr) - 1) / (2 rho): the edge of unnormalised SAM.

    USAM (e = rho g) multiplies the eigen-component lambda of the gradient of a
    quadratic by 1 - lr lambda (1 + rho lambda) every step, exactly.
    """
    _check_positive(learning_rate=learning_rate)
    if not rho >= 0:
        raise ValueError(f"rho={rho!r} must be >= 0")
    return float(_positive_root(rho, learning_rate))


def sam_edge(learning_rate: float, rho: float, grad_norm) -> float:
    """(||g|| / (2 rho)) (sqrt(1 + 8 rho / (lr ||g||)) - 1): SAM's edge at ||g||.

    SAM (e = rho g / ||g||) multiplies the eigen-component lambda of the
    gradient of a quadratic by 1 - lr lambda (1 + rho lambda / ||g||) in one
    step. Below 2 / lr for every ||g||; accepts an array of gradient norms.
    """
    _check_positive(learning_rate=learning_rate)
    if not rho >= 0:
        raise ValueError(f"rho={rho!r} must be >= 0")
    grad_norm = np.asarray(grad_norm, np.float64)
    if np.any(grad_norm <= 0):
        raise ValueError("grad_norm must be > 0 (at a zero gradient SAM's edge is 0)")
    edge = _positive_root(rho / grad_norm, learning_rate)
    return float(edge) if edge.ndim == 0 else edge


def gradient_norm(loss_fn, params, batches) -> float:
    """||grad L|| of the mean loss over `batches` (hessian.py's conventions)."""
    loss_fn = hessian.as_partial(loss_fn)
    total, count = None, 0
    for batch in hessian.as_batches(batches):
        n = hessian.batch_size(batch)
        g = _weighted_grad(loss_fn, params, batch, jnp.float32(n))
        total = g if total is None else jax.tree_util.tree_map(jnp.add, total, g)
        count += n
    if not count:
        raise ValueError("batches is empty")
    squares = sum(float(jnp.sum(jnp.square(x.astype(jnp.float32))))
                  for x in jax.tree_util.tree_leaves(total))
    return float(np.sqrt(squares)) / count


@jax.jit
def _weighted_grad(loss_fn, params, batch, weight):
    return jax.tree_util.tree_map(lambda x: weight * x, jax.grad(loss_fn)(params, batch))


def edge_of_stability(loss_fn, params, batch, learning_rate: float, *,
                      rho: Optional[float] = None,
                      num_iterations: Optional[int] = None,
                      seed: int = 0) -> dict[str, float]:
    """lambda_max on a fixed batch, beside GD's edge 2 / lr (and SAM's, given rho).

    Meant to be logged every N steps on the same batch (or list of batches,
    see hessian.py): `num_iterations` Lanczos steps (default 20), one
    Hessian-vector product (~2.5 gradient evaluations) each, plus one gradient
    when `rho` is given. For SAM, pass the batch its perturbation is computed
    from (per-device batch, or m examples): ||g|| there sets SAM's edge.

    Returns:
        {"lambda_max", "two_over_lr", "ratio" = lambda_max / (2 / lr)}, and with
        `rho`: {"grad_norm", "sam_edge", "sam_ratio" = lambda_max / sam_edge}.
        A ratio near 1 means training runs at that edge (Cohen et al. 2021;
        Long & Bartlett 2023).
    """
    _check_positive(learning_rate=learning_rate)
    lambda_max = float(hessian.hessian_eigenvalues(
        loss_fn, params, batch, k=1, num_iterations=num_iterations, seed=seed)[0])
    two_over_lr = gd_edge(learning_rate)
    result = {"lambda_max": lambda_max, "two_over_lr": two_over_lr,
              "ratio": lambda_max / two_over_lr}
    if rho is not None:
        norm = gradient_norm(loss_fn, params, batch)
        edge = sam_edge(learning_rate, rho, norm) if norm > 0 else 0.0
        result.update(grad_norm=norm, sam_edge=edge,
                      sam_ratio=lambda_max / edge if edge > 0 else float("inf"))
    return result
