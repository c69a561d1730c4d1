"""A model's accuracy when the labels it is scored against are noisy: functions of arrays.

``true_class_posterior`` (the audit's posterior over the true class), ``accuracy_range`` (what
any placement of a bounded share of wrong labels allows), ``verified_accuracy`` and
``paired_difference`` (design-based estimates from a verified stratified sample, the survey
module's estimators) and ``recall_table`` (per-class recall with its truth weights).
``workflows.evaluate`` applies them to an audit.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from dqaudit.estimates import survey


def true_class_posterior(*, given: np.ndarray, error_probability: np.ndarray,
                         probs: np.ndarray) -> np.ndarray:
    """(N, C) probability of each true class given what the audit knows.

    ``given`` (N,) class indices, ``error_probability`` (N,) the calibrated P(given label is
    wrong) = q, ``probs`` (N, C) the out-of-sample posteriors p. The given class keeps 1 - q;
    q is spread over the other classes as p spreads them: T_ic = q_i p_ic / (1 - p_i,given).
    """
    n, c = probs.shape
    rows = np.arange(n)
    q = np.clip(np.asarray(error_probability, dtype=np.float64), 0.0, 1.0)
    p = np.asarray(probs, dtype=np.float64).copy()
    p[rows, given] = 0.0
    other = p.sum(axis=1, keepdims=True)
    spread = np.divide(p, other, out=np.full_like(p, 1.0 / max(c - 1, 1)), where=other > 0)
    t = q[:, None] * spread
    t[rows, given] = 1.0 - q
    return t


def accuracy_range(*, agreement: float, noise_high: float) -> tuple[float, float]:
    """The true accuracy's range when at most ``noise_high`` of the labels are wrong.

    ``agreement``: the share of predictions equal to the given labels. A wrong label under an
    agreeing prediction makes a hit a miss; under a disagreeing one it can turn a miss into a
    hit. With the errors placed as badly, then as well, as possible:
    [a - min(eta, a), a + min(eta, 1 - a)]. No assumption on where the errors are.
    """
    eta = float(np.clip(noise_high, 0.0, 1.0))
    return agreement - min(eta, agreement), agreement + min(eta, 1.0 - agreement)


def verified_accuracy(*, correct: np.ndarray, sample_strata: np.ndarray, sizes: np.ndarray,
                      proxy_sample: np.ndarray, proxy_means: np.ndarray,
                      estimator: str) -> survey.Estimate:
    """Accuracy on a split from verified samples: ``correct`` (n,) 1 where the prediction equals
    the verified label, in strata ``sample_strata`` of sizes ``sizes`` (H,); ``proxy_sample``
    (n,) and ``proxy_means`` (H,) the posterior probability that the prediction is right, per
    verified sample and per stratum of the split. ``survey.estimate_rate`` (difference:
    sum_h W_h (Fbar_h + mean_h(z - f)); Korn-Graubard interval)."""
    return survey.estimate_rate(correct, sample_strata, sizes, estimator=estimator,
                                q_sample=proxy_sample, q_means=proxy_means)


def paired_difference(*, diff: np.ndarray, sample_strata: np.ndarray, sizes: np.ndarray,
                      proxy_sample: np.ndarray, proxy_means: np.ndarray, estimator: str,
                      confidence: float = survey.CONFIDENCE) -> tuple[float, float, float]:
    """(estimate, low, high) of accuracy(A) - accuracy(B) on the same verified samples:
    ``diff`` (n,) = z_A - z_B in {-1, 0, 1}, the proxy f_A - f_B; t interval with n - H
    degrees of freedom on the stratified variance."""
    est, var = survey.point_estimate(diff, sample_strata, sizes, estimator=estimator,
                                     q_sample=proxy_sample, q_means=proxy_means)
    df = max(len(diff) - len(sizes), 1)
    half = float(stats.t.ppf(0.5 + confidence / 2, df) * np.sqrt(max(var, 0.0)))
    return est, max(est - half, -1.0), min(est + half, 1.0)


def recall_table(*, predicted: np.ndarray, observed_truth: np.ndarray, truth_weights: np.ndarray,
                 n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(observed, corrected) recall per class, NaN where a class has no weight.
    ``observed_truth`` (N,) the given labels; ``truth_weights`` (N, C) the weight of each true
    class per sample (a posterior, or a verified one-hot times 1 / inclusion probability)."""
    hit = np.zeros((len(predicted), n_classes))
    hit[np.arange(len(predicted)), predicted] = 1.0
    given = np.bincount(observed_truth, minlength=n_classes).astype(float)
    observed = np.bincount(observed_truth, weights=hit[np.arange(len(predicted)),
                                                      observed_truth], minlength=n_classes)
    mass = truth_weights.sum(axis=0)
    corrected = (truth_weights * hit).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(given > 0, observed / given, np.nan), \
            np.where(mass > 0, corrected / mass, np.nan)
