"""The HTML and PDF report: contents match summary.json, offline, deterministic, robust."""

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import COLORS, make_image
from pypdf import PdfReader

from dqaudit.cli import main


def scan(src, out, *extra):
    res = CliRunner().invoke(main, ["scan", str(src), "--out", str(out), "-q",
                                    "--num-workers", "0", *extra], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads((out / "summary.json").read_text())


def pdf_text(path):
    return " ".join(page.extract_text() for page in PdfReader(str(path)).pages)


@pytest.fixture(scope="module")
def noisy_audit(tmp_path_factory):
    """4 colour classes x 8 images, two of them given a wrong label, one split each way."""
    root = tmp_path_factory.mktemp("noisy")
    colors = dict(COLORS, yellow=(230, 220, 20))
    for split in ("train", "test"):
        for c, (name, color) in enumerate(colors.items()):
            for k in range(4):
                make_image(root / "data" / split / name / f"{name}_{k}.png", color,
                           seed=100 * c + 10 * k + (split == "test"))
    shutil.move(root / "data" / "train" / "red" / "red_0.png",
                root / "data" / "train" / "blue" / "really_red.png")
    shutil.move(root / "data" / "test" / "green" / "green_1.png",
                root / "data" / "test" / "yellow" / "really_green.png")
    out = root / "audit"
    return out, scan(root / "data", out)


def test_report_numbers_come_from_summary(noisy_audit):
    out, summary = noisy_audit
    html = (out / "report.html").read_text()
    text = pdf_text(out / "report.pdf")
    c = summary["clr"]
    rate = f"{100 * c['estimate']:.1f}%"  # the headline: gold-free CLR with its range
    interval = f"{100 * c['ci_low']:.1f}%–{100 * c['ci_high']:.1f}%"
    # a range whose lower end is 0 by construction is stated as an upper bound, in words
    plausible = f"atmost{100 * c['bracket_high']:.1f}%" if c["bracket_low"] <= 0 else \
        f"{100 * c['bracket_low']:.1f}%–{100 * c['bracket_high']:.1f}%"
    assert summary["label_error_count"] >= 1
    for doc in (html, text):
        flat = re.sub(r"\s+", "", re.sub(r"<[^>]+>", "", doc))
        assert rate in flat and interval in flat and plausible in flat
        assert f"{summary['label_error_count']}samplesflaggedforreview" in flat
        assert summary["fingerprint"][:16] in flat
        splits = summary["score_parameters"]["fold_splits"]
        assert f"averagedover{splits}differentlyseededfoldsplits" in flat
    assert "really_red.png" in html  # the planted error is among the shown suspects
    # suspect cards carry the review score the gallery is ordered by
    samples = pd.read_parquet(out / "samples.parquet")
    first = samples[samples["flagged"]].sort_values("review_score", ascending=False).iloc[0]
    assert f"review {first['review_score']:.3f}" in html
    assert summary["verdict"]["level"] in html


def test_report_is_self_contained(noisy_audit):
    out, _ = noisy_audit
    html = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "@import" not in html and "url(http" not in html
    assert html.count("data:image/png;base64,") >= 4


def test_rerender_is_byte_identical_and_needs_no_recompute(noisy_audit, monkeypatch,
                                                           tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(noisy_audit[0], out)
    # the report names its samples.csv by absolute path (with line-break points): the copy's
    from dqaudit.report import breakable

    first = (out / "report.html").read_bytes().replace(
        str(breakable(str(noisy_audit[0].resolve()))).encode(),
        str(breakable(str(out.resolve()))).encode())
    import dqaudit.pipeline

    monkeypatch.setattr(dqaudit.pipeline, "score_dataset", None)  # would fail if called
    monkeypatch.setattr(dqaudit.pipeline, "embed_dataset", None)
    res = CliRunner().invoke(main, ["report", str(out), "--no-pdf"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert (out / "report.html").read_bytes() == first
    # the PDF of the scan would no longer match the HTML now recorded as the report
    assert not (out / "report.pdf").exists()


def test_letter_pages_and_page_numbers(noisy_audit, tmp_path):
    out, _ = noisy_audit
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    res = CliRunner().invoke(main, ["report", str(copy), "--page-size", "Letter",
                                    "--report-title", "Release 2.1 audit"])
    assert res.exit_code == 0, res.output
    reader = PdfReader(str(copy / "report.pdf"))
    width, height = float(reader.pages[0].mediabox.width), float(reader.pages[0].mediabox.height)
    assert (round(width), round(height)) == (612, 792)
    assert "Release 2.1 audit" in reader.pages[0].extract_text()
    assert f"page 1 of {len(reader.pages)}" in reader.pages[0].extract_text()


def test_clean_audit_and_single_class_split_render(tmp_path):
    root = tmp_path / "clean"
    for name, color in COLORS.items():
        for k in range(4):
            make_image(root / "train" / name / f"{k}.png", color, seed=k)
    make_image(root / "test" / "red" / "t.png", COLORS["red"], seed=9)  # one class only
    summary = scan(root, tmp_path / "out")
    assert summary["label_error_count"] == 0
    html = (tmp_path / "out" / "report.html").read_text()
    assert "No sample is flagged as a label error." in html
    assert (tmp_path / "out" / "report.pdf").stat().st_size > 10_000


def test_no_report_and_no_pdf_flags(class_tree, tmp_path):
    scan(class_tree, tmp_path / "a", "--no-pdf")
    assert (tmp_path / "a" / "report.html").exists()
    assert not (tmp_path / "a" / "report.pdf").exists()
    scan(class_tree, tmp_path / "b", "--no-report")
    assert not (tmp_path / "b" / "report.html").exists()


def test_report_on_missing_folder_is_a_clear_error(tmp_path):
    res = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert res.exit_code == 3 and "no summary.json" in res.output


def _flat(doc: str) -> str:
    return re.sub(r"\s+", "", re.sub(r"<[^>]+>", "", doc)).replace("&ndash;", "–")


def _agrees(out):
    """Cover, verdict, per-class and per-split numbers agree with summary.json."""
    from dqaudit.estimates.headline import headline

    s = json.loads((out / "summary.json").read_text())
    html = _flat((out / "report.html").read_text())
    head = headline(s)
    assert f"{100 * head['rate']:.1f}%" in html, head
    # one headline object: summary.json's, report --json's and the recomputed one are equal,
    # and no other top-level key holds a share of wrong labels under a name a script would take
    assert s["headline"] == head
    res = CliRunner().invoke(main, ["report", str(out), "--no-pdf", "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["headline"] == head
    assert "estimated_noise_rate" not in s and "confident_joint_rate" in s
    # the cover says what the flag means beside the headline, and which labels it describes
    f = s["flag_meaning"]
    assert f["flagged"] == s["label_error_count"]
    if f["expected_precision"] is not None:
        assert f"about{100 * f['expected_precision']:.0f}%ofthemareexpectedtobewrong" in html
    assert ("labelsdescribed:after" if s.get("corrections") else "labelsdescribed:asscanned") \
        in html
    found = {k: v for k, v in s["issue_counts"].items()
             if k in ("blank", "dark", "bright", "blurry", "low_information", "grayscale",
                      "odd_size") and v}
    assert ("image-qualityfindings" in html) == bool(found)
    for name, k in found.items():
        assert f"{k}{name.replace('_', '')}" in html
    if s.get("label_changes") and s.get("headline_at_scan"):  # before and after, both named
        b = s["headline_at_scan"]
        assert f"asscanned({b['at']})theestimatewas{100 * b['rate']:.1f}%" in html
        assert f"now{100 * head['rate']:.1f}%" in html
    if head["ci_low"] is not None:
        shown = (f"atmost{100 * head['ci_high']:.1f}%" if head["source"] == "gold-free" and
                 head["ci_low"] <= 0 else
                 f"{100 * head['ci_low']:.1f}%–{100 * head['ci_high']:.1f}%")
        assert shown in html, (shown, head)
    assert s["verdict"]["level"].replace(" ", "") in html
    assert str(s["verdict"]["text"]).split(";")[0].replace(" ", "") in html
    per = s["per_split"]["splits"]
    assert sum(r["n"] for r in per.values()) == s["n_samples"]
    assert sum(r["flagged_label_errors"] for r in per.values()) == s["label_error_count"]
    mean = sum(r["n"] * r["headline_share"] for r in per.values()) / s["n_samples"]
    assert abs(mean - head["rate"]) < 1e-3  # the splits average to the cover's figure
    for name, r in per.items():
        assert f"{name}{r['n']}{r['flagged_label_errors']}{100 * r['headline_share']:.1f}%" \
            in html
    classes = s["per_class"]["classes"]
    mean = sum(r["n"] * r["headline_share"] for r in classes.values()) / s["n_samples"]
    assert abs(mean - head["rate"]) < 1e-3  # the classes average to the cover's figure
    for name, r in classes.items():
        assert f"{name}{r['n']}{r['flagged_label_errors']}{100 * r['headline_share']:.1f}%" \
            in html
    for r in s["per_class_noise"].values():
        assert r["flagged_label_errors"] <= r["n"]
    assert sum(r["flagged_label_errors"] for r in s["per_class_noise"].values()) == \
        s["label_error_count"]
    return s, html


def test_cover_splits_and_corrections_agree_at_every_step(noisy_audit, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(noisy_audit[0], out)
    before, html = _agrees(out)
    assert set(before["per_split"]["splits"]) == {"train", "test"}
    assert "Corrections" in html and "None:thelabelsareasthedatasetgavethem" in html
    samples = pd.read_parquet(out / "samples.parquet")
    wrong = samples[samples["path"].str.endswith("really_red.png")]["id"].iat[0]
    # two reviewers agree (one reviewer's row given twice would be one annotation)
    pd.DataFrame({"id": [wrong, wrong], "label": ["red", "red"], "annotator": ["ana", "bo"]}
                 ).to_csv(tmp_path / "fix.csv", index=False)
    res = CliRunner().invoke(main, ["relabel", "apply", str(out), str(tmp_path / "fix.csv")])
    assert res.exit_code == 0, res.output
    after, html = _agrees(out)
    c = after["corrections"]
    assert (c["annotations"], c["label_changes"], c["annotators"]) == (2, 1, {"ana": 1,
                                                                              "bo": 1})
    assert "2annotationsof1samplesfromana(1),bo(1)" in html and "1labelschanged" in html
    assert after["fingerprint"] != before["fingerprint"]


def test_report_rerenders_an_audit_written_before_the_newer_blocks(noisy_audit, tmp_path):
    out = tmp_path / "old"
    shutil.copytree(noisy_audit[0], out)
    summary = json.loads((out / "summary.json").read_text())
    for key in ("per_split", "corrections", "config", "fingerprint_files"):
        summary.pop(key, None)
    (out / "summary.json").write_text(json.dumps(summary))
    res = CliRunner().invoke(main, ["report", str(out), "--no-pdf", "-q"])
    assert res.exit_code == 0, res.output
    again = json.loads((out / "summary.json").read_text())
    assert again["per_split"]["splits"] and again["config"]["report"]["pdf"] is False
    _agrees(out)


def test_redacted_report_holds_no_paths_and_no_images(noisy_audit, tmp_path):
    out = tmp_path / "share"
    shutil.copytree(noisy_audit[0], out)
    res = CliRunner().invoke(main, ["report", str(out), "--redact", "paths", "--redact",
                                    "thumbnails", "-q"])
    assert res.exit_code == 0, res.output
    html = (out / "report.html").read_text()
    text = pdf_text(out / "report.pdf")
    for doc in (html, text):
        assert str(tmp_path) not in doc and str(noisy_audit[0].parent) not in doc
        assert "really_red" not in doc and "dqaudit scan" not in doc
    assert '<img src="data:' not in html and "samples.csv row" in html
    assert "redacted for sharing: paths, thumbnails" in html
    assert json.loads((out / "summary.json").read_text())["config"]["report"]["redact"] == [
        "paths", "thumbnails"]
    # kept by the next re-render (after corrections too) until cleared
    CliRunner().invoke(main, ["report", str(out), "--no-pdf", "-q"])
    assert '<img src="data:' not in (out / "report.html").read_text()
    CliRunner().invoke(main, ["report", str(out), "--no-pdf", "-q", "--redact", "none"])
    assert "really_red.png" in (out / "report.html").read_text()
    bad = CliRunner().invoke(main, ["report", str(out), "--redact", "faces"])
    assert bad.exit_code == 2


def test_datalab_shapes_get_issues_summary_and_report(noisy_audit, capsys):
    """cleanlab Datalab's conventions: is_<type>_issue and a quality <type>_score (low = bad)
    per type, cleanvision's names for the image checks, a summary sorted worst first."""
    import dqaudit
    from dqaudit.api import Audit
    from dqaudit.scoring.conventions import ISSUE_TYPES

    assert {"Audit", "audit", "AuditConfig"} <= set(dir(dqaudit))
    audit = Audit.load(noisy_audit[0])
    issues = audit.get_issues()
    samples = audit.samples
    for name in ("label", "outlier", "near_duplicate", "dark", "light", "blurry"):
        flag, score = issues[f"is_{name}_issue"], issues[f"{name}_score"]
        assert flag.dtype == bool and score.between(0, 1).all(), name
    assert "bright_score" not in issues and "is_light_issue" in issues  # cleanvision's name
    flagged = samples["issues"].map(lambda v: "label_error" in list(v)).to_numpy()
    assert (issues["is_label_issue"].to_numpy() == flagged).all()
    assert np.allclose(issues["label_score"], 1 - samples["label_error_probability"])
    label = audit.get_issues("label")
    assert list(label.columns) == ["is_label_issue", "label_score", "given_label",
                                   "predicted_label"]
    summary = audit.get_issue_summary()
    assert list(summary.columns) == ["issue_type", "num_issues", "score"]
    assert summary["score"].is_monotonic_increasing and set(summary["issue_type"]) <= set(
        ISSUE_TYPES)
    assert summary.set_index("issue_type").loc["label", "num_issues"] == flagged.sum()
    audit.report(top=3)
    out = capsys.readouterr().out
    assert audit.summary["headline"]["text"] in out and "label issues" in out
    assert "<table" in audit._repr_html_()
    with pytest.raises(dqaudit.DqauditError, match="unknown issue type"):
        audit.get_issues("nope")


def test_one_headline_through_relabel_and_verify(noisy_audit, tmp_path):
    """The headline each door states after relabel apply and verify --apply is the one in
    summary.json, on the cover and in report --json: one number with one interval."""
    out = tmp_path / "copy"
    shutil.copytree(noisy_audit[0], out)
    samples = pd.read_parquet(out / "samples.parquet")
    wrong = samples[samples["path"].str.endswith("really_red.png")]["id"].iat[0]
    pd.DataFrame({"id": [wrong], "label": ["red"]}).to_csv(tmp_path / "fix.csv", index=False)

    res = CliRunner().invoke(main, ["relabel", "apply", str(out), str(tmp_path / "fix.csv"),
                                    "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads((out / "summary.json").read_text())
    assert json.loads(res.output)["headline"] == s["headline"]
    _agrees(out)
    again = CliRunner().invoke(main, ["relabel", "apply", str(out), str(tmp_path / "fix.csv")])
    assert f"noise: {s['headline']['text']}" in again.output  # what the CLI prints
    flagged_at_draw = s["label_error_count"]
    res = CliRunner().invoke(main, ["verify", str(out), "--size", str(s["n_samples"])])
    assert res.exit_code == 0, res.output
    sample = pd.read_csv(out / "verify_sample.csv", dtype=str, keep_default_na=False)
    truth = {sid: ("red" if sid == wrong else ("green" if "really_green" in sid
                                                else sid.split("/")[-2]))
             for sid in samples["id"]}
    sample["verified_label"] = [truth[i] for i in sample["id"]]
    sample.to_csv(tmp_path / "checked.csv", index=False)
    res = CliRunner().invoke(main, ["verify", str(out), "--apply", str(tmp_path / "checked.csv"),
                                    "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads((out / "summary.json").read_text())
    assert s["headline"]["source"] == "verified" and s["headline"]["interval"] == \
        "verified 95% CI"
    assert json.loads(res.output)["headline"] == s["headline"]
    _agrees(out)
    # the cover gives the flag's precision as the verified sample measured it
    fp = s["verified"]["flag_precision"]  # every sample drawn: every flagged one too
    assert (fp is not None) == (flagged_at_draw > 0)
    if fp is not None:
        assert fp["n_flagged_verified"] == flagged_at_draw and 0 <= fp["estimate"] <= 1
        html = _flat((out / "report.html").read_text())
        assert f"ofthe{flagged_at_draw}flagged" in html and "werewrong" in html
    res = CliRunner().invoke(main, ["verify", str(out), "--apply", str(tmp_path / "checked.csv")])
    assert f"noise: {s['headline']['text']}" in res.output
