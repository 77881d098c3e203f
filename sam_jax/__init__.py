"""sam_jax: Sharpness-Aware Minimization for JAX, Flax and optax."""

from sam_jax.sam import GROUP_MAPS
from sam_jax.sam import GroupedSAMOutput
from sam_jax.sam import SAMState
from sam_jax.sam import grouped_sam_gradient
from sam_jax.sam import per_device
from sam_jax.sam import perturbation
from sam_jax.sam import sam

__version__ = "0.1.0"

__all__ = [
    "GROUP_MAPS", "GroupedSAMOutput", "SAMState", "grouped_sam_gradient",
    "per_device", "perturbation", "sam",
]
