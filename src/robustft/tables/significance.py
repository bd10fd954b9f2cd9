"""Statistics over seeds: mean and sample standard deviation, and the t-tests between methods.

Owns the numbers the tables compute from per-seed values; nothing here knows about runs,
files or papers (inputs are ``{seed: value}`` mappings).

Which t-test? AutoLoRa A.3 says only "t-tests between the three results" of each method (seeds
0, 6, 66); it names neither the variant nor the sidedness. We default to **Welch's
two-sample, two-sided t-test** (``scipy.stats.ttest_ind(equal_var=False)``), which does not
assume the two methods have equal seed-to-seed variance; ``"student"`` (pooled variance,
``equal_var=True``) and ``"paired"`` (``ttest_rel`` over the seeds both methods share, i.e.
treating the seed as a block) are options. The test used is recorded in every row.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as sps
from scipy.optimize import brentq

__all__ = [
    "CONSISTENCY_RULE",
    "TESTS",
    "check_test",
    "consistency_interval",
    "mean_and_std",
    "minimum_detectable_difference",
    "t_test",
]

#: name -> human description of the test (recorded in the tables and the report)
TESTS: dict[str, str] = {
    "welch": "Welch's two-sample t-test (unequal variances; scipy.stats.ttest_ind, "
    "equal_var=False), two-sided, over seeds",
    "student": "Student's two-sample t-test (pooled variance; scipy.stats.ttest_ind, "
    "equal_var=True), two-sided, over seeds",
    "paired": "paired t-test over the seeds both methods share (scipy.stats.ttest_rel), two-sided",
}


def check_test(test: str) -> None:
    """A clear error for a t-test name that is not one of :data:`TESTS`."""
    if test not in TESTS:
        raise ValueError(f"unknown t-test {test!r}; choose one of {sorted(TESTS)}")


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1, as the papers' ± over seeds); NaN for the
    mean of nothing and for the spread of fewer than two values."""
    mean = float(np.mean(values)) if len(values) else math.nan
    std = float(np.std(values, ddof=1)) if len(values) >= 2 else math.nan
    return mean, std


def t_test(
    ours: Mapping[int, float], baseline: Mapping[int, float], test: str = "welch"
) -> dict[str, Any]:
    """t-test of two seed→value mappings. Returns statistic, df, p_value, n, note.

    Fewer than two values on either side (or two common seeds for ``paired``), or zero
    variance on both sides (t undefined), give NaN with an explanatory note rather than an
    error: a study with one seed still renders.
    """
    check_test(test)
    out: dict[str, Any] = {
        "statistic": math.nan,
        "df": math.nan,
        "p_value": math.nan,
        "n_ours": len(ours),
        "n_baseline": len(baseline),
        "note": "",
    }
    if test == "paired":
        res = _paired(ours, baseline, out)
    else:
        res = _two_sample(ours, baseline, equal_var=(test == "student"), out=out)
    if res is not None:
        out.update(statistic=float(res.statistic), df=float(res.df), p_value=float(res.pvalue))
    out["note"] = out["note"].rstrip("; ")
    return out


def _paired(ours: Mapping[int, float], baseline: Mapping[int, float], out: dict[str, Any]):
    """``ttest_rel`` on the common seeds; None (with ``out["note"]`` saying why) if undefined."""
    common = sorted(set(ours) & set(baseline))
    out["n_ours"] = out["n_baseline"] = len(common)
    if set(ours) != set(baseline):
        out["note"] = f"paired on the {len(common)} common seeds; "
    if len(common) < 2:
        out["note"] += "fewer than 2 paired seeds: no t-test"
        return None
    a = np.array([ours[s] for s in common])
    b = np.array([baseline[s] for s in common])
    if np.ptp(a - b) == 0:
        out["note"] += "identical differences across seeds: t undefined"
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return sps.ttest_rel(a, b)


def _two_sample(
    ours: Mapping[int, float],
    baseline: Mapping[int, float],
    *,
    equal_var: bool,
    out: dict[str, Any],
):
    """``ttest_ind`` (Welch or Student); None (with ``out["note"]``) if undefined."""
    a = np.array(list(ours.values()), dtype=float)
    b = np.array(list(baseline.values()), dtype=float)
    if len(a) < 2 or len(b) < 2:
        out["note"] = f"fewer than 2 seeds (ours {len(a)}, baseline {len(b)}): no t-test"
        return None
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        out["note"] = "zero variance in both groups: t undefined"
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return sps.ttest_ind(a, b, equal_var=equal_var)


# ----------------------------------------------------------------------------- power


def minimum_detectable_difference(
    std_ours: float,
    n_ours: int,
    std_baseline: float,
    n_baseline: int,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
) -> float:
    """The smallest true difference of means Welch's two-sided test detects with ``power``
    at level ``alpha``, if the seed-to-seed spread is the observed one.

    With ``se = sqrt(s1²/n1 + s2²/n2)`` and the Welch–Satterthwaite ``df``, the test statistic
    under a true difference δ follows a noncentral t with noncentrality ``δ/se``; we solve
    ``P(|T| > t_{1-α/2, df}) = power`` for the noncentrality (scipy's ``nct``) and return
    ``δ = nc · se``. This is the textbook power analysis of the t-test (e.g. Cohen 1988,
    ch. 2) with the sample spread standing in for σ, so it is a rough guide at 2–3 seeds, not
    a guarantee. NaN when either group has fewer than two seeds or both spreads are zero.
    """
    if n_ours < 2 or n_baseline < 2:
        return math.nan
    v1, v2 = std_ours**2 / n_ours, std_baseline**2 / n_baseline
    if not (math.isfinite(v1) and math.isfinite(v2)) or v1 + v2 == 0:
        return math.nan
    se = math.sqrt(v1 + v2)
    df = (v1 + v2) ** 2 / (v1**2 / (n_ours - 1) + v2**2 / (n_baseline - 1))
    crit = sps.t.ppf(1 - alpha / 2, df)

    def shortfall(nc: float) -> float:
        # the far tail (T < -crit) is negligible for nc > 0; scipy returns NaN for it deep
        # in the tail, so it is counted as 0 there
        far = float(np.nan_to_num(sps.nct.cdf(-crit, df, nc)))
        return float(sps.nct.sf(crit, df, nc)) + far - power

    # power grows with nc from alpha (nc = 0) towards 1; bracket generously, then solve
    hi = crit + 10.0
    while shortfall(hi) < 0:
        hi *= 2
    return float(brentq(shortfall, 0.0, hi, xtol=1e-8)) * se


# ----------------------------------------------------------------------------- paper check

#: the smallest interval a reproduced accuracy gets (percentage points): rounding of printed
#: values and evaluation noise the seeds cannot show (one seed, or identical seeds)
ACCURACY_TOLERANCE = 1.0
#: relative tolerance of non-accuracy values (parameter counts, layer indices, seconds)
VALUE_TOLERANCE = 0.01

CONSISTENCY_RULE = (
    "✓ the paper's value lies within our interval, ✗ it does not. The interval is the mean "
    "± the largest of: the 95 % t-interval of the mean over seeds (t_{0.975, n−1} · s/√n, "
    f"n ≥ 2), the 95 % binomial error of one evaluation on the test examples used "
    f"(1.96 · √(p(1−p)/N)), and {ACCURACY_TOLERANCE:g} percentage point; for values that are "
    f"not accuracies (counts, layer indices) a relative tolerance of {VALUE_TOLERANCE:.0%}."
)


def consistency_interval(
    values: Sequence[float], n_examples: int | None = None, *, accuracy: bool = True
) -> float:
    """Half-width of the interval around our mean that :data:`CONSISTENCY_RULE` describes
    (NaN without values; for non-accuracies a relative width, applied by the caller)."""
    if not len(values):
        return math.nan
    mean, std = mean_and_std(values)
    if not accuracy:
        return VALUE_TOLERANCE * abs(mean)
    width = ACCURACY_TOLERANCE
    if len(values) >= 2 and math.isfinite(std):
        width = max(width, sps.t.ppf(0.975, len(values) - 1) * std / math.sqrt(len(values)))
    if n_examples:
        p = min(max(mean / 100.0, 0.0), 1.0)
        width = max(width, 100.0 * 1.96 * math.sqrt(p * (1 - p) / n_examples))
    return float(width)
