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

__all__ = ["TESTS", "check_test", "mean_and_std", "t_test"]

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
