"""Survey sampling for a verified noise rate: strata, allocation, draws, estimators, intervals.

A person checks a probability sample of the labels; the share of wrong labels in the whole
dataset is then estimated design-unbiasedly, whatever the encoder's quality: the audit's scores
only decide where to look harder (stratification), never what the answer is. Notation: N
samples in H strata of sizes N_h, weights W_h = N_h / N; n_h verified in stratum h, drawn by
simple random sampling without replacement, so every verified sample of stratum h has
inclusion probability pi = n_h / N_h; y = 1 where the verified label differs from the given one.
References: Cochran, "Sampling Techniques" (3rd ed., 1977), ch. 5 (stratified estimator,
Neyman allocation), 5A.7 (cumulative sqrt f stratum boundaries), 7 (difference and regression
estimators); Korn & Graubard, "Confidence intervals for proportions with small expected number
of positive counts estimated from survey data", Survey Methodology 24 (1998).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dqaudit.errors import DqauditError

ESTIMATORS = ("stratified", "difference", "regression")
DEFAULT_ESTIMATOR = "stratified"  # measured in benchmarks/clr_verified.py (benchmarks/RESULTS.md)
N_STRATA = 5
# share of the sample allocated in proportion to stratum size, so that no stratum (the many
# low-score samples above all) is starved; the rest goes by Neyman allocation
UNIFORM_SHARE = 0.3
MIN_PER_STRATUM = 2  # a stratum's variance needs two verified samples
CONFIDENCE = 0.95


def strata_cuts(scores: np.ndarray, *, n_strata: int = N_STRATA, bins: int = 200,
                min_size: int = 10) -> np.ndarray:
    """(H - 1,) increasing cut points on ``scores`` (N,) in [0, 1]: the cumulative sqrt(f) rule
    (Dalenius & Hodges 1959; Cochran 5A.7), which makes strata of equal sum of sqrt(frequency),
    close to optimal for Neyman allocation. Strata holding fewer than ``min_size`` samples are
    merged into their neighbour, so H can come out smaller than ``n_strata``."""
    s = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    freq, edges = np.histogram(s, bins=bins, range=(0.0, 1.0))
    cum = np.cumsum(np.sqrt(freq))
    if cum[-1] <= 0 or n_strata < 2:
        return np.array([])
    goals = cum[-1] * np.arange(1, n_strata) / n_strata
    cuts = np.unique(edges[1:][np.searchsorted(cum, goals)])
    cuts = cuts[(cuts > 0) & (cuts < 1)]
    # merge strata that are too small to verify (fewer than min_size samples)
    while len(cuts):
        sizes = np.bincount(np.searchsorted(cuts, s, side="right"), minlength=len(cuts) + 1)
        small = np.flatnonzero(sizes < min_size)
        if not len(small):
            break
        h = int(small[0])
        cuts = np.delete(cuts, min(h, len(cuts) - 1))
    return cuts


def assign_strata(scores: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """(N,) stratum index 0..H-1 of every score (stratum h: cuts[h-1] <= score < cuts[h])."""
    return np.searchsorted(np.asarray(cuts, dtype=np.float64),
                           np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0),
                           side="right").astype(np.int64)


def stratum_model_sd(scores: np.ndarray, strata: np.ndarray, n_strata: int) -> np.ndarray:
    """(H,) predicted standard deviation of y in each stratum, sqrt(Q_h (1 - Q_h)) with Q_h
    the mean calibrated error probability of its samples (y is Bernoulli(q_i) under the
    model, and the variance of a mixture of Bernoullis is that of their mean)."""
    q = _stratum_rates(scores, strata, n_strata)
    return np.sqrt(np.clip(q * (1 - q), 1e-6, None))


def _stratum_rates(scores: np.ndarray, strata: np.ndarray, n_strata: int) -> np.ndarray:
    """(H,) mean of ``scores`` in each stratum (0 for an empty one)."""
    sums = np.bincount(strata, weights=scores, minlength=n_strata)
    sizes = np.bincount(strata, minlength=n_strata)
    return np.divide(sums, sizes, out=np.zeros(n_strata), where=sizes > 0)


def allocate(sizes: np.ndarray, sd: np.ndarray, n: int, *, uniform_share: float = UNIFORM_SHARE,
             minimum: int = MIN_PER_STRATUM) -> np.ndarray:
    """(H,) integer sample sizes n_h summing to ``n`` (at most N_h each).

    n_h = n [u N_h / N + (1 - u) N_h S_h / sum_k N_k S_k] (Neyman allocation, Cochran 5.9,
    mixed with a proportional share u), rounded by largest remainder, at least ``minimum``
    where the stratum has that many, capped at N_h with the excess passed on to the others.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if n > sizes.sum():
        raise DqauditError(f"a sample of {n} is larger than the {int(sizes.sum())} samples of "
                           "the audit")
    neyman = sizes * np.asarray(sd, dtype=np.float64)
    share = uniform_share * sizes / sizes.sum() + (1 - uniform_share) * (
        neyman / neyman.sum() if neyman.sum() > 0 else sizes / sizes.sum())
    floor = np.minimum(sizes, minimum) if n >= minimum * len(sizes) else np.zeros_like(sizes)
    return _fill(share, n, floor=floor, cap=sizes)


def _fill(share: np.ndarray, n: int, *, floor: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """Integers between ``floor`` and ``cap`` summing to ``n``, as close as possible to
    ``n * share`` (largest remainder, repeated while caps bind)."""
    out = floor.astype(np.int64).copy()
    for _ in range(len(share) + 1):
        left = n - out.sum()
        room = cap - out
        if left <= 0:
            break
        w = np.where(room > 0, share, 0.0)
        if w.sum() <= 0:
            w = (room > 0).astype(float)
        want = np.minimum(left * w / w.sum(), room)
        add = np.floor(want).astype(np.int64)
        rest = left - add.sum()
        order = np.argsort(-(want - add), kind="stable")
        for h in order:
            if rest <= 0:
                break
            if add[h] < room[h]:
                add[h] += 1
                rest -= 1
        out += add
    return out


def draw(strata: np.ndarray, allocation: np.ndarray, *, seed: int,
         already: np.ndarray | None = None) -> np.ndarray:
    """(N,) bool: a stratified simple random sample with ``allocation`` (H,) per stratum.

    ``already`` (N,) bool marks an earlier draw of the same design: it is kept, and each
    stratum is topped up to its allocation with a simple random sample of its undrawn samples,
    which makes the union again a simple random sample of the larger size in every stratum (a
    stratum already above its allocation keeps what it has). Seeded per stratum and per size,
    so the same call gives the same sample.
    """
    chosen = np.zeros(len(strata), dtype=bool) if already is None else already.copy()
    for h, n_h in enumerate(allocation):
        members = np.flatnonzero(strata == h)
        have = chosen[members]
        need = int(n_h) - int(have.sum())
        if need <= 0:
            continue
        rng = np.random.default_rng([seed, h, int(n_h)])
        pool = members[~have]
        chosen[rng.choice(pool, size=min(need, len(pool)), replace=False)] = True
    return chosen


def grow_allocation(sizes: np.ndarray, sd: np.ndarray, current: np.ndarray, n: int,
                    **kwargs) -> np.ndarray:
    """(H,) allocation of a sample grown to ``n`` from ``current`` (H,): the allocation of
    ``n`` where it is above ``current``; the samples a stratum already holds beyond it stay,
    and the rest of the new samples go to the strata furthest below their share."""
    n = max(int(n), int(current.sum()))
    target = allocate(sizes, sd, n, **kwargs)
    deficit = np.maximum(target - current, 0).astype(float)
    extra = n - current.sum()
    if extra <= 0:
        return current.copy()
    share = deficit if deficit.sum() > 0 else sizes.astype(float)
    return _fill(share / share.sum(), n, floor=current, cap=sizes)


@dataclass(frozen=True)
class Estimate:
    """A verified estimate of the share of wrong labels with its interval."""

    estimate: float
    ci_low: float
    ci_high: float
    std_error: float
    n_verified: int
    n_errors_found: int
    estimator: str
    interval: str

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2


def _stratum_means(values: np.ndarray, strata: np.ndarray, n_strata: int):
    counts = np.bincount(strata, minlength=n_strata).astype(float)
    sums = np.bincount(strata, weights=values, minlength=n_strata)
    means = np.divide(sums, counts, out=np.zeros(n_strata), where=counts > 0)
    dev = values - means[strata]
    ss = np.bincount(strata, weights=dev ** 2, minlength=n_strata)
    var = np.divide(ss, counts - 1, out=np.zeros(n_strata), where=counts > 1)
    return means, var, counts


def point_estimate(y: np.ndarray, sample_strata: np.ndarray, sizes: np.ndarray, *,
                   estimator: str = DEFAULT_ESTIMATOR, q_sample: np.ndarray | None = None,
                   q_means: np.ndarray | None = None) -> tuple[float, float]:
    """(estimate, variance) of the population share of y = 1.

    ``y`` (n,) 0/1 outcomes of the verified samples and ``sample_strata`` (n,) their strata;
    ``sizes`` (H,) stratum sizes N_h. With W_h = N_h / N, f_h = n_h / N_h:
    ``stratified``  sum_h W_h ybar_h, var = sum_h W_h^2 (1 - f_h) s_h^2 / n_h (Cochran 5.1-5.3);
    ``difference``  sum_h W_h (Qbar_h + mean_h(y - q)), the model's stratum mean ``q_means``
                    (H,) corrected by the verified residuals; variance as above on y - q
                    (Cochran 7.2; the form of prediction-powered inference);
    ``regression``  sum_h W_h (ybar_h + b (Qbar_h - qbar_h)) with b the pooled within-stratum
                    slope of y on q (Cochran 7.9, combined over strata), variance on the
                    regression residuals.
    ``q_sample`` (n,): the calibrated error probability of each verified sample.
    """
    if estimator not in ESTIMATORS:
        raise DqauditError(f"unknown estimator {estimator!r}; valid: {', '.join(ESTIMATORS)}")
    h_count = len(sizes)
    w = sizes / sizes.sum()
    y = np.asarray(y, dtype=np.float64)
    if estimator == "stratified":
        resid, offset = y, np.zeros(h_count)
    else:
        if q_sample is None or q_means is None:
            raise DqauditError(f"the {estimator} estimator needs the model's probabilities")
        if estimator == "difference":
            b = 1.0
        else:
            qm, _, _ = _stratum_means(q_sample, sample_strata, h_count)
            ym, _, _ = _stratum_means(y, sample_strata, h_count)
            dq = q_sample - qm[sample_strata]
            den = float((dq ** 2).sum())
            b = float((dq * (y - ym[sample_strata])).sum() / den) if den > 0 else 0.0
        resid, offset = y - b * q_sample, b * np.asarray(q_means, dtype=np.float64)
    means, var, n_h = _stratum_means(resid, sample_strata, h_count)
    if (n_h == 0).any():
        raise DqauditError("every stratum needs at least one verified sample")
    if estimator == "stratified":
        # a stratum whose few verified samples happen to agree (all right, or all wrong) would
        # claim zero variance: use the Bernoulli variance of its Jeffreys-smoothed rate,
        # (x + 1/2) / (n + 1), as the floor of the stratum's variance
        smoothed = (means * n_h + 0.5) / (n_h + 1)
        var = np.maximum(var, smoothed * (1 - smoothed))
    else:
        # the same floor for a model-assisted estimator, on the rate at which the model
        # misses the outcome (|y - b q| > 1/2): a stratum where the model happened to be right
        # on every verified sample would otherwise claim zero variance and a zero-width interval
        misses = np.bincount(sample_strata, weights=(np.abs(resid) > 0.5).astype(float),
                             minlength=h_count)
        smoothed = (misses + 0.5) / (n_h + 1)
        var = np.maximum(var, smoothed * (1 - smoothed))
    f = n_h / sizes
    estimate = float((w * (offset + means)).sum())
    variance = float((w ** 2 * (1 - f) * var / n_h).sum())
    return estimate, variance


def zero_error_upper_bound(sizes: np.ndarray, n_h: np.ndarray, *,
                           alpha: float = 1 - CONFIDENCE) -> float:
    """Exact one-sided upper bound on the share of wrong labels when no verified sample was
    wrong: the largest theta = sum_h W_h theta_h for which some stratum rates theta_h still
    give P(no error seen) = prod_h (1 - theta_h)^n_h >= alpha. The least detectable way to hide
    errors is solved in closed form per Lagrange multiplier (1 - theta_h = n_h / (lambda W_h),
    water-filling), then theta by bisection. With proportional allocation it is the binomial
    bound 1 - alpha^(1/n) (about 3/n, the "rule of three"); any stratum sampled below its share
    raises it. The lower end is 0, so the interval [0, bound] covers with 1 - alpha.
    """
    w = sizes / sizes.sum()
    n_h = np.asarray(n_h, dtype=np.float64)

    def best_log_p(theta: float) -> float:
        # maximise sum n_h log(1 - t_h) s.t. sum w_h t_h = theta, 0 <= t_h <= 1
        lo, hi = 1e-12, 1e12
        for _ in range(80):
            lam = np.sqrt(lo * hi)
            t = np.clip(1 - n_h / (lam * w), 0.0, 1.0)
            if (w * t).sum() > theta:
                hi = lam
            else:
                lo = lam
        t = np.clip(1 - n_h / (lo * w), 0.0, 1.0 - 1e-15)
        return float((n_h * np.log1p(-t)).sum())

    lo, hi = 0.0, 1.0
    for _ in range(30):  # 1e-9 of a rate
        mid = (lo + hi) / 2
        if best_log_p(mid) >= np.log(alpha):
            lo = mid
        else:
            hi = mid
    return lo


def interval(estimate: float, variance: float, *, n: int, n_errors: int, n_strata: int,
             sizes: np.ndarray, n_h: np.ndarray, confidence: float = CONFIDENCE
             ) -> tuple[float, float, str]:
    """(low, high, method) of the share of wrong labels.

    No error found: [0, ``zero_error_upper_bound``] (exact). Otherwise the Korn-Graubard
    interval: Clopper-Pearson at the effective sample size n* = p (1 - p) / var (not capped at
    n: a good stratification is what makes n* exceed n; the stratum variances are floored in
    ``point_estimate`` instead), scaled by (z / t_df)^2 with df = n - H, and x* = n* p:
    exact-binomial shaped, so it never reaches below 0 or above 1 and stays honest at small
    counts, where a normal interval fails.
    """
    from scipy import stats  # heavy: loaded on first use
    alpha = 1 - confidence
    if n_errors == 0:
        return 0.0, zero_error_upper_bound(sizes, n_h, alpha=alpha), "exact zero-error bound"
    p = float(np.clip(estimate, 0.0, 1.0))
    df = max(n - n_strata, 1)
    z, t = stats.norm.ppf(1 - alpha / 2), stats.t.ppf(1 - alpha / 2, df)
    n_eff = n if variance <= 0 or p in (0.0, 1.0) else p * (1 - p) / variance
    n_eff = max(n_eff * (z / t) ** 2, 1.0)
    x = n_eff * p
    low = 0.0 if x <= 0 else float(stats.beta.ppf(alpha / 2, x, n_eff - x + 1))
    high = 1.0 if x >= n_eff else float(stats.beta.ppf(1 - alpha / 2, x + 1, n_eff - x))
    return low, high, "Korn-Graubard (Clopper-Pearson at the effective sample size)"


def estimate_rate(y: np.ndarray, sample_strata: np.ndarray, sizes: np.ndarray, *,
                  estimator: str = DEFAULT_ESTIMATOR, q_sample: np.ndarray | None = None,
                  q_means: np.ndarray | None = None, confidence: float = CONFIDENCE
                  ) -> Estimate:
    """The verified estimate and its interval (``point_estimate`` then ``interval``)."""
    y = np.asarray(y)
    est, var = point_estimate(y, sample_strata, sizes, estimator=estimator, q_sample=q_sample,
                              q_means=q_means)
    n_h = np.bincount(sample_strata, minlength=len(sizes))
    low, high, how = interval(est, var, n=len(y), n_errors=int(y.sum()),
                              n_strata=len(sizes), sizes=sizes, n_h=n_h,
                              confidence=confidence)
    est = float(np.clip(est, low, high))
    return Estimate(estimate=est, ci_low=low, ci_high=high, std_error=float(np.sqrt(var)),
                    n_verified=int(len(y)), n_errors_found=int(y.sum()), estimator=estimator,
                    interval=how)


def predicted_half_width(scores: np.ndarray, strata: np.ndarray, n_strata: int, n: int, *,
                         confidence: float = CONFIDENCE, **kwargs) -> float:
    """Half-width of the normal interval a stratified sample of ``n`` is expected to reach
    under the model (y ~ Bernoulli(q)): z sqrt(sum_h W_h^2 (1 - f_h) S_h^2 / n_h), with S_h^2
    floored as the estimator floors it."""
    from scipy import stats  # heavy: loaded on first use
    sizes = np.bincount(strata, minlength=n_strata)
    sd = stratum_model_sd(scores, strata, n_strata)
    n_h = allocate(sizes, sd, n, **kwargs)
    w = sizes / sizes.sum()
    ok = n_h > 0
    # the variance the estimator will use: each stratum's floored at the Bernoulli variance
    # of its Jeffreys-smoothed rate, as in ``point_estimate``
    q_h = _stratum_rates(scores, strata, n_strata)
    smoothed = (n_h * q_h + 0.5) / (n_h + 1)
    var_h = np.maximum(sd ** 2, smoothed * (1 - smoothed))
    var = (w[ok] ** 2 * (1 - n_h[ok] / sizes[ok]) * var_h[ok] / n_h[ok]).sum()
    return float(stats.norm.ppf(1 - (1 - confidence) / 2) * np.sqrt(var))


def sample_size_for(half_width: float, scores: np.ndarray, strata: np.ndarray, n_strata: int,
                    **kwargs) -> int:
    """The smallest n whose ``predicted_half_width`` is at most ``half_width`` (at most N)."""
    n_all = len(scores)
    lo, hi = MIN_PER_STRATUM * n_strata, n_all
    if predicted_half_width(scores, strata, n_strata, lo, **kwargs) <= half_width:
        return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if predicted_half_width(scores, strata, n_strata, mid, **kwargs) <= half_width:
            hi = mid
        else:
            lo = mid
    return hi


def verification_size(scores: np.ndarray, half_width: float) -> int:
    """Verified labels a new stratified sample needs for a 95% half-width of ``half_width``,
    predicted from the calibrated ``scores`` (N,) of the audit (strata as ``strata_cuts``)."""
    if len(scores) == 0:
        return 0
    strata = assign_strata(scores, strata_cuts(scores))
    return sample_size_for(half_width, scores, strata, int(strata.max()) + 1)
