"""Sweep declarations for `python -m sam_jax.reproduce sweep --sweep=FILE`
(the helpers they use are in sam_jax/reproduce/sweeps.py)."""
