"""Deprecated: `python -m sam_jax.analyze` is `python -m sam_jax.analysis` (same
flags); kept for one release."""

from sam_jax.analysis.__main__ import *  # noqa: F401,F403  (the old names)
from sam_jax.analysis.__main__ import main

if __name__ == "__main__":
    from sam_jax import cli
    cli.run(main)
