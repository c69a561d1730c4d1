"""A label-error probability that means what it says: monotone maps from a ranking score to
P(the given label is wrong).

The posteriors are deliberately under-confident (bounded logits, strong regularisation: right
for ranking), so ``1 - p(given label)`` reads far above the true share of wrong labels. These
monotone recalibrations keep every ranking exactly as it is and change only the scale:

``power``        without verified labels (the default): q_i = s_i ** g, with the exponent g
                 found by bisection so that sum_i q_i is the audit's estimated number of wrong
                 labels (the confident-joint count). g > 1 keeps confident disagreements near 1
                 and shrinks the weak ones, which is where the posteriors over-count (the
                 model's own uncertainty is not a label error).
``prior_shift``  measured as the alternative without verified labels (ECE up to 0.061 on
                 CIFAR-10N worst, against 0.027 for ``power``). The score is read as a
                 posterior odds with the wrong prior; Bayes' rule under a new prior multiplies
                 every odds by one constant (Saerens, Latinne & Decaestecker, Neural
                 Computation 14, 2002), a shift a of the logit: q_i = sigmoid(logit(s_i) + a),
                 with a chosen so that sum_i q_i is the estimated number of wrong labels.
``isotonic``     with a verification sample (the default there): weighted isotonic regression
                 of the verified outcome on the score (Zadrozny & Elkan 2002), each verified
                 sample weighted by 1 / its inclusion probability, so it estimates the
                 population's calibration curve without assuming its shape; stored as
                 breakpoints and applied by linear interpolation.
``platt``        measured as the alternative with a verification sample: a logistic
                 regression of the verified outcome on
                 logit(s) (Platt 1999), each verified sample weighted by 1 / its inclusion
                 probability, so it estimates the population's calibration curve; shrunk
                 towards the identity map (the gold-free calibration) by a ridge worth
                 ``prior weight`` weighted observations, so a small sample cannot undo it.

Measured (ECE against label != clean on CIFAR-10N) in benchmarks/calibration.py and
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


def power(score: np.ndarray, n_errors: float) -> np.ndarray:
    """(N,) ``score ** g`` summing to ``n_errors``, g found by bisection; where the raw sum is
    already below ``n_errors`` the values are scaled up instead (clipped to 1). All zeros when
    ``n_errors`` is 0. Monotone: ranks are unchanged."""
    q = np.clip(np.asarray(score, dtype=np.float64), 0.0, 1.0)
    total = q.sum()
    if n_errors <= 0 or total <= 0:
        return np.zeros_like(q)
    if total <= n_errors:
        return np.clip(q * (n_errors / total), 0.0, 1.0)
    lo, hi = 1.0, 1.0
    while (q ** hi).sum() > n_errors and hi < 1e4:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        if (q ** mid).sum() > n_errors:
            lo = mid
        else:
            hi = mid
    return q ** hi


def prior_shift(score: np.ndarray, n_errors: float) -> np.ndarray:
    """(N,) sigmoid(logit(score) + a), a found by bisection so the values sum to ``n_errors``
    (clipped to [0, N]); all zeros when ``n_errors`` is 0. Monotone: ranks are unchanged."""
    z = logit(score)
    n = len(z)
    target = float(np.clip(n_errors, 0, n))
    if n == 0 or target <= 0:
        return np.zeros(n)
    if target >= n:
        return np.ones(n)
    lo, hi = -40.0 - z.max(), 40.0 - z.min()
    for _ in range(100):
        a = (lo + hi) / 2
        if sigmoid(z + a).sum() > target:
            hi = a
        else:
            lo = a
    return sigmoid(z + (lo + hi) / 2)


def fit_platt(score: np.ndarray, outcome: np.ndarray, weights: np.ndarray, *,
              ridge: float = 1e-2, iterations: int = 50) -> tuple[float, float]:
    """(intercept, slope) of the weighted logistic regression of ``outcome`` (n,) 0/1 on
    logit(``score``) (n,), by Newton's method; ``weights`` (n,) are 1 / inclusion probability,
    normalised to mean 1. A small ridge on the slope's distance from 1 and the intercept keeps
    the fit finite when the verified sample has no error or nothing but errors."""
    x = logit(score)
    y = np.asarray(outcome, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.mean()
    design = np.stack([np.ones_like(x), x], axis=1)
    theta = np.array([0.0, 1.0])
    prior = np.array([0.0, 1.0])
    for _ in range(iterations):
        p = sigmoid(design @ theta)
        grad = design.T @ (w * (p - y)) + ridge * (theta - prior)
        hess = (design * (w * p * (1 - p))[:, None]).T @ design + ridge * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta = theta - step
        if np.abs(step).max() < 1e-10:
            break
    return float(theta[0]), float(theta[1])


def apply_platt(score: np.ndarray, intercept: float, slope: float) -> np.ndarray:
    """(N,) sigmoid(intercept + slope * logit(score)); monotone when slope > 0."""
    return sigmoid(intercept + max(slope, EPS) * logit(score))


def expected_calibration_error(prob: np.ndarray, outcome: np.ndarray, *, bins: int = 10
                               ) -> float:
    """ECE with ``bins`` equal-width bins: sum_b (n_b / N) |mean(prob_b) - mean(outcome_b)|."""
    prob = np.asarray(prob, dtype=np.float64)
    outcome = np.asarray(outcome, dtype=np.float64)
    idx = np.clip((prob * bins).astype(np.int64), 0, bins - 1)
    p_b = np.bincount(idx, weights=prob, minlength=bins)
    y_b = np.bincount(idx, weights=outcome, minlength=bins)
    return float(np.abs(p_b - y_b).sum() / max(len(prob), 1))


def fit_isotonic(score: np.ndarray, outcome: np.ndarray, weights: np.ndarray) -> dict:
    """Weighted isotonic regression of ``outcome`` (n,) on ``score`` (n,), as breakpoints
    ``{"method": "isotonic", "x": [...], "y": [...]}`` (JSON-ready; ``refit`` applies them)."""
    from sklearn.isotonic import IsotonicRegression

    fit = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    fit.fit(np.asarray(score, dtype=np.float64), np.asarray(outcome, dtype=np.float64),
            sample_weight=np.asarray(weights, dtype=np.float64))
    return {"method": "isotonic", "x": [round(float(v), 6) for v in fit.X_thresholds_],
            "y": [round(float(v), 6) for v in fit.y_thresholds_]}


def refit(values: np.ndarray, fit: dict | None) -> np.ndarray:
    """``values`` through a stored verified re-fit (summary.json
    ``verified.label_error_probability_refit``, from ``fit_isotonic``); unchanged when
    there is none."""
    values = np.asarray(values, dtype=np.float64)
    return np.interp(values, fit["x"], fit["y"]) if fit else values
