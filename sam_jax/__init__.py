"""sam_jax: Sharpness-Aware Minimization for JAX, Flax and optax.

The public names below are imported on first use, so the command lines
(`python -m sam_jax.reproduce`, `--help` of any of them) start without JAX.
"""

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "GROUP_MAPS": "sam_jax._sam",
    "GroupedSAMOutput": "sam_jax._sam",
    "SAMState": "sam_jax._sam",
    "grouped_sam_gradient": "sam_jax._sam",
    "per_device": "sam_jax.collectives",
    "perturbation": "sam_jax._sam",
    "sam": "sam_jax._sam",
    # The rest of the family (sam_jax.methods lists each with its cost).
    "asam": "sam_jax._sam",
    "usam": "sam_jax._sam",
    "plain_gradient": "sam_jax._sam",
    "gsam": "sam_jax._gsam",
    "looksam": "sam_jax._looksam",
    "esam": "sam_jax._esam",
    "rwp": "sam_jax._rwp",
    "sampa": "sam_jax._sampa",
    "extragradient": "sam_jax._extragradient",
    "entropy_sgd": "sam_jax._entropy_sgd",
    "rst": "sam_jax._rst",
    "aesam": "sam_jax._aesam",
    "msam": "sam_jax._msam",
    "ksam": "sam_jax._ksam",
    "saf_loss_term": "sam_jax._saf",
    "trajectory_loss": "sam_jax._saf",
    "mesa_loss_term": "sam_jax._mesa",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # the next lookup is a plain attribute
        return value
    raise AttributeError(f"module 'sam_jax' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
