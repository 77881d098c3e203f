"""Every run's config checked before the first one starts (a sweep's points).

A bad override in one point of a sweep (a key the config lacks, a value out
of range) would otherwise be found by that run alone, after the others had
started. The checks are the trainer's own (config_schema, config_flags,
validate.validate_config), with one device: the device count of the machine
that runs it is not known here, so what depends on it is left to the run.
"""

import os
import sys

from absl import flags
from ml_collections import config_flags

from sam_jax import cli
from sam_jax import config_schema
from sam_jax import declarations
from sam_jax.errors import BadInputError


def run_config(argv: list[str]):
    """The config a `python -m sam_jax.main` argv trains, as the trainer parses it."""
    argv = declarations.resolve_config_argv(argv)
    spec = next(a[len("--config="):] for a in argv if a.startswith("--config="))
    path, colon, arg = spec.partition(":")
    launched_from = os.path.join(declarations.launch_directory(), path)
    if not os.path.isfile(path) and os.path.isfile(launched_from):
        spec = launched_from + colon + arg  # where the run will start
    overrides = [a for a in argv if a.startswith("--config.")]
    config_schema.check_overrides(config_schema.load_config_file(spec), overrides)
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values,
                                    lock_config=True)
    argv = ["sam_jax.main", f"--config={spec}", *overrides]
    saved_argv = sys.argv
    sys.argv = argv  # config_flags reads the overrides from sys.argv
    try:
        flag_values(argv)
    except flags.Error as e:
        raise BadInputError(cli.one_line(e)) from None
    finally:
        sys.argv = saved_argv
    return flag_values["config"].value


def check_runs(runs, root: str) -> None:
    """BadInputError naming the first run whose config cannot train."""
    from sam_jax import validate  # imports JAX: only when a sweep is launched
    for run in runs:
        try:
            validate.validate_config(run_config(run.argv(root)), num_devices=1)
        except BadInputError as e:
            raise BadInputError(f"run {run.name}: {e}; nothing launched") from None
