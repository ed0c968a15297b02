"""The statistics behind the results table: confidence intervals, significance tests, ranks.

A table cell holds the transfer metric of a handful of seeds (typically 2 to 5), so every choice here
is one that stays valid for so few values:

- :func:`t_half_width` / :func:`t_interval`: the 95 % Student t-interval of the mean over seeds,
  ``mean ± t_{0.975, n-1} · s / √n`` (no interval for one seed: the spread is unknown).
- :func:`welch`: Welch's unequal-variance t-test of two cells' seeds. It does not need both cells
  to have the same seeds (a paired test would) nor equal spreads (Student's test would), and its
  Welch–Satterthwaite degrees of freedom keep it honest for n = 2 or 3.
- :func:`holm`: the Holm–Bonferroni step-down adjustment, so "significant" holds for the whole
  table's family of tests at once, not for each test alone.
- :func:`descending_ranks`: rank 1 = the highest value (every metric the runner reports is
  higher-is-better: accuracy, AUROC, Pearson / Spearman / Matthews × 100), ties share the average rank.

All are pure functions of their inputs; NaN means "not defined" (too few seeds, no variance, not run).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from scipy import stats

#: Coverage of the confidence intervals shown in the table.
CONFIDENCE = 0.95
#: Family-wise error rate at which a Holm-adjusted p-value is called significant.
ALPHA = 0.05
#: The test's name as written in the table's notes and its CSV.
TEST_NAME = "welch_t"

NAN = float("nan")


def t_half_width(std: float, n: float, confidence: float = CONFIDENCE) -> float:
    """Half-width ``t_{(1+confidence)/2, n-1} · std / √n`` of the t-interval of a mean of ``n`` values with
    sample standard deviation ``std`` (ddof 1); NaN for fewer than 2 values or an unknown std."""
    if n is None or math.isnan(float(n)) or int(n) < 2 or std is None or math.isnan(float(std)):
        return NAN
    n = int(n)
    return float(stats.t.ppf((1 + confidence) / 2, n - 1) * float(std) / math.sqrt(n))


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The ``confidence`` t-interval ``(low, high)`` of the mean of ``values``; ``(NaN, NaN)`` for fewer than 2."""
    n = len(values)
    if n < 2:
        return NAN, NAN
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_half_width(std, n, confidence)
    return mean - half, mean + half


class Welch(NamedTuple):
    """Welch's t-test of ``mean(a) - mean(b)``: statistic, Welch–Satterthwaite degrees of freedom, two-sided p."""

    t: float
    df: float
    p: float


def welch(a: Sequence[float], b: Sequence[float]) -> Welch:
    """Welch's two-sided t-test of two samples (unequal variances).

    ``t = (ā - b̄) / √(s_a²/n_a + s_b²/n_b)``, ``df = (s_a²/n_a + s_b²/n_b)² / ((s_a²/n_a)²/(n_a-1) +
    (s_b²/n_b)²/(n_b-1))``, ``p = 2 · P(T_df > |t|)`` (what ``scipy.stats.ttest_ind(a, b, equal_var=False)``
    computes). All NaN when a side has fewer than 2 values or both sides have no spread (the test is
    undefined: identical seeds say nothing about the noise)."""
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return Welch(NAN, NAN, NAN)
    mean_a, mean_b = sum(a) / na, sum(b) / nb
    va = sum((x - mean_a) ** 2 for x in a) / (na - 1) / na
    vb = sum((x - mean_b) ** 2 for x in b) / (nb - 1) / nb
    if va + vb == 0:
        return Welch(NAN, NAN, NAN)
    t = (mean_a - mean_b) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    return Welch(t, df, float(2 * stats.t.sf(abs(t), df)))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order; NaN entries stay NaN and are not counted.

    With the m defined p-values sorted ascending, ``p̃_(i) = max_{j ≤ i} min(1, (m - j + 1) · p_(j))``;
    rejecting every hypothesis with ``p̃ < α`` controls the family-wise error rate at α."""
    defined = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    adjusted = [NAN] * len(pvalues)
    running = 0.0
    for j, (p, i) in enumerate(defined):
        running = max(running, min(1.0, (len(defined) - j) * p))
        adjusted[i] = running
    return adjusted


def descending_ranks(values: Sequence[float]) -> list[float]:
    """Ranks of ``values``, 1 = the highest; ties get the average of the ranks they span; NaN stays NaN
    (not run: not ranked) and the others are ranked among themselves."""
    defined = [(i, v) for i, v in enumerate(values) if not math.isnan(v)]
    ranks = [NAN] * len(values)
    if defined:
        for (i, _), rank in zip(defined, stats.rankdata([-v for _, v in defined], method="average")):
            ranks[i] = float(rank)
    return ranks


def direction(difference: float, adjusted_p: float, alpha: float = ALPHA) -> str:
    """``better`` / ``worse`` when the (Holm-adjusted) p is below ``alpha`` (by the sign of the difference),
    ``n.s.`` when it is not, ``""`` when nothing was tested (NaN p)."""
    if math.isnan(adjusted_p):
        return ""
    if adjusted_p < alpha and difference != 0:
        return "better" if difference > 0 else "worse"
    return "n.s."
