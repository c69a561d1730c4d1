"""The dataset type: the one tie rule, validation with clear errors, tied annotations."""

import inspect

import numpy as np
import pandas as pd
import pytest

from dqaudit.config import ScoreConfig
from dqaudit.dataset import LabeledImages, majority_labels, one_hot
from dqaudit.errors import InputError
from dqaudit.io.ingest import load_dataset
from dqaudit.scoring import scores
from dqaudit.scoring.table import score_dataset


def test_majority_with_ties_going_to_the_preferred_annotation():
    counts = np.array([[1, 1, 0], [2, 1, 0], [1, 1, 0], [0, 0, 1], [0, 2, 2]], dtype=float)
    out = majority_labels(counts, prefer=np.array([1, 1, -1, 0, -1]))
    # tie -> preferred; majority beats the preference; tie without one -> lowest index;
    # a preference outside the tie is ignored
    assert out.tolist() == [1, 0, 0, 2, 1]
    assert majority_labels(counts).tolist() == [0, 0, 0, 2, 1]


def _fields(n=3, c=2):
    return dict(paths=[f"/x/{i}.png" for i in range(n)], classes=[f"c{i}" for i in range(c)],
                splits=np.array([""] * n, dtype=object), ids=[str(i) for i in range(n)])


def test_labels_that_are_not_a_majority_of_the_counts_are_refused():
    counts = np.array([[2, 0], [0, 1], [1, 1]], dtype=np.float32)
    with pytest.raises(InputError, match="not a majority of its annotation counts"):
        LabeledImages(labels=np.array([1, 1, 0]), label_counts=counts, **_fields())
    tied = LabeledImages(labels=np.array([0, 1, 1]), label_counts=counts, **_fields())
    assert tied.labels.tolist() == [0, 1, 1]  # either class of a tie is a majority
    built = LabeledImages.from_counts(label_counts=counts, prefer=np.array([-1, -1, 1]),
                                      **_fields())
    assert built.labels.tolist() == [0, 1, 1]


def test_inconsistent_shapes_raise_input_error_not_assert():
    with pytest.raises(InputError, match=r"label_counts have shape \(3, 3\), expected \(3, 2\)"):
        LabeledImages(labels=np.array([0, 1, 0]), label_counts=np.eye(3, dtype=np.float32),
                      **_fields())
    with pytest.raises(InputError, match="class indices"):
        LabeledImages(labels=np.array([0, 1, 5]), label_counts=one_hot(np.array([0, 1, 1]), 2),
                      **_fields())


def test_manifest_counts_tied_label_column_breaks_the_tie(tmp_path, class_tree):
    paths = ["tree/red/red_0.png", "tree/blue/blue_0.png", "tree/green/green_0.png"]
    frame = pd.DataFrame({"path": paths, "label": ["green", "blue", "green"],
                          "n_blue": [0, 2, 1], "n_green": [1, 0, 1], "n_red": [1, 0, 0]})
    frame.to_csv(tmp_path / "m.csv", index=False)
    data = load_dataset(tmp_path / "m.csv")
    assert [data.classes[i] for i in data.labels] == ["green", "blue", "green"]
    frame.loc[1, "label"] = "red"  # outvoted by its own counts: refused, with the fix
    frame.to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(InputError, match="not a majority of its count columns"):
        load_dataset(tmp_path / "m.csv")


def test_review_score_uses_the_given_label_of_a_tied_sample():
    """With counts tied 1-1, the review order follows the given label (the tie rule), not
    the lowest class index that argmax of the counts would pick."""
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=40)
    labels = probs.argmax(axis=1)
    counts = one_hot(labels, 3)
    counts[0] = [1, 1, 0]
    probs[0] = [0.05, 0.9, 0.05]
    a = scores.review_score_of(np.r_[0, labels[1:]], probs, label_counts=counts)
    b = scores.review_score_of(np.r_[1, labels[1:]], probs, label_counts=counts)
    assert a[0] > b[0]  # given label 0 disagrees with the posterior; given label 1 agrees


def test_score_dataset_defaults_to_the_method_scans_use():
    default = inspect.signature(score_dataset).parameters["method"].default
    assert default == ScoreConfig().posterior_method == "linear"


def test_the_verdict_says_when_an_audit_is_too_small_to_quote():
    from dqaudit.estimates.headline import verdict

    def summary(n, smallest):
        return {"n_samples": n, "class_counts": {"a": n - smallest, "b": smallest},
                "label_error_count": 0, "confident_joint_rate": 0.0, "clr": None,
                "issue_counts": {"leak": 0}}

    small = verdict(summary(9, 4), thresholds=(0.02, 0.05))
    assert small["small_sample"] and "Only 9 samples (4 in the smallest class)" in small["text"]
    assert "11.1 points" in small["text"]
    assert verdict(summary(1000, 15), thresholds=(0.02, 0.05))["small_sample"]
    big = verdict(summary(1000, 400), thresholds=(0.02, 0.05))
    assert not big["small_sample"] and "Only" not in big["text"]
