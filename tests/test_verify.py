"""Verified noise rate end to end: draw, grow, apply, headline (dqaudit verify)."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import COLORS, make_image

from dqaudit.cli import main
from dqaudit.estimates.headline import headline

WRONG = {("red", 0): "blue", ("green", 1): "red", ("blue", 2): "green"}


def run(*args, code=0):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == code, res.output
    return res.output


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    """3 classes x 14 images, 3 filed under a wrong class folder; scanned once."""
    tmp = tmp_path_factory.mktemp("verify")
    root = tmp / "tree"
    truth = {}
    for c, (name, color) in enumerate(COLORS.items()):
        for k in range(14):
            folder = WRONG.get((name, k), name)
            path = make_image(root / folder / f"{name}_{k}.png", color, seed=10 * c + k)
            truth[f"{folder}/{path.name}"] = name
    out = tmp / "audit"
    run("scan", root, "--out", out, "-q", "--num-workers", "0", "--no-pdf",
        "--clr-repeats", "2")
    return out, truth


@pytest.fixture
def audit(scanned, tmp_path):
    import shutil

    out, truth = scanned
    copy = tmp_path / "audit"
    shutil.copytree(out, copy)
    return copy, truth


def test_draw_grow_apply_and_the_headline(audit):
    out, truth = audit
    summary = json.loads((out / "summary.json").read_text())
    assert headline(summary)["source"] == "gold-free"
    assert summary["clr"]["bracket_low"] <= summary["clr"]["estimate"] <= \
        summary["clr"]["bracket_high"]
    assert summary["verify_size_for_2pt"] > 0

    text = run("verify", out, "--size", "12", "--half-width", "0.05")
    assert "12 samples to verify" in text and "verified labels" in text
    first = pd.read_csv(out / "verify_sample.csv", dtype=str, keep_default_na=False)
    assert len(first) == 12 and first["design"].nunique() == 1
    assert (first["verified_label"] == "").all()
    frame = pd.read_parquet(out / "verify_frame.parquet")
    design = json.loads((out / "summary.json").read_text())["verification"]
    # inclusion probabilities n_h / N_h over the whole frame sum to the sample size
    sizes = np.bincount(frame["stratum"])
    assert np.isclose((np.array(design["allocation"]) / sizes)[frame["stratum"]].sum(), 12)

    # a person checks the first rows, then the sample grows: their work is kept
    first.loc[:3, "verified_label"] = [truth[i] for i in first["id"][:4]]
    first.to_csv(out / "verify_sample.csv", index=False)
    run("verify", out, "--size", "20")
    grown = pd.read_csv(out / "verify_sample.csv", dtype=str, keep_default_na=False)
    assert len(grown) == 20 and grown["id"][:12].tolist() == first["id"].tolist()
    assert grown["verified_label"][:4].tolist() == first["verified_label"][:4].tolist()

    grown["verified_label"] = [truth[i] for i in grown["id"]]
    grown.to_csv(out / "filled.csv", index=False)
    text = run("verify", out, "--apply", out / "filled.csv", "--annotator", "ana")
    assert "verified 20 of 20 drawn" in text
    summary = json.loads((out / "summary.json").read_text())
    v = summary["verified"]
    assert v["n_verified"] == 20 and 0 <= v["ci_low_at_draw"] <= v["estimate_at_draw"] \
        <= v["ci_high_at_draw"] <= 1
    n_wrong = sum(truth[i] != lab for i, lab in zip(grown["id"], grown["given_label"]))
    assert v["n_errors_found"] == n_wrong
    # the one headline: verdict, cover and summary agree
    head = headline(summary)
    assert head["source"] == "verified" and head["rate"] == v["estimate"]
    assert summary["verdict"]["source"] == "verified"
    assert f"{100 * v['estimate']:.1f}%" in summary["verdict"]["text"]
    html = (out / "report.html").read_text()
    assert "verified sample of 20 labels" in html
    # the verified labels went into the relabel ledger, once
    ledger = pd.read_csv(out / "corrections.csv")
    assert len(ledger) == 20 and set(ledger["annotator"]) == {"ana"}
    run("verify", out, "--apply", out / "filled.csv")
    assert len(pd.read_csv(out / "corrections.csv")) == 20
    # re-running the gold-free estimate keeps the verified one, and the headline with it
    text = run("clr", out, "--clr-repeats", "2")
    assert "plausible range without verification" in text
    summary = json.loads((out / "summary.json").read_text())
    kept = summary["verified"]
    assert (kept["estimate"], kept["n_verified"]) == (v["estimate"], v["n_verified"])
    assert summary["verdict"]["source"] == "verified"
    # the queue no longer offers verified samples
    run("relabel", "queue", out, "--budget", "50", "--no-thumbnails")
    assert not set(pd.read_csv(out / "review_queue.csv")["id"]) & set(grown["id"])


def test_zero_errors_found_gives_an_exact_upper_bound(audit):
    out, _ = audit
    run("verify", out, "--size", "10")
    s = pd.read_csv(out / "verify_sample.csv", dtype=str, keep_default_na=False)
    s["verified_label"] = s["given_label"]
    s.to_csv(out / "filled.csv", index=False)
    run("verify", out, "--apply", out / "filled.csv")
    v = json.loads((out / "summary.json").read_text())["verified"]
    assert v["estimate"] == 0 and v["ci_low"] == 0 and 0.2 < v["ci_high"] < 0.5
    assert "zero-error" in v["interval"]


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.assign(verified_label=["purple"] + [""] * (len(s) - 1)), "row 2: 'purple'"),
    (lambda s: pd.concat([s, s.head(1).assign(id="nope.png")]), "'nope.png' is not in"),
    (lambda s: s.assign(design="0123456789abcdef"), "another verification design"),
    (lambda s: s.drop(columns=["verified_label"]), "needs an 'verified_label' column"),
])
def test_bad_verified_files_write_nothing(audit, edit, message):
    out, _ = audit
    run("verify", out, "--size", "10")
    s = pd.read_csv(out / "verify_sample.csv", dtype=str, keep_default_na=False)
    s["verified_label"] = s["given_label"]
    edit(s).to_csv(out / "bad.csv", index=False)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    text = run("verify", out, "--apply", out / "bad.csv", code=3)
    assert message in text
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != "bad.csv"}
    assert after == {k: v for k, v in before.items() if k != "bad.csv"}


def test_verify_needs_a_sample_and_a_sensible_size(audit):
    out, _ = audit
    assert "no verification sample" in run("verify", out, "--apply", out / "summary.json",
                                           code=3)
    assert "give --size N" in run("verify", out, code=2)
    assert "larger than the" in run("verify", out, "--size", "1000", code=3)


def test_proportional_allocation_gives_the_binomial_zero_error_bound(audit):
    out, _ = audit
    run("verify", out, "--size", "12", "--uniform-share", "1")
    s = pd.read_csv(out / "verify_sample.csv", dtype=str, keep_default_na=False)
    s["verified_label"] = s["given_label"]
    s.to_csv(out / "filled.csv", index=False)
    run("verify", out, "--apply", out / "filled.csv")
    v = json.loads((out / "summary.json").read_text())["verified"]
    # proportional up to rounding: close to the simple random sample's 1 - 0.05^(1/12)
    assert v["ci_high"] == pytest.approx(1 - 0.05 ** (1 / 12), abs=0.03)
    assert "grown sample keeps its design" in run("verify", out, "--size", "20",
                                                  "--uniform-share", "0.3", code=3)


def test_python_api_draws_and_applies(audit):
    import dqaudit

    out, truth = audit
    drawn = dqaudit.draw_verification_sample(out, size=10)
    assert drawn["n_drawn"] == 10
    s = pd.read_csv(out / "verify_sample.csv", dtype=str, keep_default_na=False)
    s["verified_label"] = [truth[i] for i in s["id"]]
    res = dqaudit.apply_verified(out, s)
    assert res["n_verified"] == 10 and 0 <= res["ci_low_at_draw"] <= res["ci_high_at_draw"]
    html = (out / "report.html").read_text()
    assert "P(label wrong)" in html


def test_estimates_are_marked_stale_after_labels_change_and_refresh(audit, tmp_path):
    out, truth = audit
    summary = json.loads((out / "summary.json").read_text())
    assert headline(summary)["stale_label_changes"] == 0
    wrong = [i for i, lab in truth.items() if i.split("/")[0] != lab]
    pd.DataFrame({"id": wrong[:2], "label": [truth[i] for i in wrong[:2]]}).to_csv(
        tmp_path / "fix.csv", index=False)
    run("relabel", "apply", out, tmp_path / "fix.csv", "--annotator", "ana", "--no-clr-refresh")
    summary = json.loads((out / "summary.json").read_text())
    head = headline(summary)
    assert summary["label_changes"] == 2 and head["stale_label_changes"] == 2
    assert "STALE: 2 labels changed" in head["how"] and "dqaudit clr DIR" in head["how"]
    assert "STALE: 2 labels changed" in (out / "report.html").read_text()
    run("clr", out, "--clr-repeats", "2")
    assert headline(json.loads((out / "summary.json").read_text()))["stale_label_changes"] == 0

    # a verified estimate accounts for its own corrections, not for later ones
    run("verify", out, "--size", "10")
    s = pd.read_csv(out / "verify_sample.csv", dtype=str, keep_default_na=False)
    s["verified_label"] = [truth[i] for i in s["id"]]
    s.to_csv(out / "filled.csv", index=False)
    run("verify", out, "--apply", out / "filled.csv")
    assert headline(json.loads((out / "summary.json").read_text()))["stale_label_changes"] == 0
    rest = [i for i in wrong[2:] if i not in set(s["id"])]
    assert rest, "the third planted error was drawn; pick a fixture seed that leaves it out"
    pd.DataFrame({"id": rest[:1], "label": [truth[rest[0]]]}).to_csv(tmp_path / "f2.csv",
                                                                      index=False)
    run("relabel", "apply", out, tmp_path / "f2.csv")
    head = headline(json.loads((out / "summary.json").read_text()))
    assert head["source"] == "verified" and head["stale_label_changes"] == 1
    assert "dqaudit verify DIR --apply" in head["how"]
    run("verify", out, "--apply", out / "filled.csv")
    assert headline(json.loads((out / "summary.json").read_text()))[
        "stale_label_changes"] == 0


def test_relabel_apply_re_estimates_so_nothing_is_stale(audit, tmp_path):
    """After cleaning, the cover kept the scan's CLR estimate: relabel apply now re-runs it."""
    out, truth = audit
    before = json.loads((out / "summary.json").read_text())["clr"]
    wrong = [i for i, lab in truth.items() if i.split("/")[0] != lab]
    pd.DataFrame({"id": wrong, "label": [truth[i] for i in wrong]}).to_csv(
        tmp_path / "fix.csv", index=False)
    run("relabel", "apply", out, tmp_path / "fix.csv")
    summary = json.loads((out / "summary.json").read_text())
    head = headline(summary)
    assert summary["label_changes"] == len(wrong) and head["stale_label_changes"] == 0
    assert summary["clr"]["label_changes_at_estimate"] == len(wrong)
    assert summary["clr"]["estimate"] <= before["estimate"]  # the planted errors are fixed
    assert "STALE" not in (out / "report.html").read_text()
