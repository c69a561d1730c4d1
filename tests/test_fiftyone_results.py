"""Results in FiftyOne's real database: fields, saved views, re-runs, and the plugin executed
through FiftyOne's own operator machinery."""

import json
import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from dqaudit.cli import main
from dqaudit.cli.fiftyone import install_plugin
from dqaudit.io.fiftyone_io import import_fiftyone
from dqaudit.io.fiftyone_runs import SUSPECTS_VIEW

fo = import_fiftyone()


@pytest.fixture
def fo_name():
    name = f"dqaudit-test-{uuid.uuid4().hex[:8]}"
    yield name
    if fo.dataset_exists(name):
        fo.delete_dataset(name)


def scan(*args):
    res = CliRunner().invoke(main, ["scan", *map(str, args), "-q", "--num-workers", "0",
                                    "--no-pdf"], catch_exceptions=False)
    assert res.exit_code == 0, res.output


@pytest.fixture
def mislabelled_tree(class_tree):
    (class_tree / "red" / "red_0.png").rename(class_tree / "blue" / "really_red.png")
    return class_tree


def test_scan_writes_fields_and_views(mislabelled_tree, tmp_path, fo_name):
    scan(mislabelled_tree, "--out", tmp_path / "o", "--fiftyone", fo_name)
    ds = fo.load_dataset(fo_name)
    assert len(ds) == 12
    for field in ("dq_noisiness", "dq_ambiguity", "dq_priority", "dq_review_score",
                  "dq_importance", "dq_suggested", "dq_outlier", "dq_dup_group", "dq_issues",
                  "dq_flagged", "dq_embedding"):
        assert ds.has_sample_field(field), field
    samples = pd.read_parquet(tmp_path / "o" / "samples.parquet")
    by_path = dict(zip(*ds.values(["filepath", "dq_priority"])))
    np.testing.assert_allclose([by_path[p] for p in samples["path"]], samples["priority"])
    by_path = dict(zip(*ds.values(["filepath", "dq_review_score"])))
    np.testing.assert_allclose([by_path[p] for p in samples["path"]], samples["review_score"])
    sample = ds.match(fo.ViewField("filepath").ends_with("really_red.png")).first()
    assert sample.ground_truth.label == "blue" and sample.dq_suggested.label == "red"
    assert "label_error" in sample.dq_issues
    assert len(sample.dq_embedding) == 624 + 680  # the default encoder, lite0+lite2
    suspects = ds.load_saved_view(SUSPECTS_VIEW)
    assert len(suspects) == int(samples["flagged"].sum()) >= 1
    order = suspects.values("dq_review_score")  # the order of `dqaudit relabel queue`
    assert order == sorted(order, reverse=True)
    queue = samples[samples["flagged"]].sort_values("review_score", ascending=False,
                                                     kind="stable")  # ties in row order
    assert suspects.values("filepath") == queue["path"].tolist()
    assert "dq_review_score" in ds.info["dqaudit"]["fields"]
    assert suspects.first().filepath.endswith("really_red.png")
    assert ds.has_saved_view("dq_ambiguous")
    assert ds.info["dqaudit"]["label_error_count"] == int(
        samples["issues"].map(lambda v: "label_error" in v).sum())


def test_rerun_replaces_instead_of_duplicating(mislabelled_tree, tmp_path, fo_name):
    scan(mislabelled_tree, "--out", tmp_path / "o1", "--fiftyone", fo_name)
    gone = mislabelled_tree / "green" / "green_3.png"
    gone.unlink()
    scan(mislabelled_tree, "--out", tmp_path / "o2", "--fiftyone", fo_name)
    ds = fo.load_dataset(fo_name)
    assert len(ds) == 12  # nothing duplicated; the removed file's sample stays, unscored
    stale = ds.match(fo.ViewField("filepath") == str(gone)).first()
    assert stale.dq_priority is None and stale.dq_flagged is None
    assert ds.list_saved_views() == ["dq_suspects", "dq_ambiguous", "dq_image_issues"]
    assert ds.info["dqaudit"]["n_samples"] == 11


def test_audit_from_fiftyone_writes_back_to_same_samples(mislabelled_tree, tmp_path, fo_name):
    ds = fo.Dataset(fo_name)
    ds.add_samples([fo.Sample(filepath=str(p), ground_truth=fo.Classification(
        label=p.parent.name)) for p in sorted(mislabelled_tree.rglob("*.png"))])
    ids_before = sorted(ds.values("id"))
    scan(fo_name, "--from-fiftyone", "--out", tmp_path / "o")
    ds.reload()
    assert sorted(ds.values("id")) == ids_before
    assert all(v is not None for v in ds.values("dq_priority"))


def test_plugin_is_discovered_and_operators_execute(mislabelled_tree, tmp_path, fo_name,
                                                    monkeypatch):
    import fiftyone.operators as foo
    import fiftyone.plugins as fop

    import dqaudit.workflows.review as fio  # Audit.to_fiftyone's writer

    writes = []
    write_results = fio.write_results
    monkeypatch.setattr(fio, "write_results",
                        lambda *a, **k: writes.append(a[1]) or write_results(*a, **k))

    assert "@dqaudit/dqaudit" in [p.name for p in fop.list_plugins()]
    ds = fo.Dataset(fo_name)
    ds.add_samples([fo.Sample(filepath=str(p), ground_truth=fo.Classification(
        label=p.parent.name)) for p in sorted(mislabelled_tree.rglob("*.png"))])
    params = {"label_field": "ground_truth", "model": "lite0", "device": "cpu", "pdf": False,
              "clr": True, "clr_repeats": 3}
    view = ds.match(fo.ViewField("ground_truth.label") != "green")
    # the App opens on a view, but the audit's default target is the whole dataset
    result = foo.execute_operator("@dqaudit/dqaudit/run_audit", ctx={
        "dataset": ds, "view": view,
        "params": {**params, "out_dir": str(tmp_path / "app-run")}})
    out = result.result
    assert out["n_samples"] == 12 and out["label_error_count"] >= 1
    assert out["suspects_view"] == SUSPECTS_VIEW and "Only 12 samples" in out["verdict"]
    summary = json.loads((tmp_path / "app-run" / "summary.json").read_text())
    from dqaudit.estimates.headline import headline
    assert out["estimated_noise_rate"] == headline(summary)["rate"]
    assert writes == [fo_name]  # the results are written to FiftyOne once per run
    assert (tmp_path / "app-run" / "report.html").exists()
    assert summary["clr"]["repeats"] == 3
    ds.reload()
    assert ds.match(fo.ViewField("dq_priority") != None).count() == 12  # noqa: E711
    suspects = ds.load_saved_view(SUSPECTS_VIEW).values("id")
    priority = ds.values("dq_priority")

    # a sub-audit of the current view: its own fields, views and run, the dataset's untouched
    sub = foo.execute_operator("@dqaudit/dqaudit/run_audit", ctx={
        "dataset": ds, "view": view,
        "params": {**params, "target": "view", "run": "no_green",
                   "out_dir": str(tmp_path / "app-view")}}).result
    assert sub["n_samples"] == 8 and "Only 8 samples" in sub["verdict"]
    assert sub["suspects_view"] == "dq_no_green_suspects"
    ds.reload()
    assert ds.load_saved_view(SUSPECTS_VIEW).values("id") == suspects
    assert ds.values("dq_priority") == priority
    assert ds.info["dqaudit"]["n_samples"] == 12 and ds.info["dqaudit_no_green"]["n_samples"] == 8
    assert ds.match(fo.ViewField("dq_no_green_priority") != None).count() == 8  # noqa: E711
    assert ds.has_saved_view("dq_no_green_suspects")
    assert sorted(ds.list_runs(method="dqaudit")) == ["dqaudit", "dqaudit_no_green"]
    removed = CliRunner().invoke(main, ["fiftyone", "delete", fo_name, "--run", "no_green"])
    assert removed.exit_code == 0, removed.output
    ds.reload()
    assert ds.list_runs(method="dqaudit") == ["dqaudit"] and "dqaudit_no_green" not in ds.info
    assert not ds.has_saved_view("dq_no_green_suspects") and ds.has_saved_view(SUSPECTS_VIEW)
    assert not [f for f in ds.get_field_schema() if f.startswith("dq_no_green_")]
    assert ds.values("dq_priority") == priority
    bad = foo.execute_operator("@dqaudit/dqaudit/run_audit", ctx={
        "dataset": ds, "view": view,
        "params": {**params, "target": "view", "run": "Bad Name!"}}).result
    assert "run name 'Bad Name!'" in bad["error"]

    clr = foo.execute_operator("@dqaudit/dqaudit/estimate_clr", ctx={
        "dataset": ds, "params": {"repeats": 3, "mode": "uniform"}}).result
    assert 0 <= clr["ci_low"] <= clr["estimate"] <= clr["ci_high"] <= 1
    ds.reload()
    assert ds.info["dqaudit"]["clr"]["estimate"] == clr["estimate"]

    exported = foo.execute_operator("@dqaudit/dqaudit/export_report", ctx={
        "dataset": ds, "params": {"path": str(tmp_path / "exported"), "pdf": False}}).result
    assert (tmp_path / "exported" / "report.html").exists() and "html" in exported

    # the verification sample, drawn and checked in the App
    drawn = foo.execute_operator("@dqaudit/dqaudit/draw_verification", ctx={
        "dataset": ds, "params": {"size": 4}}).result
    assert drawn["n_drawn"] == 4
    ds.reload()
    to_check = ds.load_saved_view("dq_verify")
    assert len(to_check) == 4 and to_check.count_sample_tags().get("dq_verify") == 4
    checked = foo.execute_operator("@dqaudit/dqaudit/verify_selected", ctx={
        "dataset": ds, "selected": to_check.values("id"),
        "params": {"label": "", "annotator": "app-user"}}).result
    assert checked["estimated"] and checked["n_verified"] == 4
    verified = json.loads((tmp_path / "app-run" / "summary.json").read_text())["verified"]
    assert verified["n_verified"] == 4 and verified["n_errors_found"] == 0

    suspect = ds.match(fo.ViewField("filepath").ends_with("really_red.png")).first()
    foo.execute_operator("@dqaudit/dqaudit/apply_label", ctx={
        "dataset": ds, "selected": [suspect.id],
        "params": {"label": "red", "label_field": "ground_truth"}})
    ds.reload()
    suspect = ds[suspect.id]
    assert suspect.ground_truth.label == "red" and suspect.dq_previous_label == "blue"
    assert suspect.dq_reviewed and "dq_reviewed" in suspect.tags
    # App labelling goes through the same corrections ledger as `dqaudit relabel apply`
    book = pd.read_csv(tmp_path / "app-run" / "corrections.csv", dtype=str)
    assert book.iloc[-1]["label"] == "red" and book.iloc[-1]["annotator"] == "FiftyOne App"
    samples = pd.read_parquet(tmp_path / "app-run" / "samples.parquet").set_index("path")
    assert samples.at[suspect.filepath, "label"] == "red"
    n_before = len(book)
    other = ds.exclude([suspect.id]).first()
    foo.execute_operator("@dqaudit/dqaudit/mark_reviewed", ctx={
        "dataset": ds, "selected": [other.id], "params": {}})
    book = pd.read_csv(tmp_path / "app-run" / "corrections.csv", dtype=str)
    assert len(book) == n_before + 1 and book.iloc[-1]["label"] == other.ground_truth.label


def test_plugin_install_copies_the_plugin(tmp_path):
    path = install_plugin(tmp_path / "plugins")
    assert (tmp_path / "plugins" / "dqaudit" / "fiftyone.yml").exists()
    assert path.endswith("dqaudit")


def test_run_is_recorded_with_its_config_and_can_be_removed(mislabelled_tree, tmp_path,
                                                            fo_name):
    scan(mislabelled_tree, "--out", tmp_path / "o", "--fiftyone", fo_name, "--seed", "3")
    ds = fo.load_dataset(fo_name)
    assert ds.list_runs(method="dqaudit") == ["dqaudit"]
    config = ds.get_run_info("dqaudit").config
    assert config.out_dir == str(tmp_path / "o") and config.label_field == "ground_truth"
    assert config.audit_config == json.loads((tmp_path / "o" / "summary.json").read_text())[
        "config"]
    assert config.audit_config["seed"] == 3
    listed = CliRunner().invoke(main, ["fiftyone", "runs", fo_name])
    assert listed.exit_code == 0 and str(tmp_path / "o") in listed.output
    removed = CliRunner().invoke(main, ["fiftyone", "delete", fo_name])
    assert removed.exit_code == 0, removed.output
    ds.reload()
    assert not [f for f in ds.get_field_schema() if f.startswith("dq_")]
    assert not [v for v in ds.list_saved_views() if v.startswith("dq_")]
    assert ds.list_runs() == [] and "dqaudit" not in ds.info
    assert len(ds) == 12 and ds.has_sample_field("ground_truth")


def test_rerank_of_a_fiftyone_audit_records_its_own_label_field(class_tree, tmp_path, fo_name):
    """The re-rank after corrections wrote the run as if the labels were in ground_truth."""
    ds = fo.Dataset(fo_name, persistent=True)
    paths = sorted(str(p) for p in class_tree.rglob("*.png"))
    ds.add_samples([fo.Sample(filepath=p, truth=fo.Classification(label=p.split("/")[-2]))
                    for p in paths], progress=False)
    scan(fo_name, "--from-fiftyone", "--label-field", "truth", "--out", tmp_path / "o",
         "--no-clr")
    samples = pd.read_parquet(tmp_path / "o" / "samples.parquet")
    pd.DataFrame({"id": [samples["id"].iat[0]], "label": [samples["label"].iat[0]]}).to_csv(
        tmp_path / "fix.csv", index=False)
    res = CliRunner().invoke(main, ["relabel", "apply", str(tmp_path / "o"),
                                    str(tmp_path / "fix.csv")])
    assert res.exit_code == 0, res.output
    ds.reload()
    assert ds.get_run_info("dqaudit").config.label_field == "truth"
    assert ds.info["dqaudit"]["label_field"] == "truth"
    assert not ds.has_sample_field("ground_truth")


def test_app_serves_localhost_and_refuses_an_unknown_view(mislabelled_tree, tmp_path, fo_name,
                                                          monkeypatch):
    scan(mislabelled_tree, "--out", tmp_path / "o", "--fiftyone", fo_name, "--no-clr")
    res = CliRunner().invoke(main, ["app", fo_name, "--view", "dq_suspect"])
    assert res.exit_code == 3 and "no saved view 'dq_suspect'" in res.output
    assert "dq_suspects" in res.output  # the error lists the views there are
    seen = {}

    class Session:
        url = "http://localhost:5151/"

        def wait(self, *_):
            return None

    monkeypatch.setattr(fo, "launch_app", lambda shown, **kw: seen.update(kw, n=len(shown))
                        or Session())
    res = CliRunner().invoke(main, ["app", fo_name], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert seen["address"] == "127.0.0.1" and seen["n"] == len(
        fo.load_dataset(fo_name).load_saved_view("dq_suspects"))


def test_the_audit_form_offers_its_targets_and_warns_when_small(fo_name):
    import types

    import fiftyone.operators as foo

    ds = fo.Dataset(fo_name)
    ds.add_samples([fo.Sample(filepath=f"/tmp/dq-form-{i}.png", ground_truth=fo.Classification(
        label="a" if i % 2 else "b")) for i in range(10)])
    ds.save_view("odd", ds.match(fo.ViewField("ground_truth.label") == "a"))
    op = foo.get_operator("@dqaudit/dqaudit/run_audit")
    for params, extra in (({}, set()), ({"target": "view"}, {"run"}),
                          ({"target": "saved_view", "saved_view": "odd"},
                           {"run", "saved_view"})):
        form = op.resolve_input(types.SimpleNamespace(dataset=ds, view=ds.limit(4),
                                                      params=params))
        names = set(form.type.properties)
        assert {"label_field", "target", "small"} <= names and extra <= names
        assert not ({"run", "saved_view"} - extra) & names


def test_evaluate_reads_a_prediction_field_and_records_the_evaluation(mislabelled_tree,
                                                                       tmp_path, fo_name):
    """FiftyOne's convention for predictions: a Classification field; the evaluation lands in
    the run info the App shows."""
    ds = fo.Dataset(fo_name)
    ds.add_samples([fo.Sample(filepath=str(p), ground_truth=fo.Classification(
        label=p.parent.name)) for p in sorted(mislabelled_tree.rglob("*.png"))])
    scan(fo_name, "--from-fiftyone", "--out", tmp_path / "o", "--no-clr")
    ds.reload()
    for sample in ds:  # a model that is right by the file name's colour
        sample["predictions"] = fo.Classification(label=os.path.basename(
            sample.filepath).split("_")[0].replace("really", "red"))
        sample.save()
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path / "o"), "--pred-field",
                                    "predictions", "--json"])
    assert res.exit_code == 0, res.output
    block = json.loads(res.output)["result"]
    (m,) = block["models"]
    assert m["name"] == "predictions" and m["n_predicted"] == 12 and block["split"] is None
    assert m["observed_accuracy"] == round(11 / 12, 4)  # really_red.png is labelled blue
    ds.reload()
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert ds.info["dqaudit"]["headline"] == summary["headline"]  # the one headline, here too
    info = ds.info["dqaudit"]["evaluation"]
    assert info["models"][0]["name"] == "predictions"
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path / "o"), "--pred-field", "nope"])
    assert res.exit_code == 3 and "no Classification field 'nope'" in res.output


def test_review_operators_correct_the_audited_field_not_ground_truth(fo_name):
    """An audit of another field (the run info records it) is reviewed in that field."""
    from dqaudit.cli.app import audited_label_field

    ds = fo.Dataset(fo_name)
    assert audited_label_field(ds) == "ground_truth"  # never audited: FiftyOne's default
    ds.info["dqaudit"] = {"label_field": "boxes_v2"}
    ds.save()
    assert audited_label_field(ds) == "boxes_v2"
    source = (Path(__file__).parents[1] / "plugins" / "dqaudit" / "__init__.py").read_text()
    assert '"ground_truth"' not in source  # the operators ask the audit, not a literal
