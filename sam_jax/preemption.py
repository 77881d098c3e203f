"""SIGTERM (what SLURM and TPU preemption send) and SIGINT (Ctrl-C): save, then
a clean exit with a code a launcher can act on.

From the first line of `python -m sam_jax.main` to the last:
- before the training loop (imports, data loading, compilation) there is
  nothing to save: the signal ends the run at once, exit 75 (SIGTERM: a
  requeue resumes it) or 130 (SIGINT), with one line;
- in the loop, the signal is recorded and the loop stops at the next step
  boundary, saves a checkpoint and exits the same way.
Nothing here imports JAX at module level, so `main` installs the handlers
before anything heavy starts.
"""

import signal
import sys

from sam_jax.errors import EXIT_INTERRUPTED, EXIT_PREEMPTED  # noqa: F401  (re-exported)


class Stopped(BaseException):
    """The run stopped on a signal; `step` is the checkpoint saved (None: none).

    A BaseException, like KeyboardInterrupt: code that catches Exception (a
    data loader, orbax) must not swallow it."""
    exit_code = EXIT_PREEMPTED
    signal_name = "SIGTERM"

    def __init__(self, step=None):
        saved = ("nothing to save yet" if step is None
                 else f"checkpoint saved at step {step}")
        super().__init__(f"{self.reason} ({self.signal_name}): {saved}")
        self.step = step

    reason = "preempted"


class Preempted(Stopped):
    """SIGTERM: exit 75, "try again" (the SLURM script requeues on it)."""


class Interrupted(Stopped):
    """SIGINT (Ctrl-C): exit 130."""
    exit_code = EXIT_INTERRUPTED
    signal_name = "SIGINT"
    reason = "interrupted"


_EXCEPTIONS = {signal.SIGTERM: Preempted, signal.SIGINT: Interrupted}


# Signals the early handler raised for. Python ignores an exception raised
# inside a finalizer or a weakref callback (it prints it and goes on), so the
# signal is also recorded: the training loop stops on it before its first step.
_PENDING: list = []


def _raise_now(signum, frame):
    del frame
    _PENDING.append(signum)
    raise _EXCEPTIONS[signum]()


def _unraisable_hook(previous):
    def hook(unraisable):
        if not isinstance(unraisable.exc_value, Stopped):  # ours is in _PENDING
            previous(unraisable)
    return hook


def install_early_handlers() -> None:
    """Until the training loop takes over: a signal ends the run right away."""
    for signum in _EXCEPTIONS:
        try:
            signal.signal(signum, _raise_now)
        except ValueError:  # not the main thread: leave signals alone
            return
    sys.unraisablehook = _unraisable_hook(sys.unraisablehook)


class SigtermWatcher:
    """Records SIGTERM and SIGINT instead of dying, so the loop can save first.

    With several hosts, every host must stop at the same step (checkpoints are
    collective), so the flags are shared across hosts at fixed steps.
    """

    def __init__(self, sync_every_steps: int = 10):
        self.sync_every_steps = sync_every_steps
        self._received = {signum: False for signum in _EXCEPTIONS}
        self._previous = {}

    def _handler(self, signum, frame):
        del frame
        self._received[signum] = True

    def __enter__(self):
        if _PENDING:  # a signal before the loop whose exception was swallowed
            raise _EXCEPTIONS[_PENDING[0]]()
        for signum in _EXCEPTIONS:
            try:
                self._previous[signum] = signal.signal(signum, self._handler)
            except ValueError:  # not the main thread: leave signals alone
                break
        return self

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        return False

    def stop(self, step: int):
        """The exception class to raise after saving at `step`, or None."""
        received = [self._received[s] for s in _EXCEPTIONS]
        import jax  # here: this module is imported before JAX starts
        if jax.process_count() > 1:
            if step % self.sync_every_steps:
                return None
            import numpy as np
            from jax.experimental import multihost_utils
            received = list(np.any(multihost_utils.process_allgather(
                np.array(received)), axis=0))
        for exception, flag in zip(_EXCEPTIONS.values(), received):
            if flag:
                return exception
        return None

    def should_stop(self, step: int) -> bool:
        return self.stop(step) is not None
