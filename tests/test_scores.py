"""Scores, posteriors and neighbours on hand-made arrays where the right answer is known."""

import numpy as np
import pytest

from dqaudit.dataset import LabeledImages
from dqaudit.errors import DqauditError
from dqaudit.scoring import scores
from dqaudit.scoring.neighbors import (
    duplicate_groups,
    group_flags,
    knn,
    knn_disagreement,
    outlier_flags,
    outlier_scores,
)
from dqaudit.scoring.posteriors import (
    compute_posteriors,
    graph_posteriors,
    linear_posteriors,
    stratified_folds,
)
from dqaudit.scoring.probes import ProbeConfig, fit_probes, predict_proba, project
from dqaudit.scoring.table import score_dataset


def clusters(n_per=60, n_classes=3, dim=16, spread=0.15, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, dim))
    x = np.concatenate([c + spread * rng.normal(size=(n_per, dim)) for c in centers])
    y = np.repeat(np.arange(n_classes), n_per)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), y


def dataset(x, y, counts=None, splits=None):
    n, c = len(y), int(y.max()) + 1
    if counts is None:
        counts = np.eye(c, dtype=np.float32)[y]
    return LabeledImages(paths=[f"/x/{i}.png" for i in range(n)], labels=y,
                         classes=[f"c{i}" for i in range(c)], label_counts=counts,
                         splits=np.array(splits if splits is not None else [""] * n, dtype=object),
                         ids=[str(i) for i in range(n)])


def test_entropy_and_cross_entropy_by_hand():
    target = np.array([[1.0, 0.0], [0.5, 0.5]])
    probs = np.array([[0.25, 0.75], [0.5, 0.5]])
    np.testing.assert_allclose(scores.noisiness(target, probs), [np.log(4), np.log(2)])
    np.testing.assert_allclose(scores.ambiguity(probs),
                               [-(0.25 * np.log(0.25) + 0.75 * np.log(0.75)), np.log(2)])
    np.testing.assert_allclose(scores.priority(target, probs),
                               scores.noisiness(target, probs) - scores.ambiguity(probs))


def test_flipped_label_in_clean_cluster_ranks_first():
    x, y = clusters()
    y_noisy = y.copy()
    y_noisy[7] = 2
    res = score_dataset(dataset(x, y_noisy), x, seed=0)
    table = res.table
    assert table["priority"].idxmax() == 7 and table["noisiness"].idxmax() == 7
    assert table["review_score"].idxmax() == 7 and table["review_score"].between(0, 1).all()
    assert table.loc[7, "suggested_label"] == "c0"
    assert "label_error" in table.loc[7, "issues"] and table.loc[7, "flagged"]
    assert res.stats["label_error_count"] >= 1


def test_disagreeing_annotators_rank_below_a_clear_error():
    x, y = clusters()
    counts = np.eye(3, dtype=np.float32)[y]
    counts[3] = [1, 1, 0]          # two annotators disagree on sample 3 (truly class 0)
    y2 = y.copy()
    y2[10] = 1                     # a clear single-annotator error on sample 10
    counts[10] = [0, 1, 0]
    table = score_dataset(dataset(x, y2, counts=counts), x, seed=0).table
    assert table.loc[3, "priority"] < table.loc[10, "priority"]
    assert table.loc[3, "noisiness"] < table.loc[10, "noisiness"]
    assert table.loc[3, "review_score"] < table.loc[10, "review_score"]


def test_exact_duplicates_with_different_labels_and_across_splits():
    x, y = clusters(spread=0.6)
    x = np.concatenate([x, x[[5, 70]]])
    y = np.concatenate([y, [1, y[70]]])           # a copy of sample 5 labelled otherwise
    splits = [""] * 180 + ["", ""]
    splits[70], splits[181] = "train", "test"     # a copy of sample 70 in the other split
    table = score_dataset(dataset(x, y, splits=splits), x, seed=0).table
    assert table.loc[5, "dup_group"] == table.loc[180, "dup_group"] >= 0
    assert "conflicting_duplicate" in table.loc[180, "issues"]
    assert "leak" in table.loc[181, "issues"] and "leak" in table.loc[70, "issues"]
    assert "leak" not in table.loc[180, "issues"]
    assert (table["dup_group"] >= 0).sum() == 4


def test_far_away_point_is_top_outlier():
    x, y = clusters()
    far = np.zeros((1, x.shape[1]), np.float32)
    far[0, 0] = 1.0
    far[0] -= x.mean(0)  # opposite to the data
    far /= np.linalg.norm(far)
    x2 = np.concatenate([x, far])
    y2 = np.concatenate([y, [0]])
    graph = knn(x2, k=5, seed=0)
    s = outlier_scores(graph)
    assert s.argmax() == 180
    assert outlier_flags(s)[180] and outlier_flags(s).sum() <= 3
    table = score_dataset(dataset(x2, y2), x2, seed=0).table
    assert "outlier" in table.loc[180, "issues"] and table.loc[180, "outlier_percentile"] == 100


def test_knn_excludes_self_even_for_identical_rows():
    x = np.repeat(np.eye(3, dtype=np.float32), 2, axis=0)
    g = knn(x, k=1, chunk=4, seed=0)
    assert (g.indices[:, 0] == [1, 0, 3, 2, 5, 4]).all()
    assert np.allclose(g.similarities, 1.0)
    labels = np.array([0, 1, 2, 2, 1, 1])
    np.testing.assert_allclose(knn_disagreement(labels, g), [1, 1, 0, 0, 0, 0])
    groups = duplicate_groups(g, threshold=0.99)
    assert groups.tolist() == [0, 0, 1, 1, 2, 2]
    assert group_flags(groups, labels).tolist() == [True, True, False, False, False, False]


@pytest.mark.parametrize("method", ["linear", "graph"])
def test_posteriors_are_out_of_sample(method):
    """A sample's own label never moves its posterior: change it, and its row stays put."""
    x, y = clusters(seed=1)
    xp = project(x, seed=0)
    graph = knn(x, k=8, seed=0)
    folds = stratified_folds(y, seed=0)

    def run(labels):
        counts = np.eye(3)[labels]
        if method == "linear":
            return linear_posteriors(xp, counts, folds, seed=0)
        return graph_posteriors(graph, counts, folds)

    base = run(y)
    y2 = y.copy()
    y2[0] = 2
    moved = run(y2)
    np.testing.assert_allclose(moved[0], base[0], atol=1e-4)
    assert np.abs(moved - base).max() > 1e-4  # other samples did see the change
    np.testing.assert_allclose(base.sum(1), 1.0, atol=1e-6)


def test_repeated_folds_average_out_of_sample_runs():
    """The linear method averages K-fold runs on differently seeded splits (each one out of
    sample, test above), seeded from the scan's seed."""
    x, y = clusters(seed=2)
    xp, graph = project(x, seed=0), knn(x, k=8, seed=0)

    def run(labels, repeats):
        return compute_posteriors(xp, graph, np.eye(3)[labels], labels, method="linear",
                                  seed=4, repeats=repeats).probs

    base = run(y, 3)
    parts = [linear_posteriors(xp, np.eye(3)[y], stratified_folds(y, seed=s), seed=0)
             for s in (4, 5, 6)]
    np.testing.assert_allclose(base, np.mean(parts, axis=0), atol=1e-6)
    np.testing.assert_allclose(run(y, 1), parts[0], atol=1e-6)
    assert np.abs(base - parts[0]).max() > 1e-4  # the other splits do contribute
    with pytest.raises(DqauditError, match="at least 1"):
        run(y, 0)


def test_unknown_posterior_method_lists_valid_ones():
    x, y = clusters()
    with pytest.raises(DqauditError, match="linear, graph, ensemble"):
        compute_posteriors(project(x, seed=0), knn(x, seed=0), np.eye(3)[y], y, method="magic",
                           seed=0)


def test_stratified_folds_balance_classes():
    y = np.repeat(np.arange(3), [50, 20, 7])
    folds = stratified_folds(y, n_folds=5, seed=0)
    for c in range(3):
        sizes = np.bincount(folds[y == c], minlength=5)
        assert sizes.max() - sizes.min() <= 1
    assert (stratified_folds(y, seed=0) == folds).all()


def test_batched_probes_match_single_fits():
    x, y = clusters(n_per=40)
    xp = project(x, seed=0)
    targets = np.eye(3)[y]
    masks = np.stack([np.arange(120) % 3 != k for k in range(3)]).astype(np.float32)
    cfg = ProbeConfig(max_iter=300)
    w, b = fit_probes(xp, targets, masks, config=cfg)
    together = predict_proba(xp, w, b, config=cfg)
    for m in range(3):
        w1, b1 = fit_probes(xp, targets, masks[m:m + 1], config=cfg)
        alone = predict_proba(xp, w1, b1, config=cfg)[0]
        np.testing.assert_allclose(together[m], alone, atol=2e-3)


def test_weighted_confident_joint_equals_the_joint_of_the_resampled_rows():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 4, 300)
    probs = rng.dirichlet(np.ones(4) * 0.5, 300)
    weights = rng.multinomial(300, np.full(300, 1 / 300))
    rows = np.repeat(np.arange(300), weights)  # the same bootstrap resample, row by row
    np.testing.assert_allclose(scores.confident_joint(labels, probs, weights),
                               scores.confident_joint(labels[rows], probs[rows]), atol=1e-9)
    assert scores.label_error_fraction(labels, probs, weights) == pytest.approx(
        scores.estimate_label_error_count(labels[rows], probs[rows]) / 300, abs=1 / 300)
    assert scores.label_error_fraction(labels, probs) == pytest.approx(
        scores.estimate_label_error_count(labels, probs) / 300, abs=1 / 300)


def test_confident_joint_counts_known_noise():
    x, y = clusters(n_per=100, n_classes=4, spread=0.1, seed=3)
    rng = np.random.default_rng(0)
    y_noisy = y.copy()
    flip = rng.choice(len(y), 40, replace=False)
    y_noisy[flip] = (y[flip] + 1 + rng.integers(0, 3, 40)) % 4
    folds = stratified_folds(y_noisy, seed=0)
    probs = linear_posteriors(project(x, seed=0), np.eye(4)[y_noisy], folds, seed=0)
    n = scores.estimate_label_error_count(y_noisy, probs)
    assert 30 <= n <= 50
    res = score_dataset(dataset(x, y_noisy), x, seed=0)
    flagged = res.table["issues"].map(lambda v: "label_error" in v).to_numpy()
    assert (flagged & (y_noisy != y)).sum() >= 0.85 * 40  # recall
    assert (flagged & (y_noisy == y)).sum() <= 8             # few false alarms


def test_noise_model_error_probability_uses_the_noise_structure():
    # given label 0 is often really class 1 (cat/dog), never class 2
    joint = np.array([[80.0, 20.0, 0.0], [20.0, 80.0, 0.0], [0.0, 0.0, 100.0]])
    labels = np.array([0, 0])
    probs = np.array([[0.4, 0.6, 0.0], [0.4, 0.0, 0.6]])
    err = scores.noise_model_error_probability(labels, probs, joint)
    # same disagreement with the label, but only the first is towards a known confusion
    assert err[0] > 0.25 and err[1] < 0.01  # 1 - 0.32 / (0.32 + 0.12) = 0.27
    # by hand: T = column-normalised joint (+ smoothing), P(wrong) = 1 - p_y T_yy / sum p_j T_yj
    t = (joint + 1e-3) / (joint + 1e-3).sum(axis=0)
    expected = 1 - 0.4 * t[0, 0] / (0.4 * t[0, 0] + 0.6 * t[0, 1])
    assert err[0] == pytest.approx(expected)
    # with symmetric uniform noise it ranks exactly as the posterior of the given label does
    uniform = np.full((3, 3), 5.0) + np.eye(3) * 85
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=50)
    y = rng.integers(0, 3, 50)
    e = scores.noise_model_error_probability(y, p, uniform)
    assert (np.argsort(e, kind="stable") == np.argsort(-p[np.arange(50), y], kind="stable")).all()
    # mean_rank: an ensemble of orderings, blind to scale
    np.testing.assert_array_equal(scores.mean_rank(np.array([1.0, 5, 3]), np.array([30.0, 10, 20])),
                                  [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(scores.mean_rank(np.array([0.1, 0.2, 0.3])), [0, 1, 2])


def test_review_score_orders_clear_errors_first_and_breaks_priority_ties_by_the_noise_model():
    joint = np.array([[80.0, 20.0, 0.0], [20.0, 80.0, 0.0], [0.0, 0.0, 100.0]])
    labels = np.array([0, 0, 0, 0])
    target = np.eye(3)[labels]
    probs = np.array([[0.05, 0.95, 0.0],    # clear error towards a known confusion
                      [0.05, 0.0, 0.95],    # as clear, towards a confusion never seen
                      [0.4, 0.3, 0.3],      # ambiguous
                      [0.9, 0.05, 0.05]])   # agrees with its label
    r = scores.review_score(scores.priority(target, probs),
                            scores.noise_model_error_probability(labels, probs, joint))
    # samples 0 and 1 tie on priority; the noise model puts the known confusion first
    assert scores.priority(target, probs)[0] == pytest.approx(scores.priority(target, probs)[1])
    assert r[0] == r.max() > r[1] and r[3] == r.min()
    assert r.min() >= 0 and r.max() <= 1
    # by hand: ranks of priority (stable) [2, 3, 1, 0], of the noise model [3, 0, 2, 1]
    np.testing.assert_allclose(r, np.array([2.5, 1.5, 1.5, 0.5]) / 3)


def test_find_label_errors_takes_the_estimated_count_in_the_flag_order():
    # 3 classes, 10 samples each; the posteriors agree with every label except samples 0-2
    labels = np.repeat(np.arange(3), 10)
    probs = np.full((30, 3), 0.05)
    probs[np.arange(30), labels] = 0.9
    probs[0] = [0.02, 0.96, 0.02]   # clear errors: the model is sure they are class 1
    probs[1] = [0.04, 0.92, 0.04]
    probs[2] = [0.40, 0.15, 0.45]   # prefers class 2, but below class 2's confidence threshold
    target = np.eye(3)[labels]
    found = scores.find_label_errors(labels, target, probs)
    # the count is the confident joint's off-diagonal mass, not a fixed top-k: samples 0 and
    # 1 reach class 1's threshold (0.9), sample 2 no other class's; row 0 holds 9 counted
    # samples, rescaled to its 10: 2 x 10 / 9 = 2.2 -> 2
    assert scores.off_diagonal(found.joint) == pytest.approx(20 / 9)
    assert found.count == 2
    flagged = np.flatnonzero(found.flags)
    np.testing.assert_array_equal(flagged, [0, 1])
    # only samples whose posterior prefers another class can be flagged
    assert not found.flags[probs.argmax(axis=1) == labels].any()
    np.testing.assert_allclose(found.noise_model,
                               scores.noise_model_error_probability(labels, probs, found.joint))


def test_review_score_is_what_the_cleaning_simulation_ranks_by():
    """The scan's review order comes from the posteriors the simulation's selector refits
    (one fold split, no correction rounds), so the queue is the order that was measured."""
    from dqaudit.workflows.simulation import _model_priority

    x, y = clusters(seed=4)
    y_noisy = y.copy()
    y_noisy[[3, 70, 150]] = [1, 2, 0]
    data = dataset(x, y_noisy)
    table = score_dataset(data, x, method="linear", seed=0).table
    selector = _model_priority("linear", project(x, seed=0), None,
                               stratified_folds(y_noisy, seed=0), "cpu")
    np.testing.assert_allclose(table["review_score"], selector(data.label_counts), atol=1e-9)
    # and it still puts the planted errors first
    assert set(table["review_score"].nlargest(3).index) == {3, 70, 150}


def test_importance_in_unit_range_and_high_for_errors():
    x, y = clusters(n_per=80, seed=4)
    y2 = y.copy()
    y2[:8] = 1
    table = score_dataset(dataset(x, y2), x, seed=0).table
    imp = table["importance"].to_numpy()
    assert imp.min() >= 0 and imp.max() == pytest.approx(1.0)
    assert np.median(imp[:8]) > np.quantile(imp[8:], 0.9)


def test_graph_posteriors_follow_neighbours():
    x, y = clusters()
    folds = stratified_folds(y, seed=0)
    p = graph_posteriors(knn(x, k=8, seed=0), np.eye(3)[y], folds)
    assert (p.argmax(1) == y).mean() > 0.95


def test_scores_are_deterministic():
    x, y = clusters()
    a = score_dataset(dataset(x, y), x, seed=3).table
    b = score_dataset(dataset(x, y), x, seed=3).table
    assert a.equals(b)


def test_ambiguous_means_nearly_tied_between_two_classes():
    """The tag is the stated rule (top-two margin under 0.1, not a suspected error), not a
    spread posterior: a confident-but-spread sample is not ambiguous, a near tie is."""
    y = np.repeat(np.arange(3), 10)
    probs = np.full((30, 3), 0.05)
    probs[np.arange(30), y] = 0.9
    probs[1] = [0.46, 0.44, 0.10]   # nearly tied between its label and another class
    probs[2] = [0.50, 0.25, 0.25]   # spread (high entropy) but a clear first choice
    table = score_dataset(dataset(np.zeros((30, 2)), y), None, pred_probs=probs, seed=0).table
    tags = table["issues"].map(list)
    assert "ambiguous" in tags[1] and "ambiguous" not in tags[2]
    assert sum("ambiguous" in t for t in tags) == 1


def test_the_checks_registry_gates_suppresses_and_orders_the_issues():
    """scoring.checks is the one list of issue types: a check whose switch is off sets nothing,
    a suppressor clears its hits (junk is never a label error nor ambiguous, a label error is
    never ambiguous), `flagged` is every flagging check, and docs/scores.md names each one."""
    from pathlib import Path

    from dqaudit.scoring.checks import BY_NAME, CHECKS, REGISTRY, flagged, issue_masks

    n = 4
    raw = {c.name: np.ones(n, dtype=bool) for c in REGISTRY}
    raw["blank"] = np.array([True, False, False, False])
    raw["low_information"] = np.zeros(n, dtype=bool)
    raw["label_error"] = np.array([True, True, False, False])
    masks = issue_masks(raw, checked=CHECKS)
    assert list(masks) == [c.name for c in REGISTRY]
    assert masks["label_error"].tolist() == [False, True, False, False]  # junk suppresses
    assert masks["ambiguous"].tolist() == [False, False, True, True]  # and a label error
    off = issue_masks(raw, checked=("labels",))
    assert not any(off[c.name].any() for c in REGISTRY if c.group in ("duplicates", "images"))
    assert off["outlier"].all() and off["box_outside"].all()  # no switch: always run
    only_ambiguous = {"ambiguous": np.ones(n, dtype=bool), "label_error": np.zeros(n, bool)}
    assert not flagged(issue_masks(only_ambiguous, checked=CHECKS)).any()
    assert not BY_NAME["ambiguous"].flags and all(c.flags for c in REGISTRY
                                                   if c.name != "ambiguous")
    doc = (Path(__file__).resolve().parents[1] / "docs" / "scores.md").read_text()
    assert [c.name for c in REGISTRY if f"`{c.name}`" not in doc] == []
