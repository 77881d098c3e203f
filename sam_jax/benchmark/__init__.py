"""Speed and memory of sam_jax, each case a ratio measured side by side in one
process: `python -m sam_jax.benchmark` (see __main__.py for the cases).

- harness.py: round-robin timing, medians, per-round ratio spreads, XLA's
  memory statistics, the row format;
- workloads.py: what is timed (compiled training steps, the input pipelines,
  optax.contrib.sam's step, the PyTorch reference, single conv layers);
- cases.py: each case, the workloads it needs and the rows it reports;
- report.py: machine, versions, markdown tables.
"""
