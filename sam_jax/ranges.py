"""One check that a setting is a number in its range, with one message format
("KEY=VALUE must be ... in [LOW, HIGH]"), for the config validation and the
transforms' constructors alike."""

import math
import numbers
from typing import Optional


def range_problem(key: str, value, low: float, high: float = math.inf, *,
                  low_open: bool = False, high_open: bool = False,
                  integer: bool = False, optional: str = "",
                  alternative: str = "") -> Optional[str]:
    """Why `value` is not a finite number in the range (one line), or None.

    `optional`: what None means (None is then allowed); `alternative`: what
    else is accepted, said in the message (e.g. "or a schedule")."""
    if optional and value is None:
        return None
    left, right = ("(" if low_open else "["), (")" if high_open else "]")
    allowed = f"{left}{low:g}, {high:g}{right}" if high != math.inf else (
        f"> {low:g}" if low_open else f">= {low:g}")
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and math.isfinite(value)
          and (value > low if low_open else value >= low)
          and (value < high if high_open else value <= high)
          and (not integer or float(value).is_integer()))
    if ok:
        return None
    kind = "an integer" if integer else "a finite number"
    extra = "".join(f" ({text})" for text in (
        f"or None: {optional}" if optional else "", alternative) if text)
    return (f"{key}={value!r} must be {kind} {'in ' if high != math.inf else ''}"
            f"{allowed}{extra}")


def check_number(key: str, value, low: float, high: float = math.inf,
                 **options) -> None:
    """range_problem's message as a ValueError."""
    problem = range_problem(key, value, low, high, **options)
    if problem:
        raise ValueError(problem)


def check_choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {key} {value!r}; allowed: {', '.join(allowed)}")
