"""The one command-line style of sam_jax: absl flags, one-line errors, exit codes.

Every `python -m sam_jax.X` entry point runs through `run`:
- a flag that does not parse (unknown, wrong type, a config file that cannot
  be loaded) prints `error: ...` on one line and exits with EXIT_BAD_INPUT;
- `errors.BadInputError` raised by the command does the same;
- whatever `main` returns is the exit code.
Nothing here imports JAX, so `--help` and flag errors are instant; before
JAX starts, `cpu_devices.configure()` gives several virtual CPU devices the
threads their collectives need.
"""

import sys
from typing import Callable, Optional

from absl import app
from absl import flags

from sam_jax import cpu_devices
from sam_jax import errors


def one_line(error: BaseException) -> str:
    """An exception's message on one line (absl and config files give several)."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


def fail(message: str, code: int = errors.EXIT_BAD_INPUT):
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


_HELP_FLAGS = frozenset({"help", "?", "helpshort", "helpfull", "helpxml"})


def asks_for_help(args: list[str]) -> bool:
    """Whether the flags (before a `--`) include one of absl's help flags."""
    for arg in args:
        if arg == "--":
            return False
        if arg.startswith("-") and arg.lstrip("-").split("=")[0] in _HELP_FLAGS:
            return True
    return False


def parse_flags(argv: list[str], flag_values: Optional[flags.FlagValues] = None
                ) -> list[str]:
    """Parses argv into `flag_values` (absl's global FLAGS by default); the
    positional arguments. Any parsing failure is one line and exit 2."""
    flag_values = flag_values or flags.FLAGS
    try:
        return flag_values(argv)
    except SystemExit as e:
        # absl exits 1 after printing the help it was asked for; asking for
        # help is no failure (exit 0, as other command lines do).
        if e.code == 1 and asks_for_help(argv[1:]):
            sys.exit(errors.EXIT_OK)
        raise
    except Exception as e:  # absl's flags.Error, or a config file's own error
        fail(one_line(e))


def run(main: Callable[[list[str]], Optional[int]]) -> None:
    """absl's app.run(main) with the conventions above."""
    cpu_devices.configure()

    def guarded(argv):
        try:
            code = main(argv)
        except errors.BadInputError as e:
            fail(one_line(e))
        sys.exit(code or 0)

    app.run(guarded, flags_parser=parse_flags)
