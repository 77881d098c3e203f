"""Where the declarations live: configs/ (training configs, read by path) and
experiments/ (paper tables and sweeps, imported as `sam_jax.experiments`).

In a checkout they sit at the repository root, beside the package. A wheel
(`pip install .`) carries the same files inside the package, as
sam_jax/configs and sam_jax/experiments (setup.py maps them there), so the
reproduction CLI finds its tables and the trainer its configs from any
directory. Nothing here imports JAX.
"""

import importlib
import importlib.util
import os
import sys
from typing import Optional

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
EXPERIMENTS_PACKAGE = "sam_jax.experiments"


def _find(name: str) -> Optional[str]:
    # The installed copy first: it exists only in an installed wheel, while a
    # site-packages directory may well have an unrelated `experiments/` beside us.
    for base in (PACKAGE_DIR, os.path.dirname(PACKAGE_DIR)):
        candidate = os.path.join(base, name)
        if os.path.isfile(os.path.join(candidate, "__init__.py")):
            return candidate
    return None


def configs_dir() -> Optional[str]:
    return _find("configs")


def experiments_dir() -> Optional[str]:
    return _find("experiments")


def experiments_package():
    """The package of table and sweep declarations, `sam_jax.experiments`.

    Registered from experiments_dir() when Python cannot import it by itself
    (a checkout used without `pip install`), so table modules import their
    siblings with relative imports whatever the install.
    """
    if EXPERIMENTS_PACKAGE in sys.modules:
        return sys.modules[EXPERIMENTS_PACKAGE]
    directory = experiments_dir()
    if directory is None:
        raise ModuleNotFoundError("no experiments/ declarations beside or inside "
                                  f"the package {PACKAGE_DIR}")
    spec = importlib.util.spec_from_file_location(
        EXPERIMENTS_PACKAGE, os.path.join(directory, "__init__.py"),
        submodule_search_locations=[directory])
    module = importlib.util.module_from_spec(spec)
    sys.modules[EXPERIMENTS_PACKAGE] = module
    spec.loader.exec_module(module)
    return module


def import_declaration(name: str):
    """`table1_cifar` or `cpu_scale.label_noise` -> its module in experiments/."""
    experiments_package()
    return importlib.import_module(f"{EXPERIMENTS_PACKAGE}.{name}")


def resolve_config(spec: str) -> str:
    """A `--config` value (`PATH[:ARG]`) with PATH found from any directory.

    A path that exists as given is kept; `configs/NAME.py` that does not is
    taken from the package's configs (the checkout's, or the installed copy).
    """
    path, colon, arg = spec.partition(":")
    if os.path.exists(path):
        return spec
    directory = configs_dir()
    relative = os.path.normpath(path)
    if directory and relative.startswith("configs" + os.sep):
        candidate = os.path.join(directory, relative[len("configs" + os.sep):])
        if os.path.isfile(candidate):
            return candidate + colon + arg
    return spec


def resolve_config_argv(argv: list[str]) -> list[str]:
    """argv with its `--config=PATH[:ARG]` (or `--config PATH`) resolved."""
    out = list(argv)
    for i, item in enumerate(out):
        if item.startswith("--config="):
            out[i] = "--config=" + resolve_config(item[len("--config="):])
        elif item == "--config" and i + 1 < len(out):
            out[i + 1] = resolve_config(out[i + 1])
    return out


def launch_directory() -> str:
    """Where launched runs start: the checkout's root when the declarations come
    from a checkout (so `configs/...` in a command is its file), else here
    (`python -m sam_jax.main` finds `configs/...` in the installed copy)."""
    directory = configs_dir()
    if directory and os.path.dirname(directory) != PACKAGE_DIR:
        return os.path.dirname(directory)
    return os.getcwd()
