"""Per-sample scores: functions of arrays (labels, label distributions, posteriors) -> arrays.

Notation: N samples, C classes; ``target`` (N, C) normalised label counts (one-hot for a single
label); ``probs`` (N, C) out-of-sample posteriors p(y|x). Equations refer to Bernhardt et al.,
"Active label cleaning for improved dataset quality under resource constraints",
Nat. Commun. 13, 1161 (2022).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

EPS = 1e-12


def noisiness(target: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(N,) cross-entropy of the label distribution against the posterior, in nats (Eq. 3):
    -sum_c t_c log p_c. High when the label is unlikely under the model."""
    return -(target * np.log(np.clip(probs, EPS, 1.0))).sum(axis=1)


def ambiguity(probs: np.ndarray) -> np.ndarray:
    """(N,) entropy of the posterior, in nats (Eq. 4): -sum_c p_c log p_c. High for samples
    the model cannot tell apart; at most log C."""
    p = np.clip(probs, EPS, 1.0)
    return -(probs * np.log(p)).sum(axis=1)


def priority(target: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(N,) relabelling priority = noisiness - ambiguity (Eq. 2), in nats: confident
    disagreements (clear label errors) first, ambiguous samples last."""
    return noisiness(target, probs) - ambiguity(probs)


def suggestions(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,) suggested class index (argmax posterior) and its probability."""
    best = probs.argmax(axis=1)
    return best, probs[np.arange(len(probs)), best]


def top_two_margin(probs: np.ndarray) -> np.ndarray:
    """(N,) p_(1) - p_(2): how far the most probable class is ahead of the second; near 0 the
    posterior is tied between two classes (the ``ambiguous`` tag's rule)."""
    top_two = np.sort(probs, axis=1)[:, -2:]
    return top_two[:, 1] - top_two[:, 0]


def given_label_disagreement(target: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(N,) 1 - sum_c t_c p_c: the probability that a fresh label drawn from the posterior
    disagrees with the given label distribution. A ranking score, not a probability of a label
    error: it mixes label errors with the model's own uncertainty, so its sum over-counts them
    (``dqaudit.scoring.calibration`` turns it into ``label_error_probability``)."""
    return 1.0 - (target * probs).sum(axis=1)


def confident_joint(labels: np.ndarray, probs: np.ndarray,
                    weights: np.ndarray | None = None) -> np.ndarray:
    """(C, C) calibrated confident joint of given label (rows) and likely true label (columns).

    Confident learning (Northcutt, Jiang & Chuang, JAIR 2021, Eq. 1-2): sample i counts in
    cell (given y_i, j) when p_ij reaches class j's threshold t_j = mean of p_kj over samples
    labeled j (the most probable such j when several do); rows are then rescaled to the given
    class sizes. Per-class thresholds make it robust to miscalibrated posteriors. ``weights``
    (N,) counts sample i w_i times (a bootstrap resample as multiplicities).
    """
    n, n_classes = probs.shape
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    counts = np.bincount(labels, weights=w, minlength=n_classes)
    own = np.bincount(labels, weights=w * probs[np.arange(n), labels], minlength=n_classes)
    thresholds = np.divide(own, counts, out=np.ones(n_classes), where=counts > 0)
    above = probs >= thresholds[None, :]
    has = above.any(axis=1)
    best = np.where(above, probs, -1.0).argmax(axis=1)
    joint = np.bincount(labels * n_classes + best, weights=w * has,
                        minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    row = joint.sum(axis=1, keepdims=True)
    return np.where(row > 0, joint / np.maximum(row, 1e-12) * counts[:, None], 0.0)


def off_diagonal(joint: np.ndarray) -> float:
    """Mass of a (C, C) joint off its diagonal: the estimated number of wrong labels."""
    return float(joint.sum() - np.trace(joint))


def label_error_fraction(labels: np.ndarray, probs: np.ndarray,
                         weights: np.ndarray | None = None) -> float:
    """Estimated share of wrong labels: off-diagonal mass of the calibrated confident joint
    over the number of samples (unrounded; ``weights`` as in ``confident_joint``)."""
    joint = confident_joint(labels, probs, weights)
    total = len(labels) if weights is None else float(np.sum(weights))
    return off_diagonal(joint) / max(total, 1e-12)


def estimate_label_error_count(labels: np.ndarray, probs: np.ndarray) -> int:
    """Estimated number of label errors: off-diagonal mass of the calibrated confident joint
    (measured against the truth in benchmarks/RESULTS.md)."""
    return int(round(off_diagonal(confident_joint(labels, probs))))


def noise_model_error_probability(labels: np.ndarray, probs: np.ndarray,
                                   joint: np.ndarray, *, smoothing: float = 1e-3) -> np.ndarray:
    """(N,) probability that the given label is wrong under a class-conditional noise model,
    by Bayes' rule: with T[i, j] = P(given i | true j), the column-normalised confident joint,
    and ``probs`` standing in for p(true class | x),

        P(wrong | x, y) = 1 - p_y T[y, y] / sum_j p_j T[y, j].

    Unlike ``noisiness`` it uses the noise structure: a disagreement towards a class whose
    samples are often given this label (cat/dog) weighs more than one towards a class that
    rarely is. ``smoothing`` is added to every joint cell so that unseen confusions stay
    possible.
    """
    j = np.asarray(joint, dtype=np.float64) + smoothing
    t = j / j.sum(axis=0, keepdims=True)
    rows = t[labels]  # (N, C): T[y_i, j]
    n = len(labels)
    den = (probs * rows).sum(axis=1)
    return 1.0 - probs[np.arange(n), labels] * rows[np.arange(n), labels] / np.maximum(den, EPS)


def mean_rank(*scores_: np.ndarray) -> np.ndarray:
    """(N,) average of the ranks (0 = lowest) of each score: an ensemble of rankings that
    ignores their scales."""
    return np.mean([np.argsort(np.argsort(s, kind="stable"), kind="stable") for s in scores_],
                   axis=0)


def review_score(priority_: np.ndarray, error_probability: np.ndarray) -> np.ndarray:
    """(N,) the order of review, in [0, 1] (1 = review first): the mean rank of ``priority``
    (noisiness - ambiguity, Eq. 2 of "Active label cleaning") and
    ``noise_model_error_probability``, scaled by N - 1.

    Priority puts clear errors before ambiguous samples; the noise model weighs a disagreement
    by how often the given label stands in for the predicted class. In the cleaning simulation
    on CIFAR-10H (benchmarks/RESULTS.md, 5 seeds) this order reaches a normalised AUC of 0.80
    where priority alone reached 0.775, with the same posteriors.
    """
    return mean_rank(priority_, error_probability) / max(len(priority_) - 1, 1)


def review_score_of(labels: np.ndarray, probs: np.ndarray, *,
                    label_counts: np.ndarray | None = None) -> np.ndarray:
    """``review_score`` from posteriors: priority and noise-model error probability of the
    given ``labels`` (N,) against ``probs`` (N, C); the priority's target is the normalised
    ``label_counts`` (N, C) when given, else the one-hot labels."""
    target = np.eye(probs.shape[1])[labels] if label_counts is None else \
        label_counts / label_counts.sum(axis=1, keepdims=True)
    return review_score(priority(target, probs), noise_model_error_probability(
        labels, probs, confident_joint(labels, probs)))


def flag_label_errors(rank_score: np.ndarray, n_errors: int, *, candidates: np.ndarray
                      ) -> np.ndarray:
    """(N,) bool: the ``n_errors`` highest ``rank_score`` samples among ``candidates``.

    The count is estimated from the data (``estimate_label_error_count``), not a fixed top-k;
    samples the model agrees with (``candidates`` False) are never flagged.
    """
    flags = np.zeros(len(rank_score), dtype=bool)
    pool = np.flatnonzero(candidates)
    if n_errors <= 0 or len(pool) == 0:
        return flags
    order = pool[np.argsort(-rank_score[pool], kind="stable")]
    flags[order[:n_errors]] = True
    return flags


class LabelErrors(NamedTuple):
    """What ``find_label_errors`` found: the flags, their estimated count, the confident joint
    it came from and the noise-model error probability of every sample."""

    flags: np.ndarray
    count: int
    joint: np.ndarray
    noise_model: np.ndarray


def find_label_errors(labels: np.ndarray, target: np.ndarray, probs: np.ndarray) -> LabelErrors:
    """The ``label_error`` flag: as many samples as the confident joint estimates wrong labels
    (``estimate_label_error_count``), taken in the order of the mean rank of ``noisiness`` and
    ``noise_model_error_probability`` among the samples whose posterior prefers another class.

    Used by the audit and by the label-correction rounds of the linear probe; the two ranks
    together beat noisiness alone (benchmarks/RESULTS.md, "Detection quality on CIFAR-10N").
    """
    joint = confident_joint(labels, probs)
    count = int(round(off_diagonal(joint)))
    noise_model = noise_model_error_probability(labels, probs, joint)
    flags = flag_label_errors(mean_rank(noisiness(target, probs), noise_model), count,
                              candidates=probs.argmax(axis=1) != labels)
    return LabelErrors(flags=flags, count=count, joint=joint, noise_model=noise_model)


def importance(x: np.ndarray, labels: np.ndarray, loss: np.ndarray, *,
               ridge: float = 1.0) -> np.ndarray:
    """(N,) coreset-style sensitivity of each sample for the linear probe, scaled to [0, 1].

    s_i = loss_i / mean(loss) + h_i / mean_{j in class(i)}(h_j), with h_i the ridge leverage of
    the centred embedding within its class, h_i = x_i^T (X_c^T X_c + ridge I)^-1 x_i. The first
    term is the sample's share of the loss (how hard it pulls on the fit), the second how
    unusual its embedding is among its class (how much room it has to move the fit); their
    sum bounds the sensitivity of a linear model's loss to the sample (Feldman & Langberg
    2011; Langberg & Schulman 2010). importance = s / max(s).
    """
    n, d = x.shape
    lev = np.zeros(n)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        xc = x[members].astype(np.float64)
        xc = xc - xc.mean(axis=0, keepdims=True)
        gram = xc.T @ xc + ridge * np.eye(d)
        sol = np.linalg.solve(gram, xc.T).T
        h = (xc * sol).sum(axis=1)
        lev[members] = h / max(h.mean(), EPS)
    share = loss / max(loss.mean(), EPS)
    s = share + lev
    return s / max(s.max(), EPS)
