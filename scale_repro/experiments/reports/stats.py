"""The statistics every report shares: seeds paired by their number, a two-sided t interval
on the mean difference, and mean and sample standard deviation.

A comparison of two configurations is the mean of treatment minus control over the seeds both
ran; each seed's difference removes what the seed alone decides (data order, initialisation),
so the interval is much narrower than one on two independent means.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


def signed(fraction: float, scale: float = 100.0) -> str:
    """A difference of two rates in percentage points (``scale`` 1: as it is), signed; never "-0.0"."""
    text = f"{scale * fraction:+.1f}"
    return "+0.0" if text == "-0.0" else text


@dataclass(frozen=True)
class PairedInterval:
    """Mean of treatment minus control over the seeds both ran, with a two-sided t interval."""

    n: int
    mean: float
    sd: float | None
    low: float | None
    high: float | None
    differences: tuple[float, ...]

    def text(self, scale: float = 100.0) -> str:
        if self.low is None:
            return f"{signed(self.mean, scale)} (n={self.n}, no interval)"
        return f"{signed(self.mean, scale)} [{signed(self.low, scale)}, {signed(self.high, scale)}]"

    @property
    def half_width(self) -> float | None:
        return None if self.low is None else (self.high - self.low) / 2

    def verdict(self) -> str:
        if self.low is None:
            return "too few seeds for an interval"
        if self.low > 0:
            return "higher (interval above 0)"
        if self.high < 0:
            return "lower (interval below 0)"
        return "no clear difference (interval includes 0)"


def paired_interval(
    treatment: dict[int, float], control: dict[int, float], confidence: float = 0.95
) -> PairedInterval | None:
    """Paired by seed: only seeds present in both count. None when no seed is shared."""
    from scipy.stats import t

    seeds = sorted(set(treatment) & set(control))
    if not seeds:
        return None
    differences = tuple(treatment[s] - control[s] for s in seeds)
    mean = statistics.fmean(differences)
    if len(seeds) < 2:
        return PairedInterval(1, mean, None, None, None, differences)
    sd = statistics.stdev(differences)
    half = float(t.ppf(0.5 + confidence / 2, len(seeds) - 1)) * sd / math.sqrt(len(seeds))
    return PairedInterval(len(seeds), mean, sd, mean - half, mean + half, differences)


def mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)
