"""Sharpness analysis: Hessian spectra, m-sharpness, loss landscapes.

Every function takes `loss_fn(params, batch) -> mean loss over the batch` with
BatchNorm in evaluation mode, and `batches` (a list, a callable returning an
iterable, or one batch); the loss over a data set is the size-weighted mean of
the batch losses. See hessian.py for the conventions, run_io.py to load a run.
"""

from sam_jax.analysis.during_training import sharpness_metrics
from sam_jax.analysis.features import feature_rank
from sam_jax.analysis.features import features_and_logits
from sam_jax.analysis.features import penultimate_features
from sam_jax.analysis.hessian import hessian_eigenvalues
from sam_jax.analysis.hessian import hessian_operator
from sam_jax.analysis.hessian import hvp
from sam_jax.analysis.hessian import lanczos
from sam_jax.analysis.hessian import lanczos_quadrature
from sam_jax.analysis.hessian import mean_loss
from sam_jax.analysis.hessian import smoothed_density
from sam_jax.analysis.hessian import spectral_density
from sam_jax.analysis.hessian_trace import hutchinson_trace
from sam_jax.analysis.landscape import filter_normalized_direction
from sam_jax.analysis.landscape import interpolate
from sam_jax.analysis.landscape import landscape_1d
from sam_jax.analysis.landscape import landscape_2d
from sam_jax.analysis.msharpness import ascent_perturbation
from sam_jax.analysis.msharpness import m_sharpness
from sam_jax.analysis.msharpness import m_sharpness_per_set
from sam_jax.analysis.msharpness import project_to_ball
from sam_jax.analysis.perturbation_share import perturbation_share
from sam_jax.analysis.stability import edge_of_stability
from sam_jax.analysis.stability import gd_edge
from sam_jax.analysis.stability import gradient_norm
from sam_jax.analysis.stability import sam_edge
from sam_jax.analysis.stability import usam_edge

__all__ = [
    "ascent_perturbation", "filter_normalized_direction", "hessian_eigenvalues",
    "hessian_operator", "hvp", "interpolate", "lanczos", "lanczos_quadrature",
    "landscape_1d", "landscape_2d", "m_sharpness", "m_sharpness_per_set",
    "mean_loss", "project_to_ball", "sharpness_metrics", "smoothed_density",
    "spectral_density",
    # Training dynamics and the theory's quantities.
    "edge_of_stability", "feature_rank", "features_and_logits", "gd_edge",
    "gradient_norm", "hutchinson_trace", "penultimate_features",
    "perturbation_share", "sam_edge", "usam_edge",
]
