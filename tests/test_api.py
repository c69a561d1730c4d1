"""The Audit object: the README's Python API as written, arrays in, configs kept across
re-runs, the folder round trip."""

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import blobs as clusters

import dqaudit
from dqaudit.api import Audit
from dqaudit.cli import main
from dqaudit.config import AuditConfig, ClrConfig, EmbedConfig, ReportConfig, ScoreConfig
from dqaudit.errors import DqauditError, InputError

README = Path(__file__).resolve().parents[1] / "README.md"


def run(*args):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


def test_readme_python_api_runs_as_written(tmp_path, monkeypatch):
    block = re.search(r"## Python API\n.*?```python\n(.*?)```", README.read_text(), re.S)
    assert block, "README has no Python API block"
    monkeypatch.chdir(tmp_path)
    run("sample-data", "shapes", "--per-class", "10")
    exec(compile(block.group(1), "README.md", "exec"), {})
    summary = json.loads((tmp_path / "audit" / "summary.json").read_text())
    assert summary["config"]["clr"]["repeats"] == 5 and (tmp_path / "audit" / "report.html"
                                                         ).exists()


def blobs():
    return clusters(n_per_class=30, d=16, spread=4)


def test_from_arrays_with_embeddings_and_with_pred_probs_only():
    x, y = blobs()
    noisy = y.copy()
    noisy[[0, 31, 62]] = [1, 2, 0]
    config = AuditConfig(clr=ClrConfig(repeats=3, grid=(0.0, 0.05, 0.1), bootstrap=50))
    audit = Audit.from_arrays(noisy, embeddings=x, config=config)
    flagged = set(np.flatnonzero(audit.samples["issues"].map(lambda v: "label_error" in v)))
    assert {0, 31, 62} <= flagged
    assert audit.summary["clr"]["estimate"] >= 0 and audit.probs.shape == (90, 3)
    assert audit.out_dir is None  # nothing written

    # cleanlab's convention: out-of-sample probabilities of the user's own model
    probs = np.full((90, 3), 0.05)
    probs[np.arange(90), y] = 0.9
    mine = Audit.from_arrays([f"c{v}" for v in noisy], pred_probs=probs,
                             classes=["c0", "c1", "c2"])
    assert mine.summary["posterior_method"] == "pred_probs" and mine.summary["clr"] is None
    assert set(np.flatnonzero(mine.samples["issues"].map(lambda v: "label_error" in v))) == {
        0, 31, 62}
    assert (mine.samples["dup_group"] == -1).all() and mine.samples["outlier_score"].isna().all()
    with pytest.raises(DqauditError, match="none \\(pred_probs only\\)"):
        mine.estimate_clr()
    # an audit without a folder reviews in memory: the queue leads with the three wrong labels
    queue = mine.review_queue(budget=5)
    assert {0, 31, 62} <= {int(i.split("_")[1]) for i in queue["id"].head(3)}
    # the re-rank keeps the user's probabilities: correcting the three labels clears them
    mine.rescore(labels=[f"c{v}" for v in y])
    assert mine.summary["label_error_count"] == 0 and mine.summary["label_changes"] == 3


def test_an_audit_in_memory_reviews_verifies_and_becomes_a_folder(tmp_path):
    """Everything that needs no image works without a folder: the review queue, corrections
    (ledger, changelog, re-rank), a verification sample drawn and applied, the CLR estimate;
    save() writes all of it, and load() gives back the same state and settings."""
    x, y = blobs()
    noisy = y.copy()
    noisy[[0, 31, 62]] = (y[[0, 31, 62]] + 1) % 3
    names = [f"c{v}" for v in noisy]
    a = Audit.from_arrays(names, embeddings=x)
    assert a.out_dir is None
    queue = a.review_queue(budget=4)
    fix = pd.DataFrame({"id": queue["id"], "label": [f"c{y[int(i.split('_')[1])]}"
                                                     for i in queue["id"]]})
    rec = a.apply_corrections(fix, annotator="ana")
    assert rec["annotations"] == 4 and len(a.ledger) == 4 and rec["label_changes"] >= 3
    assert set(a.changelog["annotator"]) == {"ana"}
    assert a.summary["corrections"]["annotations"] == 4
    assert a.review_queue(budget=4)["id"].isin(a.ledger["id"]).sum() == 0  # reviewed: skipped
    drawn = a.draw_verification_sample(size=30, uniform_share=0.5)
    assert drawn["n_drawn"] == 30 and "csv" not in drawn and len(a.verify_sample) == 30
    assert a.config.verify.uniform_share == 0.5  # the setting of the design is recorded
    checked = a.verify_sample.assign(verified_label=[f"c{y[int(i.split('_')[1])]}"
                                                     for i in a.verify_sample["id"]])
    v = a.apply_verified(checked)
    assert v["n_verified"] == 30 and a.summary["headline"]["source"] == "verified"
    assert a.summary["verified"]["estimate"] == v["estimate"]
    out = a.save(tmp_path / "audit")
    b = Audit.load(out)
    assert len(b.ledger) == len(a.ledger) and len(b.changelog) == len(a.changelog)
    assert b.verify_sample["id"].tolist() == a.verify_sample["id"].tolist()
    assert b.summary["verified"]["estimate"] == v["estimate"]
    assert b.config == a.config and b.config.verify.uniform_share == 0.5
    assert b.review_queue(budget=3)["id"].tolist() == a.review_queue(budget=3)["id"].tolist()
    assert (out / "review_queue.csv").exists()


def test_from_arrays_refuses_bad_input_with_the_fix():
    x, y = blobs()
    with pytest.raises(InputError, match="embeddings=, pred_probs= or both"):
        Audit.from_arrays(y)
    with pytest.raises(InputError, match="expected \\(90, 3\\)"):
        Audit.from_arrays(y, pred_probs=np.ones((90, 4)) / 4, classes=["a", "b", "c"])
    with pytest.raises(InputError, match="not logits"):
        Audit.from_arrays(y, pred_probs=np.random.default_rng(0).normal(size=(90, 3)))
    with pytest.raises(InputError, match="one row per audited sample"):
        Audit.from_arrays(y, embeddings=x[:10])


def test_saved_audit_round_trips_and_rescores_in_place(tmp_path):
    x, y = blobs()
    config = AuditConfig(seed=4, clr=None, score=ScoreConfig(duplicate_threshold=0.9),
                         report=ReportConfig(enabled=False))
    audit = Audit.from_arrays(y, embeddings=x, config=config, out_dir=tmp_path / "a")
    loaded = Audit.load(tmp_path / "a")
    # the config round-trips, with the choice auto made at the scan recorded
    assert loaded.config == replace(config, score=replace(config.score,
                                                          review_order="noisiness"))
    assert audit.config == loaded.config
    pd.testing.assert_frame_equal(loaded.samples, audit.samples)
    np.testing.assert_allclose(loaded.probs, audit.probs, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(loaded.embeddings), x)
    assert AuditConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    loaded.rescore(dropped={loaded.samples["id"].iat[0]})
    again = Audit.load(tmp_path / "a")
    assert bool(again.samples["dropped"].iat[0]) and again.summary["n_dropped"] == 1
    assert np.isnan(again.probs[0]).all() and not np.isnan(again.probs[1:]).any()
    assert again.summary["score_parameters"]["duplicate_threshold"] == 0.9  # the saved config


def test_configs_keep_their_defaults_in_one_place():
    assert EmbedConfig().model == dqaudit.EmbedConfig().model
    old = AuditConfig.from_dict({"seed": 2, "unknown_future_key": 1, "clr": {"repeats": 7}})
    assert old.seed == 2 and old.clr.repeats == 7 and old.clr.grid == ClrConfig().grid
    with pytest.raises(DqauditError, match="valid: A4, Letter"):
        ReportConfig(page_size="A3")


def test_report_settings_survive_the_rerender_after_corrections(class_tree, tmp_path):
    """The re-render after `relabel apply` used to fall back to the default title and A4."""
    out = tmp_path / "o"
    run("scan", class_tree, "--out", out, "--no-clr", "--no-pdf", "-q", "--model", "lite0",
        "--num-workers", "0")
    run("report", out, "--no-pdf", "--report-title", "Release 7 audit", "--page-size", "Letter")
    samples = pd.read_parquet(out / "samples.parquet")
    pd.DataFrame({"id": [samples["id"].iat[0]], "label": [samples["label"].iat[1]]}).to_csv(
        out / "fix.csv", index=False)
    run("relabel", "apply", out, out / "fix.csv")
    html = (out / "report.html").read_text()
    assert "Release 7 audit" in html and 'class="letter"' in html
    assert json.loads((out / "summary.json").read_text())["config"]["report"]["title"] == \
        "Release 7 audit"


def test_scan_with_the_users_own_embeddings(class_tree, tmp_path):
    data = dqaudit.load_dataset(str(class_tree))
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(len(data), 8)) + 3 * data.labels[:, None]).astype(np.float32)
    np.save(tmp_path / "f.npy", x)
    run("scan", class_tree, "--out", tmp_path / "o", "--embeddings", tmp_path / "f.npy",
        "--no-clr", "--no-report", "-q")
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["model"] == "user embeddings (f.npy)"

    def in_ingest_order(out):  # the audit's rows are in canonical order (by label and content)
        row = {p: i for i, p in enumerate(pd.read_parquet(out / "samples.parquet")["path"])}
        return np.load(out / "embeddings.npy")[[row[p] for p in data.paths]]

    np.testing.assert_array_equal(in_ingest_order(tmp_path / "o"), x)
    # an .npz matched by path, rows in any order
    order = rng.permutation(len(data))
    np.savez(tmp_path / "f.npz", embeddings=x[order], paths=np.array(data.paths)[order])
    run("scan", class_tree, "--out", tmp_path / "z", "--embeddings", tmp_path / "f.npz",
        "--no-clr", "--no-report", "-q")
    np.testing.assert_array_equal(in_ingest_order(tmp_path / "z"), x)
    np.save(tmp_path / "short.npy", x[:3])
    res = CliRunner().invoke(main, ["scan", str(class_tree), "--out", str(tmp_path / "s"),
                                    "--embeddings", str(tmp_path / "short.npy"), "-q"])
    assert res.exit_code == 3 and "one row per audited sample" in res.output


def test_fingerprint_follows_the_current_labels(class_tree, tmp_path):
    """It hashed the scan's labels only, so 31 corrections left it unchanged."""
    def scanned(out):
        run("scan", class_tree, "--out", out, "--no-clr", "--no-report", "-q", "--model",
            "lite0", "--num-workers", "0")
        return json.loads((out / "summary.json").read_text())

    first, second = scanned(tmp_path / "a"), scanned(tmp_path / "b")
    assert first["fingerprint"] == second["fingerprint"]
    out = tmp_path / "a"
    samples = pd.read_parquet(out / "samples.parquet")
    pd.DataFrame({"id": [samples["id"].iat[0]] * 2, "label": ["green", "green"]}).to_csv(
        tmp_path / "fix.csv", index=False)
    run("relabel", "apply", out, tmp_path / "fix.csv")
    fixed = json.loads((out / "summary.json").read_text())
    assert fixed["fingerprint"] != first["fingerprint"]
    assert fixed["fingerprint_files"] == first["fingerprint_files"]
    pd.DataFrame({"id": [samples["id"].iat[1]], "label": ["DROP"]}).to_csv(
        tmp_path / "drop.csv", index=False)
    run("relabel", "apply", out, tmp_path / "drop.csv")
    assert json.loads((out / "summary.json").read_text())["fingerprint"] != fixed["fingerprint"]


def test_tree_and_manifest_of_the_same_images_give_the_same_samples_table(class_tree, tmp_path):
    """The same images as a class-folder tree and as a manifest gave 30 and 31 suspects: sample
    order changed the fold splits, and the path-keyed cache re-embedded a copied dataset."""
    flat = tmp_path / "flat"
    flat.mkdir()
    rows = []
    for i, p in enumerate(sorted(class_tree.rglob("*.png"), reverse=True)):
        shutil.copy(p, flat / f"img_{i:03d}.png")  # another folder, other names, another order
        rows.append({"file": f"img_{i:03d}.png", "label": p.parent.name})
    pd.DataFrame(rows).to_csv(flat / "labels.csv", index=False)
    common = ["--no-report", "-q", "--model", "lite0", "--num-workers", "0"]
    run("scan", class_tree, "--out", tmp_path / "a", *common)
    run("scan", flat / "labels.csv", "--path-column", "file", "--out", tmp_path / "b", *common)
    a, b = (pd.read_parquet(tmp_path / o / "samples.parquet") for o in "ab")
    pd.testing.assert_frame_equal(a.drop(columns=["id", "path"]), b.drop(columns=["id", "path"]))
    sa, sb = (json.loads((tmp_path / o / "summary.json").read_text()) for o in "ab")
    assert sb["embedding"]["n_cached"] == len(rows)  # the copies hit the cache by content
    assert sa["clr"]["estimate"] == sb["clr"]["estimate"]
    assert sa["fingerprint_files"] != sb["fingerprint_files"]  # ids differ: a different release


def test_the_review_order_follows_the_review_process():
    """One label per sample: one look fixes it, so review goes by the chance the label is wrong
    (noisiness's order, measured better on single-label CIFAR-10N); several annotations per
    sample: the mean rank of priority and the noise model (the cleaning simulation's)."""
    from scipy.stats import spearmanr

    x, y = blobs()
    noisy = y.copy()
    noisy[[0, 31, 62]] = [1, 2, 0]
    config = AuditConfig(clr=None, report=ReportConfig(enabled=False))
    one = Audit.from_arrays(noisy, embeddings=x, config=config)
    assert one.config.score.review_order == "noisiness"
    s = one.samples
    assert spearmanr(s["review_score"], s["label_error_probability"]).statistic > 0.999
    counts = np.eye(3, dtype=np.float32)[noisy] * 2
    counts[5, (noisy[5] + 1) % 3] = 1  # 2 of 3 annotators agree
    many = Audit.from_arrays(noisy, embeddings=x, label_counts=counts, config=config)
    assert many.config.score.review_order == "review_score"
    with pytest.raises(DqauditError, match="unknown review order"):
        ScoreConfig(review_order="alphabetical")
