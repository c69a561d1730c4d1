import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from dqaudit.cli import main

REPO = Path(__file__).resolve().parents[1]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_version_and_help():
    assert run("--version").output.startswith("dqaudit, version ")
    for cmd in ([], ["scan"], ["sample-data"]):
        res = run(*cmd, "--help")
        assert res.exit_code == 0 and "Usage:" in res.output


def test_scan_class_tree_with_bad_files(class_tree, tmp_path):
    (class_tree / "red" / "zero.png").write_bytes(b"")
    (class_tree / "green" / "fake.jpg").write_text("not an image")
    out = tmp_path / "out"
    res = run("scan", class_tree, "--out", out, "--quiet", "--num-workers", "0")
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_samples"] == 12 and summary["n_skipped"] == 2
    assert summary["class_counts"] == {"blue": 4, "green": 4, "red": 4}
    assert summary["model"] == "lite0+lite2" and summary["device"] == "cpu"
    assert summary["embedding"]["n_embedded"] == 12
    samples = pd.read_parquet(out / "samples.parquet")
    assert list(samples.columns[:4]) == ["id", "path", "label", "split"]
    assert len(samples) == 12
    csv = pd.read_csv(out / "samples.csv")
    assert csv["id"].tolist() == samples["id"].tolist()
    skipped = pd.read_csv(out / "skipped.csv")
    assert sorted(skipped["reason"].str.split(" ").str[0]) == ["empty", "not"]


@pytest.mark.parametrize("args,needle", [
    (["/no/such/dir"], "no such file"),
    (["{m}", "--label-column", "nope"], "no label column"),
])
def test_scan_bad_input_exit_code_3(tmp_path, class_tree, args, needle):
    m = tmp_path / "m.csv"
    pd.DataFrame({"path": ["tree/red/red_0.png"], "label": ["red"]}).to_csv(m, index=False)
    args = [a.format(m=m) for a in args]
    res = CliRunner().invoke(main, ["scan", *args, "--out", str(tmp_path / "o")])
    assert res.exit_code == 3  # 2 is click's own usage errors
    assert needle in res.output and res.output.count("\n") == 1


def test_scan_json_output(class_tree, tmp_path):
    res = run("scan", class_tree, "--out", tmp_path / "o", "--json", "--num-workers", "0",
              "--dup-threshold", "0.5")
    assert res.exit_code == 0
    envelope = json.loads(res.output)  # the one --json shape of every command
    summary = envelope["result"]
    assert envelope["headline"] == summary["headline"] and envelope["command"].endswith("scan")
    assert summary["n_samples"] == 12
    assert summary["score_parameters"]["duplicate_threshold"] == 0.5
    assert summary["score_parameters"]["fold_splits"] == 3  # repeated K-fold below 50,000
    # at cosine 0.5 the same-colour squares group together
    assert pd.read_parquet(tmp_path / "o" / "samples.parquet")["dup_group"].max() >= 0


def test_sample_data_is_reproducible_and_scans(tmp_path):
    res = run("sample-data", tmp_path / "s", "--per-class", "5", "--noise-rate", "0.2")
    assert res.exit_code == 0, res.output
    manifest = pd.read_csv(tmp_path / "s" / "manifest.csv")
    assert len(manifest) == 41 and manifest["corrupted"].sum() == 7  # 30 + 4 dups + 7 broken
    assert manifest["image_issue"].fillna("").value_counts().to_dict() == {
        "": 25, "exact_duplicate": 10, "blank": 2, "dark": 2, "blurry": 2}
    assert (manifest["corrupted"] == (manifest["label"] != manifest["true_label"])).all()
    run("sample-data", tmp_path / "s2", "--per-class", "5", "--noise-rate", "0.2")
    for name in manifest["path"]:
        assert (tmp_path / "s" / name).read_bytes() == (tmp_path / "s2" / name).read_bytes()
    res = run("scan", tmp_path / "s" / "manifest.csv", "--out", tmp_path / "o", "-q",
              "--num-workers", "0")
    assert res.exit_code == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["n_samples"] == 41
    # the default threshold groups each planted duplicate (the same pixels saved again, or the
    # file copied) with its source and nothing else: distinct drawings of a shape are not
    # near-duplicates (a blurred or darkened copy may be, so those are left out here)
    samples = pd.read_parquet(tmp_path / "o" / "samples.parquet")
    samples = samples[~samples["path"].str.contains("broken_(?:dark|blurry|blank)")]
    group = dict(zip(samples["path"].map(lambda p: Path(p).stem), samples["dup_group"]))
    planted = [name for name in group if name.startswith(("dup_", "broken_copy_"))]
    assert planted
    for name in planted:
        assert group[name] >= 0 and group[name] == group[name.split("_of_")[1]]
    expected = set(planted) | {name.split("_of_")[1] for name in planted}
    assert {name for name, g in group.items() if g >= 0} == expected


def test_committed_sample_data_matches_generator(tmp_path):
    """sample_data/shapes is exactly what `dqaudit sample-data` writes (no hand-edited data)."""
    run("sample-data", tmp_path / "g")
    committed = REPO / "sample_data" / "shapes"
    assert (committed / "manifest.csv").read_text() == (tmp_path / "g" / "manifest.csv").read_text()
    for model in ("careful", "copycat"):
        name = f"predictions/{model}.csv"
        assert (committed / name).read_text() == (tmp_path / "g" / name).read_text()
    names = sorted(p.name for p in (committed / "images").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "g" / "images").iterdir())


def test_committed_scenes_match_generator(tmp_path):
    """sample_data/scenes is exactly what `dqaudit sample-data --scenes` writes."""
    run("sample-data", "--scenes", tmp_path / "s")
    committed = REPO / "sample_data" / "scenes"
    assert (committed / "scenes.json").read_text() == (tmp_path / "s" / "scenes.json").read_text()
    names = sorted(p.name for p in (committed / "images").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "s" / "images").iterdir())


def test_fail_on_gates_a_release_with_its_own_exit_code(tmp_path, class_tree):
    (class_tree / "red" / "red_0.png").rename(class_tree / "blue" / "really_red.png")
    out = tmp_path / "o"
    args = ["scan", str(class_tree), "--out", str(out), "--no-clr", "--no-pdf", "-q",
            "--num-workers", "0", "--model", "lite0"]
    res = CliRunner().invoke(main, [*args, "--fail-on", "noisy"])
    level = json.loads((out / "summary.json").read_text())["verdict"]["level"]
    assert level == "noisy" and res.exit_code == 4 and "reached --fail-on noisy" in res.output
    # the same audit passes a gate it does not reach, and `report` gates too
    loose = CliRunner().invoke(main, [*args, "--verdict-thresholds", "0.5,0.9",
                                      "--fail-on", "some-noise"])
    assert loose.exit_code == 0, loose.output
    again = CliRunner().invoke(main, ["report", str(out), "--no-pdf", "-q", "--fail-on", "noisy"])
    assert again.exit_code == 0 and again.output == ""
    usage = CliRunner().invoke(main, ["scan", str(class_tree), "--out", str(out), "--fail-on",
                                      "dirty"])
    assert usage.exit_code == 2


def test_every_workflow_command_speaks_json_and_keeps_quiet(tmp_path):
    res = CliRunner().invoke(main, ["sample-data", str(tmp_path / "s"), "--per-class", "6",
                                    "--json"], catch_exceptions=False)
    info = json.loads(res.output)["result"]
    assert res.exit_code == 0 and info["n_images"] >= 36
    out = tmp_path / "o"
    scan = CliRunner().invoke(main, ["scan", str(tmp_path / "s" / "manifest.csv"), "--out",
                                     str(out), "-q", "--no-pdf", "--model", "lite0",
                                     "--num-workers", "0", "--clr-repeats", "2"])
    assert scan.exit_code == 0 and scan.output == ""
    queue = json.loads(CliRunner().invoke(main, ["relabel", "queue", str(out), "--budget", "3",
                                                 "--no-thumbnails", "--json"]).output)["result"]
    assert queue["queued"] == 3 and len(queue["ids"]) == 3
    pd.DataFrame({"id": queue["ids"][:1], "label": ["DROP"]}).to_csv(tmp_path / "f.csv",
                                                                   index=False)
    applied = CliRunner().invoke(main, ["relabel", "apply", str(out), str(tmp_path / "f.csv"),
                                        "--json", "--no-clr-refresh"])
    body = json.loads(applied.output)
    assert body["result"]["dropped"] == 1 and body["verdict"]["level"]
    assert "rate" in body["headline"] and body["out_dir"] == str(out)
    quiet = CliRunner().invoke(main, ["clr", str(out), "--clr-repeats", "2", "-q"])
    assert quiet.exit_code == 0 and quiet.output == ""
    clr = json.loads(CliRunner().invoke(main, ["clr", str(out), "--clr-repeats", "2",
                                               "--json"]).output)["result"]
    assert clr["label_changes_at_estimate"] == 1 and 0 <= clr["estimate"] <= 1


def test_scan_help_is_grouped_by_config_with_the_common_options_first():
    res = CliRunner().invoke(main, ["scan", "--help"])
    assert res.exit_code == 0
    heads = [line[:-1] for line in res.output.splitlines() if line and line[0].isupper()
             and line.endswith(":")]
    assert heads == ["Common options", "Input", "Encoder", "Scoring", "Estimate (CLR)",
                     "Report", "Scale", "Outputs and run"]
    common = res.output.split("Common options:")[1].split("Input:")[0]
    assert "--out" in common and "--label-column" in common and "--model" in common
    assert res.output.count("--clr-repeats") == 1  # every option once
