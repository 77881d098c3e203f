"""Reproduce the paper's tables: plan, launch, collect (see __main__.py).

The tables live in experiments/ at the repository root (beside configs/,
whose paths the run commands use), which this package puts on sys.path.
"""

import importlib
import importlib.util
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if os.path.isdir(os.path.join(REPO, "experiments")) and REPO not in sys.path:
    sys.path.append(REPO)

TABLES = (
    "table1_cifar", "table2_imagenet", "table3_finetuning", "table4_label_noise",
    "table5_svhn_fmnist", "figure3_m_sharpness", "figure3_hessian",
    "cpu_scale.label_noise", "cpu_scale.m_sharpness", "cpu_scale.rho_sweep",
    "cpu_scale.sharpness",
)


class UnknownTableError(ValueError):
    """A --table or --sweep that names nothing; the message is one line."""


def _load_file(path: str):
    """A Python file by path, relative to the working directory or the repository."""
    if not os.path.isfile(path) and os.path.isfile(os.path.join(REPO, path)):
        path = os.path.join(REPO, path)
    if not os.path.isfile(path):
        raise UnknownTableError(f"no such file {path!r}")
    name = "reproduce_" + os.path.basename(path).removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_table(name: str, seeds=None):
    """A table by name (`table1_cifar`, `cpu_scale.label_noise`) or by the path
    of a Python file defining get_table(seeds=None)."""
    if name.endswith(".py"):
        module = _load_file(name)
    elif name in TABLES:
        module = importlib.import_module(f"experiments.{name}")
    else:
        raise UnknownTableError(f"unknown table {name!r}; tables: {', '.join(TABLES)}")
    if not hasattr(module, "get_table"):
        raise UnknownTableError(f"{name!r} defines no get_table()")
    return module.get_table(seeds=seeds)


def load_sweep(path: str, seeds=None, base_config=None):
    """A sweep file (CONFIG, get_sweep(), optional SEEDS and METRIC) as a table."""
    from experiments import registry
    module = _load_file(path)
    if not hasattr(module, "get_sweep") or not hasattr(module, "CONFIG"):
        raise UnknownTableError(f"sweep {path!r} needs CONFIG and get_sweep()")
    name = os.path.basename(path).removesuffix(".py")
    return registry.sweep_table(
        name, base_config or module.CONFIG, module.get_sweep(),
        seeds or getattr(module, "SEEDS", 1), getattr(module, "METRIC", "error"))
