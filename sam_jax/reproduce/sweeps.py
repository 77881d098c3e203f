"""Sweep helpers: lists of config-override dicts, composed like big_vision's.

A sweep file defines CONFIG (the base `configs/FILE.py:ARG`), optionally SEEDS
and METRIC, and `get_sweep() -> list[dict]`; `python -m sam_jax.reproduce
sweep --sweep=FILE` launches one run per override dict and seed.

  product({"sam.rho": [0.05, 0.1]}, {"seed_offset": [0, 1]})   # 4 dicts
  zip({"sam.rho": [0.05, 0.1], "optimizer.learning_rate": [0.1, 0.05]})  # 2
"""

import builtins
import itertools
from typing import Union

Part = Union[dict, list]  # {key: [values]} or [override dict, ...]


def _as_list(part: Part, combine) -> list[dict]:
    if isinstance(part, dict):
        keys = list(part)
        return [dict(builtins.zip(keys, values))
                for values in combine(*(part[k] for k in keys))]
    return [dict(overrides) for overrides in part]


def product(*parts: Part) -> list[dict]:
    """Every combination: a dict part {key: values} is itself a product."""
    lists = [_as_list(part, itertools.product) for part in parts]
    return [{k: v for overrides in combo for k, v in overrides.items()}
            for combo in itertools.product(*lists)]


def zip(*parts: Part) -> list[dict]:  # noqa: A001  (the sweep vocabulary)
    """Element-wise: all parts (and all value lists of a dict part) have one length."""
    def strict_zip(*lists):
        return builtins.zip(*lists, strict=True)
    lists = [_as_list(part, strict_zip) for part in parts]
    return [{k: v for overrides in combo for k, v in overrides.items()}
            for combo in strict_zip(*lists)]
