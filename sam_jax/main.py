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
from sam_jax import declarations
from sam_jax import errors

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file (get_config(arg)).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs "
                               "and results; a run resumes from it.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", ["auto", "yes", "no"],
    "Call jax.distributed.initialize() (multi-host runs). 'auto': when launched "
    "by SLURM with more than one task, or on a multi-host TPU (JAX detects the "
    "coordinator from the environment).")
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
    del argv
    if not flags.FLAGS["verbosity"].present:  # orbax and tfds log a lot at INFO
        logging.set_verbosity(logging.WARNING)
    # Imported here so that --help and flag errors come before JAX starts.
    import jax
    from sam_jax import preemption
    from sam_jax import train

    if _want_distributed():
        jax.distributed.initialize()
    try:
        train.train_and_evaluate(_CONFIG.value, _WORKDIR.value,
                                 overwrite=_OVERWRITE.value)
    except train.NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(errors.EXIT_NONFINITE)
    except preemption.Preempted as e:
        print(f"stopped: {e}; run the same command to resume", file=sys.stderr)
        sys.exit(errors.EXIT_PREEMPTED)


def run() -> None:
    # `configs/FILE.py` is found from any directory (installed or checkout).
    sys.argv = declarations.resolve_config_argv(sys.argv)
    cli.run(main)


if __name__ == "__main__":
    run()
