"""What a training run does between its steps, and the clock it stops for it.

An action (a progress report, an evaluation, a checkpoint, a measurement)
says when it is due, by the number of steps done (0: before the first), and
runs on the state; the loop runs the actions due after a step together, in
their order, with the state computed and the training clock stopped, so
train_seconds count training alone (as clu.periodic_actions and big_vision's
`itstime` do it, without their wall-clock triggers: a run must be a function
of its config).
"""

import time
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax

Due = Callable[[int], bool]


class Action(NamedTuple):
    """`run(state, done)` after `done` steps where `due(done)`; it returns the
    state (a report resets the summed metrics, a checkpoint records the seconds)."""
    name: str
    due: Due
    run: Callable[[Any, int], Any]


def every_steps(n: int, *, at_start: bool = False,
                at_end: Optional[int] = None) -> Due:
    """After every n-th step (n = 0: never); also before the first step
    (`at_start`) and after the last (`at_end`: the number of steps)."""
    def due(done: int) -> bool:
        if done == 0:
            return at_start
        return bool(n) and done % n == 0 or done == at_end
    return due


def every_epochs(n: int, steps_per_epoch: int, *, first: bool = False,
                 except_at: Optional[int] = None) -> Due:
    """At the end of every n-th epoch (n = 0: never) and of the first
    (`first`); not after step `except_at` (the last, done apart)."""
    def due(done: int) -> bool:
        if not n or done == 0 or done % steps_per_epoch or done == except_at:
            return False
        epoch = done // steps_per_epoch
        return epoch % n == 0 or (first and epoch == 1)
    return due


class Stopwatch:
    """Training wall-clock seconds: compilation and the periodic actions
    (evaluation, measurements, checkpoints) are left out (paused around them)."""

    def __init__(self, seconds: float = 0.0):
        self.seconds = seconds
        self._since = None

    def start(self):
        self._since = time.perf_counter()

    def pause(self):
        if self._since is not None:
            self.seconds += time.perf_counter() - self._since
            self._since = None

    def read(self) -> float:
        if self._since is not None:
            now = time.perf_counter()
            self.seconds += now - self._since
            self._since = now
        return self.seconds


def run_due(actions: Sequence[Action], state, done: int, stopwatch: Stopwatch):
    """The state after the actions due at `done`, run in order. The clock
    stops once the state is computed (its time is the steps') and restarts
    after them; nothing is waited for when none is due."""
    due = [action for action in actions if action.due(done)]
    if not due:
        return state
    jax.block_until_ready(state)
    stopwatch.pause()
    for action in due:
        state = action.run(state, done)
    stopwatch.start()
    return state
