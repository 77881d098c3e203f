"""The study's paired statistics (PROTOCOL.md, "Analysis" and "Seeds"): the
paired t interval and test, the non-inferiority bound, and a paired t-test's
power (scipy's t and noncentral t distributions)."""

import dataclasses
import math
from typing import Optional

from scipy import stats

ALPHA, POWER = 0.05, 0.80


def power(n: int, effect: float, sd: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test with n pairs."""
    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)
    shift = effect * math.sqrt(n) / sd
    return float(stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift))


def seeds_needed(effect: float, sd: float, target: float = POWER) -> int:
    n = 2
    while power(n, effect, sd) < target:
        n += 1
    return n


@dataclasses.dataclass(frozen=True)
class Paired:
    """x - y over the seeds both have."""
    n: int
    mean: float
    sd: float
    low: float  # the 95% two-sided interval
    high: float
    p: float  # the paired t-test's two-sided p-value
    below: int  # seeds with x < y

    @property
    def se(self) -> float:
        return self.sd / math.sqrt(self.n)


def paired(x: dict, y: dict, confidence: float = 0.95) -> Optional[Paired]:
    """x, y: seed -> value. None below two shared seeds."""
    seeds = sorted(set(x) & set(y))
    if len(seeds) < 2:
        return None
    d = [x[s] - y[s] for s in seeds]
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / (n - 1))
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    if sd > 0:
        p = float(2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))
    else:
        p = 0.0 if mean else 1.0
    return Paired(n, mean, sd, mean - half, mean + half, p,
                  sum(1 for s in seeds if x[s] < y[s]))


def non_inferior(x: dict, reference: dict, margin: float) -> Optional[tuple]:
    """(the upper end of the one-sided 95% interval of mean(x - reference),
    whether it is below `margin`), or None below two shared seeds."""
    result = paired(x, reference, confidence=0.90)  # its upper end: one-sided 95%
    if result is None:
        return None
    return result.high, result.high < margin


def detectable(sd: float, n: int, target: float = POWER) -> float:
    """The smallest difference n paired seeds detect with `target` power."""
    if sd == 0:
        return 0.0
    low, high = 0.0, 10 * sd + 1.0
    for _ in range(60):
        mid = (low + high) / 2
        if power(n, mid, sd) < target:
            low = mid
        else:
            high = mid
    return high
