"""Deprecated: `python scripts/benchmark.py` is `python -m sam_jax.benchmark`
(same flags; see sam_jax/benchmark/). Kept for one release."""

import runpy

if __name__ == "__main__":
    runpy.run_module("sam_jax.benchmark", run_name="__main__", alter_sys=True)
