"""Reproduce the paper's tables: plan, launch, collect (see __main__.py).

The machinery (runs, cells, tables, metrics, sweeps) is in this package; the
tables themselves are declarations in experiments/, loaded by name through
`sam_jax.declarations` (from a checkout or from an installed wheel alike).
"""

import importlib.util
import os

from sam_jax import declarations
from sam_jax.errors import BadInputError

TABLES = (
    "table1_cifar", "table2_imagenet", "table3_finetuning", "table4_label_noise",
    "table5_svhn_fmnist", "figure3_m_sharpness", "figure3_hessian",
    "cpu_scale.label_noise", "cpu_scale.m_sharpness", "cpu_scale.rho_sweep",
    "cpu_scale.sharpness", "review_comparison.pilot",
    "review_comparison.grid", "review_comparison.clean", "review_comparison.noise40",
    "review_comparison.noise80", "sam_behaviour.edge_of_stability",
    "sam_behaviour.trace_and_lambda_max", "sam_behaviour.m_sweep",
    "sam_behaviour.rho_feature_rank", "sam_vs_sgd.gates", "sam_vs_sgd.grid",
    "sam_vs_sgd.grid_shared",
    "sam_vs_sgd.clean", "sam_vs_sgd.noise80",
)

# A --table or --sweep that names nothing (the name of earlier releases).
UnknownTableError = BadInputError


def _load_file(path: str):
    """A Python file by path (relative to the working directory or to the
    declarations, e.g. experiments/sweeps/rho_search.py)."""
    if not os.path.isfile(path):
        for base in filter(None, (declarations.experiments_dir(),)):
            candidate = os.path.join(os.path.dirname(base), path)
            if path.startswith("experiments" + os.sep) and os.path.isfile(candidate):
                path = candidate
                break
            candidate = os.path.join(base, path.removeprefix("experiments" + os.sep))
            if os.path.isfile(candidate):
                path = candidate
                break
    if not os.path.isfile(path):
        raise BadInputError(f"no such file {path!r}")
    name = "reproduce_" + os.path.basename(path).removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise BadInputError(f"{path!r} is not valid Python: {e.msg} (line {e.lineno})") from e
    except Exception as e:  # the file's own error, in one line
        raise BadInputError(f"{path!r} raised {_one_line(e)} when loaded") from None
    return module


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}".rstrip(": ")


def _call(path: str, function, *args, **kwargs):
    """function(*args, **kwargs) of a table or sweep file; its exception as
    one BadInputError naming the file (a traceback is no message for a user)."""
    try:
        return function(*args, **kwargs)
    except BadInputError:
        raise
    except Exception as e:
        raise BadInputError(f"{path!r}: {function.__name__}() raised "
                            f"{_one_line(e)}") from None


def load_table(name: str, seeds=None):
    """A table by name (`table1_cifar`, `cpu_scale.label_noise`) or by the path
    of a Python file defining get_table(seeds=None)."""
    if name.endswith(".py"):
        module = _load_file(name)
    elif name in TABLES:
        module = declarations.import_declaration(name)
    else:
        raise BadInputError(f"unknown table {name!r}; tables: {', '.join(TABLES)}")
    if not hasattr(module, "get_table"):
        raise BadInputError(f"{name!r} defines no get_table()")
    return _call(name, module.get_table, seeds=seeds)


def load_sweep(path: str, seeds=None, base_config=None):
    """A sweep file (CONFIG, get_sweep(), optional SEEDS and METRIC) as a table."""
    from sam_jax.reproduce import registry
    module = _load_file(path)
    if not hasattr(module, "get_sweep") or not hasattr(module, "CONFIG"):
        raise BadInputError(f"sweep {path!r} needs CONFIG and get_sweep()")
    name = os.path.basename(path).removesuffix(".py")
    return registry.sweep_table(
        name, base_config or module.CONFIG, _call(path, module.get_sweep),
        seeds or getattr(module, "SEEDS", 1), getattr(module, "METRIC", "error"))
