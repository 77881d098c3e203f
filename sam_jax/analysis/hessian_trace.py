"""The trace of the Hessian by Hutchinson's estimator.

tr(H) = E[v^T H v] for any probe v with E[v v^T] = I. With Rademacher probes
(entries +-1) the variance of one sample is 2 sum_{i != j} H_ij^2, the lowest
of all such probe laws (Hutchinson 1990): the diagonal costs nothing. The trace
is the "trace-like" sharpness that stochastic SAM is argued to lower (Wen, Ma
& Li, ICLR 2023), where full-batch SAM lowers lambda_max.
"""

import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from sam_jax.analysis import hessian


def hutchinson_trace(loss_fn, params, batches, num_probes: int = 100,
                     seed: int = 0) -> tuple[float, float]:
    """(estimate of tr H, its standard error) with `num_probes` Rademacher probes.

    H is the Hessian of the mean loss over `batches` at `params` (hessian.py's
    conventions). Each probe is one Hessian-vector product, i.e. one pass over
    `batches`. The probes are drawn with numpy from `seed`, so the estimate is
    a function of (loss, params, batches, num_probes, seed).

    Returns:
        (trace, standard_error): the mean of v^T H v over the probes, and the
        sample standard deviation of v^T H v (ddof=1) over sqrt(num_probes).
        The standard error estimates sqrt(2 sum_{i != j} H_ij^2 / num_probes).
    """
    if not isinstance(num_probes, int) or num_probes < 2:
        raise ValueError(f"num_probes={num_probes!r} must be an int >= 2 "
                         "(the standard error needs two probes)")
    flat, unravel = ravel_pytree(params)
    rng = np.random.default_rng(seed)
    samples = np.empty(num_probes)
    for i in range(num_probes):
        probe = rng.choice(np.array([-1.0, 1.0]), size=flat.size)
        hv = hessian.hvp(loss_fn, params, batches,
                         unravel(jnp.asarray(probe, flat.dtype)))
        samples[i] = probe @ np.asarray(ravel_pytree(hv)[0], np.float64)
    return float(samples.mean()), float(samples.std(ddof=1) / np.sqrt(num_probes))
