"""Scoring a dataset: out-of-sample posteriors, then every per-sample score of the output
contract (docs/scores.md) and the dataset-level statistics the summary carries.

One function, ``score_dataset``, behind the scan, the re-rank after corrections, and users'
own arrays (``Audit.from_arrays``): embeddings, out-of-sample ``pred_probs``, or both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from dqaudit.dataset import LabeledImages, label_distribution, set_text
from dqaudit.errors import InputError
from dqaudit.files import printable
from dqaudit.imaging.image_checks import (
    IMAGE_ISSUES,
    JUNK_ISSUES,
    exact_duplicate_groups,
    image_flags,
    image_scores,
    stat_column,
)
from dqaudit.scoring import calibration, multilabel, scores
from dqaudit.scoring.checks import CHECKS, issue_masks
from dqaudit.scoring.checks import flagged as flagged_by
from dqaudit.scoring.neighbors import (
    DUPLICATE_THRESHOLD,
    duplicate_groups,
    group_flags,
    knn,
    knn_disagreement,
    outlier_flags,
    outlier_scores,
)
from dqaudit.scoring.posteriors import (DEFAULT_METHOD, compute_posteriors, fold_splits,
                                        review_posteriors)
from dqaudit.scoring.probes import project
from dqaudit.scoring.regions import SET_REGIONS, project_views

# a class of m samples gives each held-out sample's model at most m - 1 of its class to learn
# from: below 3 (one typo in a manifest makes a class of one) the class cannot be learnt and
# every sample of it reads as a wrong label. A scan leaves such classes out (skipped.csv says
# why); classes under 20 samples are audited with a small-sample warning (headline.py)
MIN_CLASS_SAMPLES = 3
# a sample is "ambiguous" when its posterior is nearly tied between two classes (top-two
# margin below this): one look may not settle it. Measured against CIFAR-10H's human
# disagreement (benchmarks/ambiguity_tag.py): 10% of images tagged, 2.3x the base rate of
# images the annotators split on; the former rule (entropy >= half of log C) tagged 43% at 1.7x
AMBIGUITY_MARGIN = 0.1


@dataclass
class ScoredDataset:
    """The scores stage's output: the per-sample score columns and dataset-level statistics."""

    table: pd.DataFrame
    stats: dict
    probs: np.ndarray
    graph: object


def score_dataset(data: LabeledImages, embeddings: np.ndarray | None, *,
                  pred_probs: np.ndarray | None = None, seed: int,
                  method: str = DEFAULT_METHOD, k: int = 10,
                  duplicate_threshold: float | None = None,
                  knn_method: str = "auto", device: str = "cpu", graph=None,
                  image_stats: np.ndarray | None = None, checks=CHECKS,
                  probs_source: str = "pred_probs", review_order: str = "review_score",
                  regions: np.ndarray | None = None) -> ScoredDataset:
    """Posteriors, then every per-sample score of the output contract (see docs/scores.md).

    ``embeddings`` (N, D) give the posteriors (K-fold probes, ``method``) and the kNN graph
    (duplicates, outliers, neighbour disagreement, importance). ``pred_probs`` (N, C):
    out-of-sample class probabilities from the user's own model, used instead of the probes'
    (cleanlab's convention: each row predicted by a model that did not train on that sample).
    With ``pred_probs`` alone the graph scores are left empty (NaN, -1, False). ``graph``: a
    kNN graph of ``embeddings`` already built (``dqaudit.scoring.neighbors.knn``) to reuse.
    ``duplicate_threshold``: None takes ``neighbors.DUPLICATE_THRESHOLD``. ``image_stats``
    (N, S): the decode workers' measurements (``image_checks.image_stats``), for the image
    checks; None leaves them out (user embeddings, pred_probs). A junk image (blank,
    low-information) gets no label-error flag and no suggested label. ``checks``: which of
    ``config.CHECKS`` to report (the posteriors and scores are computed either way; a check
    left out sets none of its issues). ``probs_source``: what made ``pred_probs``, for the
    summary (``pred_probs``: the user's model; ``finetune``: ``dqaudit.scoring.finetune``).
    ``regions`` (N, R, D): embeddings of each image's regions (``embed.REGIONS``), for the
    per-class posteriors of a multi-label dataset (``scoring.regions``).
    """
    n = len(data)
    checked = tuple(checks)
    if embeddings is None and pred_probs is None:
        raise InputError("scoring needs embeddings, pred_probs or both")
    if pred_probs is not None:
        pred_probs = (_checked_set_probs if data.multi_label else _checked_probs)(
            pred_probs, n, data.n_classes)
    x = views = None
    if regions is not None:
        if not data.multi_label or embeddings is None or pred_probs is not None:
            raise InputError("region embeddings serve the per-class posteriors of a multi-label "
                             "audit from its embeddings; drop them (--regions) here")
        views = project_views(embeddings, regions, dim=SET_REGIONS.dim, seed=seed)
    if embeddings is not None:
        x = project(embeddings, seed=seed)
        if graph is None:
            graph = knn(embeddings, k=k, method=knn_method, device=device, seed=seed)
    lab = (_set_scores if data.multi_label else _label_scores)(
        data, x, graph, pred_probs=pred_probs, method=method, seed=seed, device=device,
        review_order=review_order, views=views)
    probs, post = lab["probs"], lab["post"]
    noisiness, ambiguity, priority = lab["noisiness"], lab["ambiguity"], lab["priority"]
    suggested_names, confidence = lab["suggested"], lab["confidence"]
    error_probability, disagreement = lab["error_probability"], lab["disagreement"]
    label_error, n_errors, review = lab["label_error"], lab["n_errors"], lab["review"]
    checks = _image_checks(image_stats if "images" in checked else None, n)
    junk = np.zeros(n, dtype=bool)
    for name in JUNK_ISSUES:
        junk |= checks["flags"][name]
    raw_ambiguous = lab["ambiguous"]
    if duplicate_threshold is None:
        duplicate_threshold = DUPLICATE_THRESHOLD
    if graph is not None:
        dup_group = duplicate_groups(graph, threshold=duplicate_threshold) \
            if "duplicates" in checked else np.full(n, -1, dtype=np.int64)
        outlier_score = outlier_scores(graph)
        outlier = outlier_flags(outlier_score)
        importance = scores.importance(x, data.labels, noisiness)
        neighbour_disagreement = knn_disagreement(data.labels, graph)
    else:
        dup_group = np.full(n, -1, dtype=np.int64)
        outlier_score = importance = neighbour_disagreement = np.full(n, np.nan)
        outlier = np.zeros(n, dtype=bool)
    exact_group = checks["exact_group"] if "duplicates" in checked else np.full(
        n, -1, dtype=np.int64)
    exact = exact_group >= 0
    duplicate = (dup_group >= 0) | exact
    # duplicates conflict when their labels (their whole sets, for multi-label data) differ
    given = [set_text(r, data.classes) for r in data.label_sets] if data.multi_label \
        else data.labels
    conflicting = group_flags(dup_group, given) | group_flags(exact_group, given)
    leak = group_flags(dup_group, data.splits, ignore_empty=True) | group_flags(
        exact_group, data.splits, ignore_empty=True)

    # the checks registry (scoring.checks) gates, suppresses and orders the issues
    masks = issue_masks({"label_error": label_error, "ambiguous": raw_ambiguous,
                         "duplicate": duplicate, "exact_duplicate": exact,
                         "conflicting_duplicate": conflicting, "leak": leak, "outlier": outlier,
                         **checks["flags"],
                         **(box_flags(data.objects) if data.objects is not None else {})},
                        checked=checked)
    label_error = masks["label_error"]
    names = list(masks)
    issues = _issue_lists(names, list(masks.values()))
    flagged = flagged_by(masks)
    suggested_names = np.array(suggested_names, dtype=object)
    suggested_names[junk] = ""  # no suggestion on junk: it would mislead the reviewer
    confidence = np.where(junk, np.nan, confidence)
    table = pd.DataFrame({
        "noisiness": noisiness,
        "ambiguity": ambiguity,
        "priority": priority,
        "review_score": review,
        "importance": importance,
        "suggested_label": suggested_names,
        "suggested_confidence": confidence,
        "label_error_probability": error_probability,
        "given_label_disagreement": disagreement,
        "knn_disagreement": neighbour_disagreement,
        "dup_group": dup_group,
        "outlier_score": outlier_score,
        "outlier_percentile": 100.0 * pd.Series(outlier_score).rank(pct=True).to_numpy(),
        "flagged": flagged,
        "issues": issues,
        **{f"{k}_score": checks["scores"][k] for k in IMAGE_ISSUES},
        "exact_dup_group": exact_group,
    })
    if data.multi_label:
        extra = {"missing_labels": lab["missing_labels"], "extra_labels": lab["extra_labels"]}
        for name, values in extra.items():
            table.insert(table.columns.get_loc("suggested_label") + 1, name,
                         np.where(junk, "", np.array(values, dtype=object)))
        table = table.rename(columns={"suggested_label": "suggested_labels"})
    noise_blocks = lab["noise_blocks"](label_error)
    fitted = lab["fitted"]  # what made the posteriors when the audit fitted them, else None
    stats = {
        "posterior_method": method if fitted else probs_source,
        "label_error_probability": {
            "calibration": "power",
            "description": "P(given set is wrong): 1 - prod over classes of (1 - q), q the "
                           "calibrated probability that the class's answer is wrong, raised "
                           "to the power that makes the column sum to the estimated number "
                           "of wrong sets (scoring.multilabel)" if data.multi_label else
                           "P(given label is wrong): 1 - p(given label) under the "
                           "out-of-sample posteriors, raised to the power that makes the "
                           "column sum to the estimated number of wrong labels",
        },
        "flagged_count": int(flagged.sum()),
        "label_error_count": int(label_error.sum()),
        "estimated_label_errors": n_errors,
        # the confident joint's count as a share (for sets the centre of the range the
        # per-class counts allow, as the headline states it), unrounded count over n
        "confident_joint_rate": round(lab["error_share"], 4),
        "issue_counts": {name: int(m.sum()) for name, m in masks.items()},
        "duplicate_groups": int(dup_group.max() + 1) if (dup_group >= 0).any() else 0,
        "exact_duplicate_groups": int(exact_group.max() + 1) if exact.any() else 0,
        "checks": list(checked),
        "image_checks": "not run: left out by --checks" if "images" not in checked else
        "decode statistics" if image_stats is not None else
        "not run: no images were decoded (user embeddings or pred_probs)",
        **noise_blocks,
        "score_parameters": {"k": graph.k if graph is not None else None,
                             "duplicate_threshold": duplicate_threshold,
                             "ambiguity_margin": AMBIGUITY_MARGIN,
                             "n_folds": 5 if fitted or probs_source == "finetune"
                             else None,
                             "fold_splits": post.fold_splits if post is not None else
                             fold_splits(n) if fitted
                             else None,
                             "pca_dim": int(x.shape[1]) if x is not None else None,
                             "knn": graph.info if graph is not None else None,
                             "posteriors": fitted or probs_source,
                             "region_model": asdict(SET_REGIONS) if views is not None else None},
    }
    return ScoredDataset(table=table, stats=stats, probs=probs, graph=graph)


def _label_scores(data: LabeledImages, x, graph, *, pred_probs, method: str, seed: int,
                  device: str, review_order: str, views) -> dict:
    """The label scores of a single-label dataset: posteriors (the probes', or the user's
    ``pred_probs``), noisiness, ambiguity, the flag, the calibrated error probability, the
    review order, and the confident joint's per-class blocks for the summary."""
    n = len(data)
    post = None
    if pred_probs is None:
        post = compute_posteriors(x, graph, data.label_counts, data.labels, method=method,
                                  seed=seed, device=device)
        probs = post.probs
        # the order of review: the same scores on the posteriors the cleaning simulation
        # measures (one fold split, no correction rounds; see posteriors.review_posteriors)
        review_probs = review_posteriors(
            method, x, graph, data.label_counts, post.fold_sets[0], device=device,
            graph_probs=post.by_method.get("graph"), labels=data.labels, seed=seed)
    else:
        probs = review_probs = pred_probs
    target = label_distribution(data.label_counts)
    noisiness = scores.noisiness(target, probs)
    ambiguity = scores.ambiguity(probs)
    suggested, confidence = scores.suggestions(probs)
    disagreement = scores.given_label_disagreement(target, probs)
    found = scores.find_label_errors(data.labels, target, probs)
    joint = found.joint
    # the order of review: where one look fixes a label, the chance it is wrong (noisiness's
    # order); where a review is one more annotation, priority joined with the noise model
    review = scores.review_score_of(data.labels, review_probs, label_counts=data.label_counts) \
        if review_order == "review_score" else \
        scores.mean_rank(disagreement) / max(n - 1, 1)

    def noise_blocks(label_error: np.ndarray) -> dict:
        per_class_noise = {}
        row_sums = joint.sum(axis=1)
        for c, name in enumerate(data.classes):
            members = data.labels == c
            per_class_noise[name] = {
                "n": int(members.sum()),
                "confident_joint_rate": round(float(1 - joint[c, c] / row_sums[c]), 4)
                if row_sums[c] > 0 else None,
                "flagged_label_errors": int(label_error[members].sum()),
            }
        transition = joint / np.maximum(row_sums[:, None], 1e-12)
        return {"per_class_noise": per_class_noise,
                "estimated_transition_matrix": {
                    "classes": list(data.classes),
                    "description": "row: given label, column: likely true label "
                                   "(row-normalised calibrated confident joint)",
                    "matrix": np.round(transition, 4).tolist()}}

    return {"probs": probs, "post": post, "fitted": "probes" if post is not None else None,
            "noisiness": noisiness, "ambiguity": ambiguity,
            "priority": noisiness - ambiguity,
            "suggested": np.array(data.classes, dtype=object)[suggested],
            "confidence": confidence, "disagreement": disagreement,
            "label_error": found.flags, "n_errors": found.count,
            "error_share": found.count / len(data),
            # calibrated to sum to the estimated number of wrong labels (calibration.py)
            "error_probability": calibration.power(disagreement, found.count),
            "ambiguous": scores.top_two_margin(probs) < AMBIGUITY_MARGIN,
            "review": review, "noise_blocks": noise_blocks}


def _set_scores(data: LabeledImages, x, graph, *, pred_probs, method: str, seed: int,
                device: str, review_order: str, views) -> dict:
    """The label scores of a multi-label dataset (``scoring.multilabel``): per-class
    out-of-fold posteriors (the region model's on ``views`` (N, J, d) when given, else the
    one-vs-rest probes', or the user's independent ``pred_probs``), scored pair by pair; the
    review goes by the chance the set is wrong."""
    sets = data.label_sets
    post = None
    probs, fitted = multilabel.set_posteriors(x, views, sets, pred_probs=pred_probs, seed=seed,
                                              device=device)
    s = multilabel.set_scores(sets, probs, data.classes)
    n = len(data)

    def noise_blocks(label_error: np.ndarray) -> dict:
        block = multilabel.set_summary(sets, s, data.classes)
        per_class_noise = {name: {"n": v["n_present"], "confident_joint_rate": None,
                                  "flagged_label_errors": v["flagged_missing"]
                                  + v["flagged_extra"], **v}
                           for name, v in block["per_class"].items()}
        return {"per_class_noise": per_class_noise, "estimated_transition_matrix": None,
                "multi_label": block}

    return {**s, "probs": probs, "post": post, "fitted": fitted,
            "n_errors": int(round(float(s["error_probability"].sum()))),
            "error_share": sum(s["wrong_set_range"]) / 2,
            "review": scores.mean_rank(s["disagreement"]) / max(n - 1, 1),
            "noise_blocks": noise_blocks}


def _checked_set_probs(pred_probs, n: int, n_classes: int) -> np.ndarray:
    """(N, C) float64 independent probabilities of each class being present (cleanlab's
    multi-label convention), or an InputError naming the fix."""
    p = np.asarray(pred_probs, dtype=np.float64)
    if p.shape != (n, n_classes):
        raise InputError(f"pred_probs has shape {p.shape}; a multi-label audit needs "
                         f"({n}, {n_classes}): one probability per sample and class")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise InputError("pred_probs of label sets are probabilities in [0, 1] (each class "
                         "on its own; rows need not sum to 1)")
    return p


def box_flags(objects: pd.DataFrame) -> dict[str, np.ndarray]:
    """The box checks of an object audit as (N,) bool masks by issue name (``BOX_ISSUES``;
    ``possible_spurious`` only when a detector's predictions were matched)."""
    out = {"box_outside": objects["box_outside"].to_numpy(dtype=bool),
           "duplicate_box": (objects["duplicate_box_of"].astype(str) != "").to_numpy()}
    if "possible_spurious" in objects.columns:
        out["possible_spurious"] = objects["possible_spurious"].to_numpy(dtype=bool)
    return out


def _image_checks(image_stats, n: int) -> dict:
    """Scores, flags and exact-duplicate groups of the image checks; all empty (NaN, False,
    -1) without statistics."""
    if image_stats is None:
        return {"scores": {k: np.full(n, np.nan) for k in IMAGE_ISSUES},
                "flags": {k: np.zeros(n, dtype=bool) for k in IMAGE_ISSUES},
                "exact_group": np.full(n, -1, dtype=np.int64)}
    scores = image_scores(image_stats)
    return {"scores": scores, "flags": image_flags(scores),
            "exact_group": exact_duplicate_groups(stat_column(image_stats, "pixel_hash"))}


def _issue_lists(names: list[str], masks: list[np.ndarray]) -> list[list[str]]:
    """Per sample, the names whose mask is set; one Python list per distinct combination."""
    codes = np.zeros(len(masks[0]), dtype=np.int64)
    for bit, m in enumerate(masks):
        codes |= m.astype(np.int64) << bit
    combos = {int(c): [n for bit, n in enumerate(names) if c >> bit & 1]
              for c in np.unique(codes)}
    return [list(combos[c]) for c in codes.tolist()]


def base_samples_table(data: LabeledImages) -> pd.DataFrame:
    """The identity columns of the samples table: id, path, label (class name), split, and for
    an object audit the box's own columns (``objects.OBJECT_COLUMNS``: its image, where it
    lies, the box checks; ``path`` is then its crop). A path that is not UTF-8 shows its odd
    bytes as ``\\xNN`` (``files.printable``)."""
    table = pd.DataFrame({
        "id": data.ids,
        "path": [printable(p) for p in data.paths],
        "label": [set_text(r, data.classes) for r in data.label_sets] if data.multi_label
        else [data.classes[i] for i in data.labels],
        "split": list(data.splits),
    })
    if data.objects is not None:
        table = pd.concat([table, data.objects.reset_index(drop=True)], axis=1)
    return table




def _checked_probs(pred_probs, n: int, n_classes: int) -> np.ndarray:
    """(N, C) float64 rows that are probability distributions, or an InputError naming the
    fix."""
    p = np.asarray(pred_probs, dtype=np.float64)
    if p.shape != (n, n_classes):
        raise InputError(f"pred_probs has shape {p.shape}; expected ({n}, {n_classes}): one row "
                         "per sample, one column per class in the order of `classes`")
    if not np.isfinite(p).all() or (p < 0).any():
        raise InputError("pred_probs has negative, NaN or infinite values; pass probabilities "
                         "(softmax outputs), not logits")
    sums = p.sum(axis=1)
    if np.abs(sums - 1).max() > 1e-3:
        raise InputError(f"pred_probs rows must sum to 1 (found sums from {sums.min():.3g} to "
                         f"{sums.max():.3g}); pass softmax outputs, not logits")
    return p / sums[:, None]

