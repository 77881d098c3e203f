"""SIGTERM (what SLURM and TPU preemption send) -> checkpoint, then a clean exit."""

import signal

import jax
import numpy as np
from jax.experimental import multihost_utils

from sam_jax.errors import EXIT_PREEMPTED  # noqa: F401  (re-exported: older callers)


class Preempted(Exception):
    """Raised by the training loop after it saved a checkpoint on SIGTERM."""

    def __init__(self, step: int):
        super().__init__(f"preempted (SIGTERM): checkpoint saved at step {step}")
        self.step = step


class SigtermWatcher:
    """Records SIGTERM instead of dying, so the loop can save first.

    With several hosts, every host must stop at the same step (checkpoints are
    collective), so the flag is shared across hosts at fixed steps.
    """

    def __init__(self, sync_every_steps: int = 10):
        self.sync_every_steps = sync_every_steps
        self._received = False
        self._previous = None

    def _handler(self, signum, frame):
        del signum, frame
        self._received = True

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handler)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False

    def should_stop(self, step: int) -> bool:
        if jax.process_count() == 1:
            return self._received
        if step % self.sync_every_steps:
            return False
        flags = multihost_utils.process_allgather(np.array(self._received))
        return bool(np.any(flags))
