"""Active label cleaning: queue, corrections (majority formation), re-ranking, export."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import make_image

from dqaudit.cli import main
from dqaudit.estimates.plan import relabel_plan
from dqaudit.scoring.calibration import power


def run(*args):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture
def audit_dir(class_tree, tmp_path):
    (class_tree / "red" / "red_0.png").rename(class_tree / "blue" / "really_red.png")
    out = tmp_path / "audit"
    run("scan", class_tree, "--out", out, "-q", "--num-workers", "0", "--no-pdf")
    return out


def snapshot(folder):
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_relabel_plan_sums_the_calibrated_chances_in_review_order():
    q = power(np.array([0.99, 0.9, 0.5, 0.2, 0.1, 0.05]), 2)
    plan = relabel_plan(np.array([5.0, 4, 3, 2, 1, 0]), q, n_points=6)
    # the first review is expected to fix 0.98 of an error: half of 2 needs the second
    assert plan["budget_for_50pct"] == 2 and plan["budget_for_80pct"] == 2
    assert plan["expected_corrections_priority"][:3] == [0.0, 1.0, 1.8]
    assert plan["expected_corrections_random"][-1] == 2
    # chances that no longer sum to the scan's count (a verified re-fit): both orders end at
    # their sum, reviewing everything
    refit = q * 0.7
    plan = relabel_plan(np.array([5.0, 4, 3, 2, 1, 0]), refit, n_points=6)
    assert plan["expected_corrections_random"][-1] == plan["expected_corrections_priority"][-1]
    assert all(p >= r for p, r in zip(plan["expected_corrections_priority"],
                                       plan["expected_corrections_random"]))


def test_queue_apply_rerank_and_export(audit_dir, class_tree, tmp_path):
    before = snapshot(class_tree)
    run("relabel", "queue", audit_dir, "--budget", "3")
    queue = pd.read_csv(audit_dir / "review_queue.csv")
    assert len(queue) == 3 and queue["rank"].tolist() == [1, 2, 3]
    assert queue["review_score"].is_monotonic_decreasing
    assert queue["id"].iloc[0] == "blue/really_red.png"
    assert (audit_dir / "review_thumbs" / "00001.png").exists()

    # the reviewer fixes the planted error and junks another sample
    queue["correct_label"] = ""
    queue.loc[0, "correct_label"] = "red"
    queue.loc[1, "correct_label"] = "DROP"
    queue.to_csv(tmp_path / "done.csv", index=False)
    out = run("relabel", "apply", audit_dir, tmp_path / "done.csv", "--annotator", "ana")
    assert "1 labels changed, 1 dropped" in out
    samples = pd.read_parquet(audit_dir / "samples.parquet")
    fixed = samples.set_index("id").loc["blue/really_red.png"]
    assert fixed["label"] == "red" and "label_error" not in list(fixed["issues"])
    assert samples["dropped"].sum() == 1
    counts = np.load(audit_dir / "label_counts.npy")
    assert counts.sum() == 12 + 1  # one more annotation; the DROP adds none
    log = pd.read_csv(audit_dir / "changelog.csv")
    assert log["new_label"].tolist() == ["red", "DROP"] and set(log["annotator"]) == {"ana"}
    summary = json.loads((audit_dir / "summary.json").read_text())
    assert summary["n_samples"] == 11 and summary["n_dropped"] == 1

    # reviewed samples leave the queue
    run("relabel", "queue", audit_dir, "--budget", "20")
    assert not set(pd.read_csv(audit_dir / "review_queue.csv")["id"]) & set(queue["id"][:2])

    run("relabel", "export", audit_dir, "--to", "folder", "--dest", tmp_path / "clean")
    exported = sorted(p.relative_to(tmp_path / "clean").as_posix()
                      for p in (tmp_path / "clean").rglob("*.png"))
    assert len(exported) == 11 and "red/blue__really_red.png" in exported
    assert (tmp_path / "clean" / "changelog.csv").exists()
    run("relabel", "export", audit_dir, "--to", "csv", "--dest", tmp_path / "clean.csv")
    assert len(pd.read_csv(tmp_path / "clean.csv")) == 11
    assert snapshot(class_tree) == before  # the input dataset was never touched


def test_apply_rejects_unknown_labels_and_ids(audit_dir, tmp_path):
    pd.DataFrame({"id": ["red/red_1.png"], "label": ["purple"]}).to_csv(tmp_path / "c.csv",
                                                                        index=False)
    res = CliRunner().invoke(main, ["relabel", "apply", str(audit_dir), str(tmp_path / "c.csv")])
    assert res.exit_code == 3 and "unknown labels ['purple']" in res.output
    pd.DataFrame({"id": ["nope.png"], "label": ["red"]}).to_csv(tmp_path / "d.csv", index=False)
    res = CliRunner().invoke(main, ["relabel", "apply", str(audit_dir), str(tmp_path / "d.csv")])
    assert res.exit_code == 3 and "name no sample" in res.output


def test_export_refuses_to_overwrite(audit_dir, tmp_path):
    (tmp_path / "full").mkdir()
    make_image(tmp_path / "full" / "x.png", (1, 2, 3))
    res = CliRunner().invoke(main, ["relabel", "export", str(audit_dir), "--to", "folder",
                                    "--dest", str(tmp_path / "full")])
    assert res.exit_code == 3 and "not empty" in res.output


def test_rescore_reads_the_audit_embeddings_memory_mapped(audit_dir):
    from dqaudit.api import Audit

    audit = Audit.load(audit_dir)
    assert isinstance(audit.embeddings, np.memmap) and not audit.embeddings.flags.writeable
    before = pd.read_parquet(audit_dir / "samples.parquet")
    # no drops: the memory map itself reaches the scoring (pyproject turns torch's warning
    # about a non-writable array into an error)
    audit.rescore()
    after = pd.read_parquet(audit_dir / "samples.parquet")
    np.testing.assert_allclose(after["noisiness"], before["noisiness"], atol=1e-6)
    assert [list(v) for v in after["issues"]] == [list(v) for v in before["issues"]]


def test_rerank_after_corrections_runs_on_the_chosen_device(audit_dir, monkeypatch):
    """`relabel apply --device` reaches the re-rank's posteriors (it used to run on the CPU
    whatever the device)."""
    import dqaudit.workflows.review as api  # the re-rank (Audit.rescore)

    seen = []
    score = api.score
    monkeypatch.setattr(api, "resolve_device", lambda name: f"resolved:{name}")
    monkeypatch.setattr(api, "score",
                        lambda *a, device, **k: seen.append(device) or score(*a, device="cpu",
                                                                            **k))
    samples = pd.read_parquet(audit_dir / "samples.parquet")
    pd.DataFrame({"id": [samples["id"].iat[0]], "label": ["red"]}).to_csv(
        audit_dir / "fix.csv", index=False)
    run("relabel", "apply", audit_dir, audit_dir / "fix.csv", "--device", "cpu",
        "--no-clr-refresh")
    assert seen == ["resolved:cpu"]


def test_a_manifest_audit_exports_its_own_manifest_with_only_labels_changed(class_tree,
                                                                            tmp_path):
    """`relabel export --to csv` of a manifest audit can replace the released file: the same
    columns, row order, paths as written, splits and extra columns, only the corrected labels
    changed and one column added; a row the scan skipped is kept as it was."""
    rows = sorted(p.relative_to(class_tree).as_posix() for p in class_tree.rglob("*.png"))
    (class_tree / "broken.png").write_bytes(b"not an image")
    table = pd.DataFrame({
        "file": [f"./{r}" if k % 3 == 0 else r for k, r in enumerate(rows)] + ["broken.png"],
        "class": [r.split("/")[0] for r in rows[:-1]] + ["green"] + ["red"],  # last one wrong
        "split": ["train", "test"] * (len(rows) // 2) + ["train"],
        "source": [f"batch{k % 2}" for k in range(len(rows) + 1)]})
    table.to_csv(class_tree / "labels.csv", sep=";", index=False)
    out = tmp_path / "audit"
    run("scan", class_tree / "labels.csv", "--out", out, "-q", "--num-workers", "0", "--no-pdf",
        "--no-clr")
    wrong = rows[-1]
    pd.DataFrame({"path": [wrong], "label": [wrong.split("/")[0]]}).to_csv(
        tmp_path / "fix.csv", index=False)
    run("relabel", "apply", out, tmp_path / "fix.csv")
    run("relabel", "export", out, "--to", "csv", "--dest", tmp_path / "released.csv")
    exported = pd.read_csv(tmp_path / "released.csv", sep=";", dtype=str,
                           keep_default_na=False)
    given = pd.read_csv(class_tree / "labels.csv", sep=";", dtype=str, keep_default_na=False)
    assert list(exported.columns) == list(given.columns) + ["dq_label_change"]
    changed = exported["class"] != given["class"]
    assert changed.tolist() == [False] * (len(rows) - 1) + [True, False]
    assert exported.loc[changed, "class"].tolist() == [wrong.split("/")[0]]
    assert exported.loc[changed, "dq_label_change"].tolist() == [
        f"green -> {wrong.split('/')[0]}"]
    assert (exported.drop(columns=["class", "dq_label_change"]) ==
            given.drop(columns=["class"])).all().all()
