"""The paper's tables and figures as runs: rows x columns of cells with the
paper's numbers, one module per table (see registry.py and
`python -m sam_jax.reproduce`)."""
