"""What every command line of sam_jax reports on failure: one error class for
bad input, and the exit codes.

Bad input (a config value out of range, a data set that is not there, a
workdir that belongs to another run, an unknown table) raises
`BadInputError` with a one-line message naming the value and what is allowed;
the command prints `error: MESSAGE` and exits with EXIT_BAD_INPUT, having
written nothing. Nothing here imports JAX, so launchers and `collect` can use
it.
"""

EXIT_OK = 0
EXIT_SOME_RUNS_NOT_DONE = 1  # reproduce launch: a run failed or was not finished
EXIT_BAD_INPUT = 2  # nothing was written; fix the command and run it again
EXIT_NONFINITE = 3  # the loss or gradient stopped being finite; last good checkpoint kept
# EX_TEMPFAIL, "try again": stopped by SIGTERM (preemption) after saving a
# checkpoint; the same command resumes. The generated SLURM script requeues on it.
EXIT_PREEMPTED = 75
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)

EXIT_MEANINGS = {
    EXIT_SOME_RUNS_NOT_DONE: "some runs not done",
    EXIT_BAD_INPUT: "bad input",
    EXIT_NONFINITE: "non-finite loss or gradient",
    EXIT_PREEMPTED: "preempted",
    EXIT_INTERRUPTED: "interrupted",
}


class BadInputError(ValueError):
    """Input that is not allowed; the message is one line naming it."""

    def __init__(self, message: str):
        # One line, whatever the caller joined in (e.g. a library's message).
        super().__init__(" ".join(str(message).split()))


class DatasetUnavailableError(BadInputError):
    """A data set is not prepared where it is looked for and cannot be downloaded
    here; the message says which command provides it."""
