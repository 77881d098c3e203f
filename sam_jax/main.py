"""Command line: python -m sam_jax.main --config=configs/FILE.py[:ARG] --workdir=DIR.

Any config value can be overridden: --config.sam.rho=0.1 --config.num_epochs=10.
Bad input (an unknown model, rho < 0, a data set not available offline, ...)
stops with one line naming the value, exit code 2, and the workdir untouched.
"""

import os
import sys

from absl import flags
from absl import logging
from ml_collections import config_flags

from sam_jax import cli
from sam_jax import config_schema
from sam_jax import declarations
from sam_jax import errors
from sam_jax import preemption
from sam_jax import workdir as workdir_lib

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file (get_config(arg)).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs "
                               "and results; a run resumes from it.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", ["auto", "yes", "no"],
    "Call jax.distributed.initialize() (multi-host runs). 'auto': when launched "
    "by SLURM with more than one task, or where TPU_WORKER_HOSTNAMES names several "
    "hosts (GKE; on TPU VMs pass 'yes', as the tpu launcher does). JAX finds the "
    "coordinator in the environment.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "If the workdir holds a run with a different config, "
    "delete it and start afresh (otherwise such a workdir is refused).")
flags.mark_flags_as_required(["config", "workdir"])

def _want_distributed() -> bool:
    if _DISTRIBUTED.value != "auto":
        return _DISTRIBUTED.value == "yes"
    return (int(os.environ.get("SLURM_NTASKS", "1")) > 1
            or "TPU_WORKER_HOSTNAMES" in os.environ
            and "," in os.environ["TPU_WORKER_HOSTNAMES"])


def main(argv):
    if len(argv) > 1:
        raise errors.BadInputError(f"unexpected argument {argv[1]!r}")
    if not flags.FLAGS["verbosity"].present:  # orbax and tfds log a lot at INFO
        logging.set_verbosity(logging.WARNING)
    # Before JAX starts and the data load: a workdir that cannot work.
    workdir_lib.check_usable(_WORKDIR.value)
    import jax
    from sam_jax import train

    if _want_distributed():
        try:
            jax.distributed.initialize()
        except Exception as e:  # no cluster: no coordinator, no process id
            raise errors.BadInputError(
                f"--distributed=yes: jax.distributed.initialize() failed "
                f"({cli.one_line(e)}); launch it as a cluster job (SLURM, TPU pod)"
            ) from None
    try:
        train.train_and_evaluate(_CONFIG.value, _WORKDIR.value,
                                 overwrite=_OVERWRITE.value)
    except train.NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(errors.EXIT_NONFINITE)


def _check_config_argv(argv) -> None:
    """The config file and its overrides, checked with one-line errors before
    absl's own parser (whose messages span pages) sees them."""
    specs = [a[len("--config="):] for a in argv if a.startswith("--config=")]
    if "--config" in argv and argv.index("--config") + 1 < len(argv):
        specs.append(argv[argv.index("--config") + 1])
    if specs:
        config_schema.check_overrides(config_schema.load_config_file(specs[-1]), argv)


def run() -> None:
    # A signal from the first line on ends the run with its exit code (75 for
    # SIGTERM: the SLURM script requeues), one line, nothing half written.
    preemption.install_early_handlers()
    try:
        # `configs/FILE.py` is found from any directory (installed or checkout).
        sys.argv = declarations.resolve_config_argv(sys.argv)
        try:
            _check_config_argv(sys.argv)
        except errors.BadInputError as e:
            cli.fail(cli.one_line(e))
        cli.run(main)
    except preemption.Stopped as e:
        print(f"stopped: {e}; run the same command to resume", file=sys.stderr,
              flush=True)
        if e.step is None:
            # Stopped before the loop, maybe inside an import (TensorFlow,
            # XLA) whose threads can crash the interpreter's teardown (seen
            # as SIGSEGV in CI). Nothing is open for writing: leave at once.
            sys.stdout.flush()
            os._exit(e.exit_code)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    run()
