"""Multi-label audits: label sets read from a manifest (sets in a column, 0/1 class columns,
annotators' rows), scored pair by pair (missing and extra classes), reviewed, verified and
reported as sets; every bad input one line."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from dqaudit.api import Audit
from dqaudit.cli import main
from dqaudit.errors import DqauditError, InputError
from dqaudit.io.ingest import load_dataset

REPO = Path(__file__).resolve().parents[1]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def files(class_tree):
    return sorted(str(p) for p in class_tree.rglob("*.png"))  # 12 images


def write(tmp_path, rows, name="m.csv", sep=","):
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False, sep=sep)
    return path


def test_each_form_of_a_set_manifest_reads_the_same_sets(files, tmp_path):
    sets = [["a", "b"], [], ["c"], ["b", "c"]] * 3
    cells = [";".join(s) for s in sets]
    a = load_dataset(write(tmp_path, {"path": files, "tags": cells}), multi_label=True,
                     label_column="tags")
    assert a.multi_label and a.classes == ["a", "b", "c"]
    assert a.label_sets[files.index(files[1])].sum() == 0  # an empty cell is the empty set
    b = load_dataset(write(tmp_path, {"path": files, "tags": [" | ".join(s) for s in sets]},
                           "pipe.csv"), multi_label=True, label_column="tags", label_sep="|")
    columns = {c: [int(c in s) for s in sets] for c in "abc"}
    c = load_dataset(write(tmp_path, {"path": files, **columns}, "cols.csv"),
                     label_columns=("a", "b", "c"))  # 0/1 columns imply --multi-label
    order = {p: i for i, p in enumerate(a.paths)}
    for other in (b, c):
        assert other.classes == a.classes and other.multi_label
        rows = np.array([order[p] for p in other.paths])
        assert (other.label_sets == a.label_sets[rows]).all()
    # annotators' rows: a class is in the set when most of the file's rows mark it
    votes = write(tmp_path, {"path": [files[0]] * 3 + files[1:],
                             "tags": ["a;b", "a", "a;c;c"] + cells[1:]}, "votes.csv")
    v = load_dataset(votes, multi_label=True, label_column="tags")
    first = v.label_sets[v.paths.index(files[0])]
    assert [v.classes[j] for j in np.flatnonzero(first)] == ["a"]
    assert "name a class twice" in v.source["read_as"]


@pytest.mark.parametrize("rows,options,needle", [
    ({"tags": ["a;zebra"] + ["a"] * 11}, {"classes": ("a", "b")}, "'zebra', not one of"),
    ({"tags": ["a"] * 12}, {"classes": ("a;b", "c")}, "contains the set separator"),
    ({"tags": ["a"] * 12, "x": ["2"] * 12}, {"label_columns": ("x",)}, "is not 0 or 1"),
    ({"tags": ["a"] * 12}, {"label_columns": ("nope",)}, "no column 'nope'"),
])
def test_a_bad_set_manifest_is_one_line_naming_the_fix(files, tmp_path, rows, options,
                                                        needle):
    path = write(tmp_path, {"path": files, **rows})
    with pytest.raises(InputError, match=needle):
        load_dataset(path, multi_label=True, label_column="tags", **options)


def test_sets_given_without_multi_label_or_as_folders_are_refused_with_the_fix(files,
                                                                               class_tree,
                                                                               tmp_path):
    path = write(tmp_path, {"path": files, "label": ["red", "blue", "red;blue"] * 4})
    with pytest.raises(InputError, match="pass --multi-label"):
        load_dataset(path)
    with pytest.raises(InputError, match="write a manifest"):
        load_dataset(class_tree, multi_label=True)
    with pytest.raises(InputError, match="separator"):
        load_dataset(path, multi_label=True, label_sep=" ")


def blob_sets(n=300, flips=((0, 0), (1, 1), (2, 2), (3, 0), (4, 1)), seed=0):
    """Embeddings of sets of 3 classes (each class a direction) and the given sets with
    ``flips`` (sample, class) pairs wrong."""
    rng = np.random.default_rng(seed)
    truth = rng.random((n, 3)) < 0.4
    x = rng.normal(size=(n, 16)) * 0.4 + truth.astype(float) @ (3 * np.eye(3, 16))
    given = truth.copy()
    for i, c in flips:
        given[i, c] = ~given[i, c]
    return x.astype(np.float32), truth, given


def test_scores_name_the_missing_and_extra_classes_of_each_wrong_set():
    x, truth, given = blob_sets()
    audit = Audit.from_arrays([list(np.flatnonzero(r)) for r in given], embeddings=x,
                              classes=["cat", "dog", "owl"])
    s = audit.samples
    flagged = set(np.flatnonzero(s["issues"].map(lambda v: "label_error" in v)))
    assert {0, 1, 2, 3, 4} <= flagged and len(flagged) <= 8
    for i, c in ((0, 0), (1, 1), (2, 2), (3, 0), (4, 1)):
        name = ["cat", "dog", "owl"][c]
        column = "extra_labels" if given[i, c] else "missing_labels"
        assert name in s[column].iat[i].split(";")
        assert s["suggested_labels"].iat[i] == ";".join(
            n for n, on in zip(["cat", "dog", "owl"], truth[i]) if on)
    assert (s.loc[~s.index.isin(flagged), "label_error_probability"] < 0.5).all()
    m = audit.summary["multi_label"]
    low, high = m["wrong_set_range"]
    assert low <= 5 / 300 <= high + 0.01 and m["per_class"]["cat"]["flagged_extra"] >= 1
    head = audit.summary["headline"]
    assert head["source"] == "gold-free" and "label sets" in head["text"]
    # one share of wrong sets wherever a script reads it (4.5 estimated here: not rounded)
    assert audit.summary["confident_joint_rate"] == m["wrong_set_share"] == head["rate"]
    assert audit.summary["clr"] is None and audit.summary["estimated_transition_matrix"] is None
    with pytest.raises(DqauditError, match="multi-label audit states"):
        audit.estimate_clr()
    # the user's own independent probabilities (cleanlab's multi-label convention)
    probs = np.clip(truth * 0.9 + 0.05, 0, 1)
    mine = Audit.from_arrays([list(np.flatnonzero(r)) for r in given], pred_probs=probs)
    assert set(np.flatnonzero(mine.samples["issues"].map(lambda v: "label_error" in v))) \
        >= {0, 1, 2, 3, 4}
    with pytest.raises(InputError, match="in \\[0, 1\\]"):
        Audit.from_arrays([list(np.flatnonzero(r)) for r in given], pred_probs=probs * 2)


def test_a_class_no_model_can_learn_is_left_out_with_a_line(tmp_path):
    x, truth, given = blob_sets()
    sets = np.hstack([given, np.ones((len(given), 1), dtype=bool),
                      np.zeros((len(given), 1), dtype=bool)])
    audit = Audit.from_arrays(sets, multi_label=True, embeddings=x,
                              classes=["cat", "dog", "owl", "everywhere", "nowhere"])
    assert audit.dataset.classes == ["cat", "dog", "owl"]
    reasons = audit.dataset.source["classes_left_out"]
    assert any("'everywhere' is present on every sample" in r for r in reasons)
    assert any("'nowhere' is present on no sample" in r for r in reasons)


def test_sets_are_reviewed_verified_saved_and_exported_as_sets(tmp_path):
    x, truth, given = blob_sets()
    names = ["cat", "dog", "owl"]
    text = {f"sample_{i}": ";".join(n for n, on in zip(names, r) if on) or "(none)"
            for i, r in enumerate(truth)}
    audit = Audit.from_arrays([list(np.flatnonzero(r)) for r in given], embeddings=x,
                              classes=names, out_dir=tmp_path / "a")
    queue = audit.review_queue(budget=6, thumbnails=False)
    assert {"missing_labels", "extra_labels", "suggested_labels"} <= set(queue.columns)
    fixed = queue.assign(correct_label=[text[i] for i in queue["id"]])
    # the audit fitted these posteriors, so a re-rank fits them again on the corrected sets
    # (they once read as a user's pred_probs and stayed as scanned)
    assert audit.summary["posterior_method"] == "linear" and not audit.user_probs
    before = audit.probs.copy()
    rec = audit.apply_corrections(fixed, annotator="ana")
    assert not np.allclose(audit.probs, before)
    assert rec["label_changes"] >= 5 and audit.summary["label_error_count"] <= 3
    # the summary counts the same changes the ledger made (the headline's staleness reads it)
    assert audit.summary["label_changes"] == rec["label_changes"] == \
        audit.summary["corrections"]["label_changes"]
    notes = set(audit.changelog["note"])
    assert any(n.startswith("added ") or n.startswith("removed ") for n in notes)
    with pytest.raises(InputError, match="'zebra' is not a class"):
        audit.apply_corrections(pd.DataFrame({"id": ["sample_9"], "label": ["cat;zebra"]}))
    drawn = audit.draw_verification_sample(size=40)
    sample = audit.verify_sample.assign(verified_label=[text[i] for i in
                                                        audit.verify_sample["id"]])
    v = audit.apply_verified(sample)
    assert v["n_verified"] == 40 and drawn["n_drawn"] == 40
    assert audit.summary["headline"]["source"] == "verified"
    back = Audit.load(tmp_path / "a")
    assert back.dataset.multi_label and back.samples["label"].tolist() == \
        audit.samples["label"].tolist()
    out = back.export(to="csv", dest=str(tmp_path / "clean.csv"))
    exported = pd.read_csv(tmp_path / "clean.csv", keep_default_na=False)
    assert out["n_samples"] == 300 and exported["label"].iat[0] == audit.samples["label"].iat[0]
    with pytest.raises(DqauditError, match="one class per image; export label sets"):
        back.export(to="folder", dest=str(tmp_path / "x"))


def test_the_multi_label_sample_scans_and_reports_sets(tmp_path):
    data = tmp_path / "ml"
    shutil.copytree(REPO / "sample_data" / "multilabel", data)
    out = tmp_path / "audit"
    res = run("scan", data / "manifest.csv", "--multi-label", "--out", out, "--model", "lite0",
              "--num-workers", "0", "--no-pdf", "--json", "--quiet")
    assert res.exit_code == 0, res.output
    envelope = json.loads(res.output)
    assert "label sets" in envelope["headline"]["text"]
    samples = pd.read_parquet(out / "samples.parquet")
    truth = pd.read_csv(data / "manifest.csv", keep_default_na=False)
    wrong = dict(zip(truth["path"].map(lambda p: p.split("/")[-1]), truth["corrupted"]))
    flagged = samples["issues"].map(lambda v: "label_error" in v).to_numpy()
    hits = samples["path"].map(lambda p: wrong[p.split("/")[-1]]).to_numpy().astype(bool)
    assert (flagged & hits).sum() >= 0.5 * hits.sum()  # most wrong sets are found
    assert (flagged & hits).sum() >= 0.6 * flagged.sum()  # and most flags are right
    html = (out / "report.html").read_text()
    assert "missing and extra classes" in html and "Class co-occurrence" in html
    assert "transitions" not in html
    res = run("relabel", "queue", out, "--budget", "5")
    assert res.exit_code == 0, res.output


def test_sets_are_written_into_fiftyone_and_reviewed_from_the_app(tmp_path):
    """A multi-label audit's FiftyOne dataset: the label field as Classifications whose members
    the audit finds extra carry dq_extra, the missing classes in dq_missing, the suggested set
    in dq_suggested, the suspects view; the App's review sets a whole set."""
    import uuid

    from dqaudit.cli.app import apply_label, mark_reviewed
    from dqaudit.io.fiftyone_io import import_fiftyone

    fo = import_fiftyone()
    data = tmp_path / "ml"
    shutil.copytree(REPO / "sample_data" / "multilabel", data)
    name = f"dqaudit-test-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "audit"
    try:
        res = run("scan", data / "manifest.csv", "--multi-label", "--out", out, "--model",
                  "lite0", "--num-workers", "0", "--no-report", "--fiftyone", name, "--quiet")
        assert res.exit_code == 0, res.output
        samples = pd.read_parquet(out / "samples.parquet").set_index("path")
        dataset = fo.load_dataset(name)
        suspects = dataset.load_saved_view("dq_suspects")
        assert len(suspects) == int(samples["flagged"].sum())
        for s in suspects:
            row = samples.loc[s.filepath]
            given = [c.label for c in s.ground_truth.classifications]
            assert ";".join(given) == row["label"]
            extra = {c.label for c in s.ground_truth.classifications if c.dq_extra}
            assert extra == set(filter(None, row["extra_labels"].split(";")))
            assert [c.label for c in s.dq_missing.classifications] == \
                [c for c in row["missing_labels"].split(";") if c]
            assert ";".join(c.label for c in s.dq_suggested.classifications) == \
                row["suggested_labels"]
        first, second = suspects.values("id")[:2]
        assert mark_reviewed(dataset, [first], annotator="ana") == 1
        apply_label(dataset, [second], "circle;star", annotator="ana")
        assert [c.label for c in fo.load_dataset(name)[second].ground_truth.classifications] \
            == ["circle", "star"]
        changelog = pd.read_csv(out / "changelog.csv", keep_default_na=False)
        assert changelog["new_label"].tolist()[-1] == "circle;star"
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


def test_sets_are_read_from_a_fiftyone_classifications_field_and_written_back(tmp_path):
    """A FiftyOne Classifications field is read as label sets (--multi-label implied): an empty
    Classifications is the empty set, a sample without the field is skipped; the audit's
    fields go back into the same dataset, the user's members marked dq_extra, kept."""
    import uuid

    from dqaudit.io.fiftyone_io import import_fiftyone

    fo = import_fiftyone()
    data = tmp_path / "ml"
    shutil.copytree(REPO / "sample_data" / "multilabel", data)
    rows = pd.read_csv(data / "manifest.csv", keep_default_na=False).head(90)
    name = f"dqaudit-test-{uuid.uuid4().hex[:8]}"
    dataset = fo.Dataset(name)
    try:
        samples = []
        for k, r in rows.iterrows():
            sample = fo.Sample(filepath=str(data / r["path"]), tags=[r["split"]])
            if k == 7:  # an empty Classifications: the empty set
                rows.loc[k, "labels"] = ""
            if k != 5:  # sample 5 has no answer at all
                sample["ground_truth"] = fo.Classifications(classifications=[
                    fo.Classification(label=c, confidence=0.9) for c in r["labels"].split(";")
                    if c and k != 7])
            samples.append(sample)
        dataset.add_samples(samples, progress=False)
        ds = load_dataset(name, from_fiftyone=True)
        assert ds.multi_label and len(ds) == 89
        assert ds.skipped[0]["reason"] == "no label set in field 'ground_truth'"
        wanted = {str(data / p): s for p, s in zip(rows["path"], rows["labels"])}
        got = {p: ";".join(c for c, on in zip(ds.classes, r) if on)
               for p, r in zip(ds.paths, ds.label_sets)}
        assert all(got[p] == wanted[p] for p in got)
        assert any(v == "" for v in got.values())  # the empty set is read as a set
        # bad input: --multi-label on a single-label field, an unknown class
        dataset.add_sample_field("single", fo.EmbeddedDocumentField,
                                 embedded_doc_type=fo.Classification)
        with pytest.raises(InputError, match="one label; label sets"):
            load_dataset(name, from_fiftyone=True, label_field="single", multi_label=True)
        with pytest.raises(InputError, match="not one of the classes given"):
            load_dataset(name, from_fiftyone=True, classes=("circle", "square"))
        out = tmp_path / "audit"
        res = run("scan", name, "--from-fiftyone", "--out", out, "--model", "lite0",
                  "--num-workers", "0", "--no-report", "--quiet")
        assert res.exit_code == 0, res.output
        table = pd.read_parquet(out / "samples.parquet").set_index("id")
        dataset = fo.load_dataset(name)
        for s in dataset.load_saved_view("dq_suspects"):
            row = table.loc[s.id]
            members = s.ground_truth.classifications
            assert [c.confidence for c in members] == [0.9] * len(members)  # the user's kept
            extra = {c.label for c in members if c.dq_extra}
            assert extra == set(filter(None, row["extra_labels"].split(";")))
            assert [c.label for c in s.dq_missing.classifications] == \
                [c for c in row["missing_labels"].split(";") if c]
        assert len(dataset.load_saved_view("dq_suspects")) == int(table["flagged"].sum()) > 0
        # relabel export --to fiftyone writes the sets as Classifications, read back as sets
        audit = Audit.load(out)
        audit.apply_corrections(pd.DataFrame({"id": [table.index[0]], "label": ["(none)"]}))
        audit.export(to="fiftyone", dest=name + "-clean")
        back = load_dataset(name + "-clean", from_fiftyone=True)
        now = dict(zip(audit.samples["path"], audit.samples["label"]))
        assert {p: ";".join(c for c, on in zip(back.classes, r) if on)
                for p, r in zip(back.paths, back.label_sets)} == now
        assert now[audit.samples["path"].iat[0]] == ""
    finally:
        for n in (name, name + "-clean"):
            if fo.dataset_exists(n):
                fo.delete_dataset(n)
