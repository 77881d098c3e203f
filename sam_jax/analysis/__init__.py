"""Sharpness analysis: Hessian spectra, m-sharpness, loss landscapes.

Every function takes `loss_fn(params, batch) -> mean loss over the batch` with
BatchNorm in evaluation mode, and `batches` (a list, a callable returning an
iterable, or one batch); the loss over a data set is the size-weighted mean of
the batch losses. See hessian.py for the conventions, run_io.py to load a run.
"""

import importlib

# public name -> module that defines it; imported on first use, so that
# `python -m sam_jax.analysis --help` and argument errors need no JAX.
_EXPORTS = {
    "ascent_perturbation": "sam_jax.analysis.msharpness",
    "edge_of_stability": "sam_jax.analysis.stability",
    "feature_rank": "sam_jax.analysis.features",
    "features_and_logits": "sam_jax.analysis.features",
    "filter_normalized_direction": "sam_jax.analysis.landscape",
    "gd_edge": "sam_jax.analysis.stability",
    "gradient_norm": "sam_jax.analysis.stability",
    "hessian_eigenvalues": "sam_jax.analysis.hessian",
    "hessian_operator": "sam_jax.analysis.hessian",
    "hutchinson_trace": "sam_jax.analysis.hessian_trace",
    "hvp": "sam_jax.analysis.hessian",
    "interpolate": "sam_jax.analysis.landscape",
    "lanczos": "sam_jax.analysis.hessian",
    "lanczos_quadrature": "sam_jax.analysis.hessian",
    "landscape_1d": "sam_jax.analysis.landscape",
    "landscape_2d": "sam_jax.analysis.landscape",
    "m_sharpness": "sam_jax.analysis.msharpness",
    "make_training_loss_fn": "sam_jax.analysis.during_training",
    "m_sharpness_per_set": "sam_jax.analysis.msharpness",
    "mean_loss": "sam_jax.analysis.hessian",
    "penultimate_features": "sam_jax.analysis.features",
    "perturbation_share": "sam_jax.analysis.perturbation_share",
    "project_to_ball": "sam_jax._sam",
    "sam_edge": "sam_jax.analysis.stability",
    "sharpness_metrics": "sam_jax.analysis.during_training",
    "smoothed_density": "sam_jax.analysis.hessian",
    "spectral_density": "sam_jax.analysis.hessian",
    "StabilityTracker": "sam_jax.analysis.during_training",
    "top_eigenpair": "sam_jax.analysis.hessian",
    "usam_edge": "sam_jax.analysis.stability",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sam_jax.analysis' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
