"""Paired statistics of a comparison: a candidate model against the base, seed by seed.

In `compare` a seed fixes a trial's training rows, their order and a new head's initialisation for every
model alike, so the test scores of two models pair by seed; the differences (candidate - base) are what
is tested, not the two means apart. Pure functions over {seed: score}.

    stats = paired_difference({0: 0.61, 1: 0.58, 2: 0.66}, {0: 0.55, 1: 0.57, 2: 0.60})
    stats["mean"], stats["ci"], stats["p_value"], stats["wins"]
"""
from __future__ import annotations

import numpy as np

__all__ = ["paired_difference", "BOOTSTRAP_FROM", "CONFIDENCE"]

CONFIDENCE = 0.95
BOOTSTRAP_FROM = 10          # seeds from which a bootstrap interval is added to the t-interval
BOOTSTRAP_RESAMPLES = 9999
SAME = 1e-9                  # differences closer than this are the same difference (float rounding)


def paired_difference(candidate: dict[int, float], base: dict[int, float], confidence: float = CONFIDENCE,
                      bootstrap_from: int = BOOTSTRAP_FROM) -> dict:
    """Over the seeds both have: the mean difference candidate - base and its standard deviation; its
    t-interval (scipy, n - 1 degrees of freedom) and, from `bootstrap_from` seeds, a percentile bootstrap
    interval (scipy, fixed seed); the paired t-test's two-sided p-value (scipy.stats.ttest_rel); wins, ties
    and losses over seeds (a tie: closer than SAME). Interval and p are None below 2 seeds; with every
    difference the same the interval is that difference and p is 1 where it is zero, else None (the
    t-test is undefined without spread; wins/ties/losses still say it)."""
    seeds = sorted(set(candidate) & set(base))
    diff = np.array([candidate[s] - base[s] for s in seeds], dtype=float)
    n = len(seeds)
    out = {"seeds": seeds, "n": n, "mean": float(diff.mean()) if n else None,
           "std": float(diff.std(ddof=1)) if n > 1 else None, "confidence": confidence,
           "ci": None, "bootstrap_ci": None, "p_value": None, "test": "paired t-test (scipy.stats.ttest_rel)",
           "wins": int((diff > SAME).sum()), "ties": int((np.abs(diff) <= SAME).sum()),
           "losses": int((diff < -SAME).sum())}
    if n < 2:
        return out
    if np.ptp(diff) <= SAME * max(1.0, float(np.abs(diff).max())):
        # no spread (k/N scores differ by float rounding at most): scipy's t is undefined, so no p; the
        # interval is the difference itself, and all zero is no difference at all (p 1)
        return {**out, "ci": [out["mean"]] * 2, "p_value": 1.0 if np.abs(diff).max() <= SAME else None}
    from scipy import stats

    test = stats.ttest_rel([candidate[s] for s in seeds], [base[s] for s in seeds])
    interval = test.confidence_interval(confidence_level=confidence)
    out.update(ci=[float(interval.low), float(interval.high)], p_value=float(test.pvalue))
    if n >= bootstrap_from:
        boot = stats.bootstrap((diff,), np.mean, confidence_level=confidence, n_resamples=BOOTSTRAP_RESAMPLES,
                               method="percentile", random_state=0)
        out["bootstrap_ci"] = [float(boot.confidence_interval.low), float(boot.confidence_interval.high)]
    return out
