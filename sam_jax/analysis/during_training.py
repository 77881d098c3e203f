"""Sharpness measured while training runs: the paper's Figure 3 quantities.

The paper reports, at several epochs, the Hessian's top eigenvalue lambda_max
and the ratio lambda_max / lambda_5 (its Fig. 3, after Jastrzebski et al.),
and relates m-sharpness to generalisation. `sharpness_metrics` computes them on
a fixed subset of the training data, so values from different epochs compare.
"""

from typing import Optional

import jax
import numpy as np

from sam_jax.analysis import hessian
from sam_jax.analysis import msharpness
from sam_jax.analysis import run_io

# Examples per streamed batch for the HVPs: bounds memory, not the result.
_HVP_BATCH = 256


def _one_device(tree):
    """A replicated (e.g. mesh-sharded) state as single-device arrays, no copy to host."""
    def local(x):
        if isinstance(x, jax.Array) and len(x.sharding.device_set) > 1:
            if not x.is_fully_replicated:
                raise ValueError("sharpness_metrics needs a replicated state")
            return x.addressable_shards[0].data
        return x
    return jax.tree_util.tree_map(local, tree)


def fixed_subset(num_total: int, num_examples: int, seed: int) -> np.ndarray:
    """Sorted indices of `num_examples` examples, a function of (num_total, seed) only."""
    if not 1 <= num_examples <= num_total:
        raise ValueError(f"num_examples={num_examples} must be in [1, {num_total}]")
    return np.sort(np.random.default_rng(seed).permutation(num_total)[:num_examples])


def sharpness_metrics(model, state, images, labels, *, num_examples: int = 256,
                      top_k: int = 5, m: int = 16, rho: float = 0.05,
                      seed: int = 0,
                      num_iterations: Optional[int] = None) -> dict[str, float]:
    """Hessian and m-sharpness metrics of `state` on a fixed training subset.

    Args:
        model: the flax module being trained.
        state: a `steps.TrainState` (replicated over a mesh, or on one device).
        images: float32 [N, H, W, C] training images AS THE MODEL TAKES THEM,
            i.e. normalised and not augmented, e.g.
            `data.preprocess_for_eval(train_images, spec).numpy()`.
        labels: int [N] training labels (with the run's label noise).
        num_examples: size of the subset; the same `seed` picks the same
            subset every call. Must be a multiple of m.
        top_k: eigenvalues computed; lambda_max / lambda_top_k is reported.
        m: examples per set for m-sharpness.
        rho: radius for m-sharpness (one SAM ascent step per set).
        seed: the subset, and Lanczos's start vector.
        num_iterations: Lanczos iterations (default max(20, 2 top_k + 10),
            which settles the top 5 of a trained WRN-16-2 to 1e-6).

    The loss is the mean cross entropy without the L2 term, with BatchNorm in
    evaluation mode (running statistics): a function of the weights alone.
    Cost: num_iterations Hessian-vector products (each ~2.5 gradient
    evaluations) plus one SAM step per set, on `num_examples` examples.
    Compiled once per model and shapes, then reused across calls. Measured on
    a (shared, slow) 2-core CPU after compilation, 256 examples: WRN-10-1
    ~5 s of CPU time, WRN-16-2 ~45 s (use 64-128 examples there for a few s).

    Returns:
        {"lambda_max", f"lambda_max_over_lambda_{top_k}", "lambda_{top_k}",
         f"m_sharpness" (at m and rho), "subset_loss"}: Python floats.
    """
    if top_k < 2:
        raise ValueError(f"top_k={top_k} must be >= 2 (lambda_max / lambda_top_k)")
    indices = fixed_subset(len(labels), num_examples, seed)
    if num_examples % m:
        raise ValueError(f"m={m} must divide num_examples={num_examples}")
    subset = {"image": np.asarray(images)[indices],
              "label": np.asarray(labels)[indices].astype(np.int32)}
    params, batch_stats = _one_device((state.params, state.batch_stats))
    loss_fn = run_io.make_loss_fn(model, batch_stats)
    batches = run_io.make_batches(subset["image"], subset["label"], _HVP_BATCH)
    eigenvalues = hessian.hessian_eigenvalues(loss_fn, params, batches, k=top_k,
                                              num_iterations=num_iterations, seed=seed)
    sharpness = msharpness.m_sharpness(loss_fn, params, subset, m=m, rho=rho)
    return {
        "lambda_max": float(eigenvalues[0]),
        f"lambda_{top_k}": float(eigenvalues[-1]),
        f"lambda_max_over_lambda_{top_k}": float(eigenvalues[0] / eigenvalues[-1]),
        "m_sharpness": sharpness,
        "subset_loss": hessian.mean_loss(loss_fn, params, batches),
    }
