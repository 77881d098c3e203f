"""The radius rho of a step: a constant or a schedule of the step count, and
whether a step at rho = 0 skips its second pass (statically or by lax.cond).
"""

from typing import Callable, Union

import jax

from sam_jax.ranges import check_number


ScalarOrSchedule = Union[float, Callable]


def check_rho(name: str, rho, key: str = "rho"):
    # A schedule (or a traced value) can only be checked when called; a
    # constant is checked now.
    if not callable(rho) and not isinstance(rho, jax.Array):
        check_number(f"{name}.{key}", rho, 0, alternative="or a schedule")


def rho_at(rho: ScalarOrSchedule, count):
    return rho(count) if callable(rho) else rho


def may_skip(rho: ScalarOrSchedule) -> str:
    """'never' (rho a constant > 0), 'always' (the constant 0: exactly the base
    optimizer, one pass) or 'when_zero' (a schedule: lax.cond on rho_t > 0, so
    steps at rho_t = 0, e.g. before late-phase SAM starts, cost one pass)."""
    if callable(rho) or isinstance(rho, jax.Array):
        return "when_zero"
    return "always" if rho == 0 else "never"


def with_optional_second_pass(rho_now, skip: str, two_pass, one_pass):
    """two_pass() or one_pass(), chosen statically or by lax.cond on rho_now > 0."""
    if skip == "always":
        return one_pass()
    if skip == "never":
        return two_pass()
    return jax.lax.cond(rho_now > 0, lambda _: two_pass(), lambda _: one_pass(), None)
