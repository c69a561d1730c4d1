"""Label sets: each class a yes/no question about each sample (one-vs-rest).

Shapes: ``sets`` (N, C) bool, the given sets; ``probs`` (N, C) out-of-sample P(class present),
each column from its own binary posteriors (``binary_posteriors``: the project's cross-fitted
robust probes on two classes, absent and present, so no sample's label reaches the model that
scores it). Per (sample, class) the given answer is wrong with a calibrated probability

    q_ic = power-calibrated d_ic,  d_ic = 1 - p_ic where c is given (an *extra* class),
                                          p_ic     where it is not (a *missing* class),

each class's column calibrated to sum to its confident-joint count of wrong answers
(``scores.find_label_errors`` on the binary problem, which also flags the pairs). A set is
wrong when any of its answers is; its ``label_error_probability`` is the power-calibrated
r_i = 1 - prod_c (1 - q_ic), the column summing to the estimated number of wrong sets
(``wrong_set_range``: the centre of what the per-class counts allow). Combining the answers
as independent without that step reads 16-27 points high on composites, where one mistaken
part makes a missing and an extra answer in one set (benchmarks/RESULTS.md, "Multi-label
audits"). A sample is flagged ``label_error`` when any of its pairs is flagged;
``missing_labels`` / ``extra_labels`` name those pairs, and the suggested set is the given set
with them changed.
"""

from __future__ import annotations

import numpy as np

from dqaudit.dataset import set_text
from dqaudit.errors import InputError
from dqaudit.scoring import calibration, scores
from dqaudit.scoring.posteriors import fold_splits, linear_posteriors, stratified_folds
from dqaudit.scoring.probes import ProbeConfig
from dqaudit.scoring.regions import SET_REGIONS, region_posteriors

# a class answered yes (or no) on fewer samples than this cannot be learnt by a held-out
# model: it is left out of a multi-label audit, and the scan says so
MIN_CLASS_ANSWERS = 3
AMBIGUITY_MARGIN = 0.1  # |2 p - 1| below it: the class is a coin flip for this sample
# the one-vs-rest probes: no label-correction rounds and a stronger weight decay than the
# single-label probe's (a binary question of a few hundred positives overfits the whitened
# embedding): benchmarks/multilabel.py, RESULTS.md "Multi-label audits"
SET_PROBE = ProbeConfig(weight_decay=1.0)


def binary_posteriors(x: np.ndarray, sets: np.ndarray, *, seed: int, device: str,
                      config: ProbeConfig) -> np.ndarray:
    """(N, C) out-of-fold P(class present): per class, the robust linear probe on the
    two-class problem (absent, present) of the projected embeddings ``x`` (N, D), K-fold
    cross-fitted on ``fold_splits`` fold splits stratified by the class and averaged."""
    sets = np.asarray(sets, dtype=bool)
    out = np.zeros(sets.shape, dtype=np.float64)
    repeats = fold_splits(len(sets))
    for c in range(sets.shape[1]):
        yes = sets[:, c]
        counts = np.stack([~yes, yes], axis=1).astype(np.float32)
        out[:, c] = np.mean([linear_posteriors(
            x, counts, stratified_folds(yes.astype(np.int64), seed=seed + r), config=config,
            correction_rounds=0, seed=seed, device=device)[:, 1] for r in range(repeats)],
            axis=0)
    return out


def set_posteriors(x, views, sets: np.ndarray, *, pred_probs, seed: int, device: str
                   ) -> tuple[np.ndarray, str | None]:
    """((N, C) P(class present), what fitted them): the one-vs-rest probes' on the projected
    embeddings ``x`` (N, D), with ``views`` (N, J, d) averaged with the region model's
    (``scoring.regions``), or the user's independent ``pred_probs`` (None: not fitted).

    The average hedges between a class that fills the image (the whole image's probe sees it
    best) and one that a part shows (the region model does). On CIFAR-10N composites the
    region model alone flagged about as well (F1 -0.02 to +0.03 against the average) but its
    probabilities were twice as far from calibrated (ECE 0.08-0.15 against 0.04-0.07) and its
    gold-free share of wrong sets up to 10 points off (the average: at most 6); on
    ``sample_data/multilabel`` (shapes filling much of the image) the average finds 15 of the
    18 wrong sets (F1 0.88), the region model alone 15 (0.91), the whole image alone 17 (0.92)
    (benchmarks/RESULTS.md, "Multi-label audits")."""
    if views is not None:
        regions = region_posteriors(views, sets, config=SET_REGIONS, seed=seed, device=device,
                                    suspects=flagged_pairs)
        whole = binary_posteriors(x, sets, seed=seed, device=device, config=SET_PROBE)
        return (regions + whole) / 2, "region model averaged with one-vs-rest probes"
    if pred_probs is None:
        return (binary_posteriors(x, sets, seed=seed, device=device, config=SET_PROBE),
                "one-vs-rest probes (scoring.multilabel)")
    return pred_probs, None


def flagged_pairs(sets: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(N, C) bool: the (sample, class) answers the audit flags on these posteriors
    (``pair_errors``), what the region model's correction rounds replace."""
    return pair_errors(sets, probs)["flags"]


def pair_errors(sets: np.ndarray, probs: np.ndarray) -> dict:
    """The binary confident learning of every class: ``flags`` (N, C) the pairs flagged,
    ``disagreement`` (N, C) d_ic, ``q`` (N, C) calibrated P(answer wrong), ``counts`` (C,) the
    wrong answers per class, ``joint`` (C, 2, 2) the calibrated confident joints.

    Per class and per given answer (present, absent), the off-diagonal mass of that answer's
    row of the confident joint is how many of its samples are wrong; they are taken among the
    samples whose posterior prefers the other answer, highest d first, and no more than those
    (a one-vs-rest problem is imbalanced: a row's excess must not spill into the other row's
    samples, as cleanlab's prune_by_noise_rate keeps it). The count is what was flagged, and
    each class's q is calibrated to sum to it."""
    sets = np.asarray(sets, dtype=bool)
    n, c = sets.shape
    flags = np.zeros((n, c), dtype=bool)
    q = np.zeros((n, c))
    dis = np.where(sets, 1.0 - probs, probs)
    counts = np.zeros(c, dtype=np.int64)
    joints = np.zeros((c, 2, 2))
    for k in range(c):
        y = sets[:, k].astype(np.int64)
        joint = scores.confident_joint(y, np.stack([1.0 - probs[:, k], probs[:, k]], axis=1))
        prefers_other = (probs[:, k] >= 0.5) != sets[:, k]
        for answer in (0, 1):
            candidates = np.flatnonzero((y == answer) & prefers_other)
            take = min(int(round(joint[answer, 1 - answer])), len(candidates))
            if take:
                order = candidates[np.argsort(-dis[candidates, k], kind="stable")]
                flags[order[:take], k] = True
        counts[k], joints[k] = int(flags[:, k].sum()), joint
        q[:, k] = calibration.power(dis[:, k], counts[k])
    return {"flags": flags, "disagreement": dis, "q": q, "counts": counts, "joint": joints}


def set_scores(sets: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """Every per-sample score of a multi-label audit (columns named as the single-label
    audit's where they mean the same), plus the pair-level arrays and the range of the share of
    wrong sets (``wrong_set_range``) for the summary."""
    sets = np.asarray(sets, dtype=bool)
    pairs = pair_errors(sets, probs)
    flags, q, dis = pairs["flags"], pairs["q"], pairs["disagreement"]
    low, high = wrong_set_range(pairs["counts"], len(sets))
    independent = 1.0 - np.prod(1.0 - q, axis=1)
    error_probability = calibration.power(independent, (low + high) / 2 * len(sets))
    noisiness = 1.0 - np.prod(1.0 - dis, axis=1)
    margin = np.abs(2.0 * probs - 1.0)
    ambiguity = 1.0 - margin.min(axis=1)
    suggested = sets ^ flags
    # P(the suggested set is right): each class as suggested
    agree = np.where(suggested, probs, 1.0 - probs)
    names = np.array(classes, dtype=object)
    order = np.argsort(-q, axis=1)  # each sample's pairs, likeliest wrong first

    def listed(mask_row, row_order) -> str:
        return ";".join(names[j] for j in row_order if mask_row[j])

    missing = [listed(flags[i] & ~sets[i], order[i]) for i in range(len(sets))]
    extra = [listed(flags[i] & sets[i], order[i]) for i in range(len(sets))]
    return {
        "noisiness": noisiness, "ambiguity": ambiguity, "priority": noisiness - ambiguity,
        "error_probability": error_probability, "independent": independent,
        "wrong_set_range": (low, high), "disagreement": noisiness,
        "label_error": flags.any(axis=1),
        "ambiguous": (margin < AMBIGUITY_MARGIN).any(axis=1),
        "suggested": [set_text(r, classes) for r in suggested],
        "confidence": np.prod(agree, axis=1),
        "missing_labels": missing, "extra_labels": extra,
        "pairs": pairs,
    }


def set_summary(sets: np.ndarray, scored: dict, classes: list[str]) -> dict:
    """The ``multi_label`` block: shares of wrong sets and of wrong (sample, class) answers,
    and per class the missing and extra rates (calibrated estimates and flagged counts) and
    how often it co-occurs with every other class in the given sets."""
    sets = np.asarray(sets, dtype=bool)
    n, c = sets.shape
    q, flags = scored["pairs"]["q"], scored["pairs"]["flags"]
    per_class = {}
    for k, name in enumerate(classes):
        yes = sets[:, k]
        per_class[name] = {
            "n_present": int(yes.sum()),
            "missing_rate": round(float(q[~yes, k].sum() / n), 4),
            "extra_rate": round(float(q[yes, k].sum() / n), 4),
            "flagged_missing": int((flags[:, k] & ~yes).sum()),
            "flagged_extra": int((flags[:, k] & yes).sum()),
            "confident_joint_count": int(scored["pairs"]["counts"][k]),
        }
    co = (sets.T.astype(np.int64) @ sets.astype(np.int64))
    sizes = sets.sum(axis=1)
    low, high = scored["wrong_set_range"]
    return {
        "estimated_wrong_sets": round((low + high) / 2 * n, 1),
        "wrong_set_share": round((low + high) / 2, 4),
        "wrong_set_range": [round(low, 4), round(high, 4)],
        # the answers combined as independent (before the calibration to the centre)
        "independent_wrong_set_share": round(float(scored["independent"].mean()), 4),
        "wrong_pair_share": round(float(q.mean()), 4),
        "flagged_pairs": int(flags.sum()),
        "set_sizes": {str(k): int(v) for k, v in zip(*np.unique(sizes, return_counts=True))},
        "per_class": per_class,
        "cooccurrence": {"classes": list(classes), "matrix": co.tolist(),
                         "description": "samples whose given set holds both classes "
                                        "(diagonal: the class's samples)"},
        "not_for_sets": "the confident joint as a class-by-class matrix and the CLR injection "
                        "describe one label per sample; a multi-label audit states the per-"
                        "class missing and extra rates instead",
    }


def wrong_set_range(counts: np.ndarray, n: int) -> tuple[float, float]:
    """(low, high): the shares of wrong sets that the per-class counts of wrong answers
    ``counts`` (C,) allow among ``n`` sets. A set is wrong when any answer is: at least the
    class with the most wrong answers, at most all of them in different samples; where in that
    range depends on how the errors fall together (one mistake can make a missing and an extra
    answer in one set), which the counts cannot tell, so the share an audit states is the
    range's centre: the estimate whose worst error over the range is smallest."""
    if not len(counts) or n == 0:
        return 0.0, 0.0
    return float(counts.max()) / n, min(1.0, float(counts.sum()) / n)


def learnable_classes(sets: np.ndarray, classes: list[str]) -> tuple[np.ndarray, list[str]]:
    """(the (C,) bool mask of classes a held-out model can learn: answered yes and no on at
    least ``MIN_CLASS_ANSWERS`` samples each, and one line per class left out, naming why)."""
    sets = np.asarray(sets, dtype=bool)
    yes = sets.sum(axis=0)
    no = len(sets) - yes
    keep = (yes >= MIN_CLASS_ANSWERS) & (no >= MIN_CLASS_ANSWERS)
    why = []
    for k in np.flatnonzero(~keep):
        what = ("on no sample" if yes[k] == 0 else "on every sample" if no[k] == 0 else
                f"on {int(yes[k])} sample(s)" if yes[k] < MIN_CLASS_ANSWERS else
                f"absent from only {int(no[k])} sample(s)")
        why.append(f"class {classes[k]!r} is present {what}: a held-out model cannot learn it, "
                   "so it is left out of the audit")
    if keep.sum() < 1:
        raise InputError("no class of these label sets can be learnt (each needs at least "
                         f"{MIN_CLASS_ANSWERS} samples with it and {MIN_CLASS_ANSWERS} without "
                         "it); add samples")
    return keep, why
