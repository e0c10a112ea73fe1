"""Confidence intervals and paired tests for evaluation results (pure functions, no scipy).

An evaluation scores every item once greedily (correct or not) and, with
``sampled_k > 0``, ``k`` times at temperature 1 (a fraction correct in
``{0, 1/k, ..., 1}``). Two checkpoints evaluated on the same items are compared
item by item, which removes the between-item variance that dominates the
interval of either accuracy alone. The formulas:

* **Wilson score interval** of a proportion (greedy accuracy), :func:`wilson_interval`.
* **Student t interval** of a mean over items (sampled accuracy),
  :func:`mean_interval`.
* **Exact McNemar test** on paired greedy correctness, :func:`mcnemar_exact`.
* **Paired t-test** on per-item sampled accuracy, :func:`paired_t_test`.

The t distribution is computed from the regularized incomplete beta function
(:func:`regularized_beta`, a continued fraction), so scipy (a dev-only
dependency) is not needed at run time; the tests check these against scipy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: The 0.975 quantile of the standard normal (two-sided 95%).
Z95 = 1.959963984540054

_EPS = 1e-15
_TINY = 1e-300
_MAX_ITER = 500


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default).

    With ``p = successes / n``::

        centre = (p + z^2 / (2n)) / (1 + z^2 / n)
        half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2))
        [centre - half, centre + half]

    Unlike the normal (Wald) interval it stays inside [0, 1] and is not
    degenerate at 0 or n successes. ``n = 0`` gives (0, 1): no information.
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denominator = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (divisor n - 1); needs two or more values."""
    n = len(values)
    mean = math.fsum(values) / n
    variance = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(variance)


def mean_interval(
    values: Sequence[float], level: float = 0.95, bounds: tuple[float, float] | None = (0.0, 1.0)
) -> tuple[float, float] | None:
    """Student t interval of the mean of ``values`` (one value per item).

    ``mean +- t_{(1 + level)/2, n-1} * s / sqrt(n)``, with ``s`` the sample
    standard deviation. Sampled accuracy is a mean over items of per-item
    fractions correct, so this is its interval over items (the k samples of
    one item are not independent draws of the benchmark). Clipped to
    ``bounds`` (default [0, 1]); None with fewer than two values.
    """
    if len(values) < 2:
        return None
    mean, sd = _mean_sd(values)
    half = student_t_quantile((1.0 + level) / 2.0, len(values) - 1) * sd / math.sqrt(len(values))
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(bounds[0], low), min(bounds[1], high)
    return low, high


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pair counts.

    ``b``: items only the first model gets right; ``c``: items only the
    second gets right (concordant items carry no information). Under the null
    of equal accuracy each of the ``n = b + c`` discordant items is equally
    likely to go either way, so ``min(b, c) ~ Binomial(n, 1/2)`` and::

        p = min(1, 2 * sum_{i=0}^{min(b, c)} C(n, i) / 2^n)

    e.g. b=0, c=5: 2/32 = 0.0625; b=1, c=9: 2 * 11/1024 = 0.021484375. No
    discordant pairs gives p = 1. Exact integer arithmetic (one rounding).
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, tail / 2 ** (n - 1))


def paired_t_test(first: Sequence[float], second: Sequence[float]) -> float | None:
    """Two-sided paired t-test p-value of ``mean(first - second) = 0``.

    With per-item differences ``d_i = first_i - second_i`` (n items)::

        t = mean(d) / (s_d / sqrt(n)),   df = n - 1
        p = P(|T_df| >= |t|) = I_{df / (df + t^2)}(df / 2, 1 / 2)

    (``I`` the regularized incomplete beta function). Per-item sampled
    accuracies are bounded and discrete, but with hundreds of items the mean
    difference is close to normal, which is what the test needs. When every
    difference is the same (``s_d = 0``) p is 1 if they are all zero, else 0.
    None with fewer than two pairs.
    """
    if len(first) != len(second):
        raise ValueError(f"paired samples differ in length: {len(first)} vs {len(second)}")
    if len(first) < 2:
        return None
    diffs = [a - b for a, b in zip(first, second, strict=True)]
    mean, sd = _mean_sd(diffs)
    if sd <= _EPS * max(1.0, abs(mean)):
        return 1.0 if abs(mean) <= _EPS else 0.0
    t = mean / (sd / math.sqrt(len(diffs)))
    return student_t_two_sided(t, len(diffs) - 1)


def student_t_two_sided(t: float, df: float) -> float:
    """``P(|T| >= |t|)`` for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    return min(1.0, regularized_beta(df / (df + t * t), df / 2.0, 0.5))


def student_t_cdf(t: float, df: float) -> float:
    """``P(T <= t)`` for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * student_t_two_sided(t, df)
    return 1.0 - tail if t > 0 else tail


def student_t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (bisection on :func:`student_t_cdf`, ~1e-12)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"quantile level must be in (0, 1), got {p}")
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < p:  # df >= 1 keeps this finite for p < 1
        low, high = high, 2.0 * high
    for _ in range(200):
        middle = 0.5 * (low + high)
        if student_t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low <= 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


def regularized_beta(x: float, a: float, b: float) -> float:
    """Regularized incomplete beta ``I_x(a, b)`` for ``a, b > 0``, ``0 <= x <= 1``.

    ``I_x(a, b) = x^a (1 - x)^b / (a B(a, b)) * 1 / (1 + d_1 / (1 + d_2 / (1 + ...)))``
    with ``d_{2m+1} = -(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1))`` and
    ``d_{2m} = m (b - m) x / ((a + 2m - 1)(a + 2m))``, evaluated by the
    modified Lentz method; for ``x > (a + 1) / (a + b + 2)`` the symmetry
    ``I_x(a, b) = 1 - I_{1-x}(b, a)`` keeps the fraction converging fast.
    """
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - regularized_beta(1.0 - x, b, a)
    log_front = (
        a * math.log(x)
        + b * math.log1p(-x)
        - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
        - math.log(a)
    )
    return math.exp(log_front) * _beta_fraction(x, a, b)


def _beta_fraction(x: float, a: float, b: float) -> float:
    """The continued fraction of :func:`regularized_beta` (modified Lentz)."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    result = d
    for m in range(1, _MAX_ITER + 1):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            result *= c * d
        if abs(c * d - 1.0) < _EPS:
            break
    return result
