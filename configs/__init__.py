"""Training configs: `get_config(arg)` files, read by path with
`--config=configs/FILE.py[:ARG]` (see sam_jax/config_schema.py)."""
