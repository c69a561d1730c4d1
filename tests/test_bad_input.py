"""Bad input, interruption and concurrency: every case ends in a one-line error with its own
exit code or a skip with its reason, and nothing in the input or an audit is lost or
overwritten. Fixtures are built on the fly."""

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import COLORS, colour_tree, make_image
from PIL import Image

from dqaudit.cli import main
from dqaudit.io import outputs

REPO = Path(__file__).resolve().parents[1]
FAST = ["-q", "--model", "lite0", "--num-workers", "0", "--no-pdf"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def ok(*args):
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    return res.output


def one_line_error(res, code, text):
    """Exit ``code``, one line that says ``text``, no traceback."""
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and text in lines[0], res.output


def tree_digest(folder):
    """Every file under ``folder`` (names as bytes: some are not UTF-8) and its bytes."""
    out = {}
    for root, _, files in os.walk(os.fsencode(folder)):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as fh:
                out[path] = hashlib.sha256(fh.read()).hexdigest()
    return out


@pytest.fixture
def tree(tmp_path):
    return colour_tree(tmp_path / "tree", per_class=6)


@pytest.fixture
def audit(tree, tmp_path):
    out = tmp_path / "audit"
    ok("scan", tree, "--out", out, "--no-clr", *FAST)
    return out


# ------------------------------------------------------------------ files a user will have

def test_names_that_are_not_utf8_are_samples_or_skipped_with_a_reason(tree, tmp_path):
    raw = os.fsencode(tree)
    os.rename(os.path.join(raw, b"red", b"red_0.png"), os.path.join(raw, b"red", b"r\xe9d.png"))
    with open(os.path.join(raw, b"red", b"n\xf6tes.txt"), "wb") as fh:
        fh.write(b"not an image")
    before = tree_digest(tree)
    out = tmp_path / "o"
    ok("scan", tree, "--out", out, "--no-clr", *FAST)
    samples = pd.read_csv(out / "samples.csv")
    assert "red/r\\xe9d.png" in set(samples["id"])  # the odd byte, shown as \xNN
    skipped = pd.read_csv(out / "skipped.csv")
    assert skipped["path"].str.endswith("n\\xf6tes.txt").any()
    assert "not an image file" in skipped["reason"].iat[0]
    assert (out / "report.html").exists() and json.loads((out / "summary.json").read_text())
    # the samples table's printable path still finds the file (export copies it)
    ok("relabel", "export", out, "--to", "folder", "--dest", tmp_path / "clean")
    assert len(list((tmp_path / "clean").rglob("*.png"))) == len(samples)
    assert tree_digest(tree) == before


def test_classes_too_small_to_learn_are_left_out_with_their_reason(tree, tmp_path):
    make_image(tree / "gren" / "typo.png", COLORS["green"], seed=99)  # a one-sample typo class
    out = tmp_path / "o"
    ok("scan", tree, "--out", out, "--no-clr", *FAST)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"]["classes"] == ["blue", "green", "red"]
    assert summary["n_samples"] == 18
    reason = pd.read_csv(out / "skipped.csv")["reason"].iat[0]
    assert "class 'gren' has 1 sample" in reason and "fewer than 3" in reason


def test_two_images_per_class_is_an_error_that_names_the_fix(tmp_path):
    root = colour_tree(tmp_path / "tiny", per_class=2)
    res = invoke("scan", root, "--out", tmp_path / "o", *FAST)
    one_line_error(res, 3, "an audit needs two classes of at least 3 samples")
    assert not (tmp_path / "o" / "summary.json").exists()


def test_missing_value_spellings_are_no_label_not_a_class(tree, tmp_path):
    rows = [{"path": str(p), "label": p.parent.name} for p in sorted(tree.rglob("*.png"))]
    rows += [{"path": rows[i]["path"], "label": v} for i, v in enumerate(["NA", "None", "null"])]
    extra = [tmp_path / f"x{i}.png" for i in range(3)]
    for i, p in enumerate(extra):
        make_image(p, (9, 9, 9), seed=i)
    rows += [{"path": str(p), "label": v} for p, v in zip(extra, ["NA", "null", ""])]
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    out = tmp_path / "o"
    ok("scan", tmp_path / "m.csv", "--out", out, "--no-clr", *FAST)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"]["classes"] == ["blue", "green", "red"]
    reasons = pd.read_csv(out / "skipped.csv", keep_default_na=False)["reason"]
    assert reasons.str.contains("'NA' reads as missing").any()


def test_a_class_name_with_dollar_signs_renders(tmp_path):
    root = colour_tree(tmp_path / "t", per_class=6, classes={"$\\frac{$": (220, 30, 30),
                                                             "b": (30, 40, 220)})
    out = tmp_path / "o"
    ok("scan", root, "--out", out, "--no-clr", *FAST)
    assert "$\\frac{$" in (out / "report.html").read_text()


def test_a_strip_image_decodes_in_bounded_memory(tree, tmp_path):
    from dqaudit.embed.encoders import Preprocessing
    from dqaudit.embed.loader import decode

    strip = tree / "red" / "strip.png"
    Image.fromarray(np.zeros((1, 20000, 3), np.uint8)).save(strip)
    arr = decode(str(strip), Preprocessing(image_size=224, mean=(0.5,) * 3, std=(0.5,) * 3))
    assert arr.shape == (3, 224, 224)
    ok("scan", tree, "--out", tmp_path / "o", "--no-clr", *FAST)


def test_options_out_of_range_are_usage_errors(tree, tmp_path):
    res = invoke("scan", tree, "--out", tmp_path / "o", "--batch-size", "-1")
    assert res.exit_code == 2 and "--batch-size" in res.output


# ------------------------------------------------------------------ checks at the door

def test_an_output_folder_that_cannot_be_written_fails_before_any_work(tree, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    res = invoke("scan", tree, "--out", blocker / "out", *FAST)
    one_line_error(res, 3, "cannot write there")
    assert not (tmp_path / "cache").exists()  # nothing was embedded


def test_a_cache_that_cannot_be_written_is_read_not_written(tree, tmp_path, monkeypatch,
                                                            caplog):
    blocker = tmp_path / "cache_file"
    blocker.write_text("x")
    monkeypatch.setenv("DQAUDIT_CACHE_DIR", str(blocker / "cache"))
    ok("scan", tree, "--out", tmp_path / "o", "--no-clr", *FAST)
    assert "cannot be written" in caplog.text and "carrying on" in caplog.text


def test_user_csvs_that_cannot_be_read_name_the_fix(audit, tmp_path):
    (tmp_path / "latin1.csv").write_bytes("id,label\nred/red_1.png,gr\xfcn\n".encode("latin-1"))
    one_line_error(invoke("relabel", "apply", audit, tmp_path / "latin1.csv"), 3, "not UTF-8")
    (tmp_path / "empty.csv").write_text("")
    one_line_error(invoke("relabel", "apply", audit, tmp_path / "empty.csv"), 3, "is empty")


def test_commands_on_a_folder_that_is_not_an_audit_say_so(tmp_path):
    (tmp_path / "plain").mkdir()
    for args in (["relabel", "queue", tmp_path / "plain", "--budget", "5"],
                 ["relabel", "export", tmp_path / "plain", "--to", "csv", "--dest",
                  tmp_path / "x.csv"],
                 ["report", tmp_path / "plain"], ["clr", tmp_path / "plain"]):
        one_line_error(invoke(*args), 3, "not an audit folder")


# ------------------------------------------------------------------ exports stay inside --dest

def test_export_paths_stay_inside_the_destination(tmp_path):
    root = tmp_path / "imgs"
    rows = []
    for c, (label, split) in enumerate([("../../escape", "train"), ("/abs", "../up"),
                                        ("ok", "test")]):
        for k in range(4):
            p = make_image(root / f"{c}_{k}.png", list(COLORS.values())[c], seed=c * 10 + k)
            rows.append({"path": p.name, "label": label, "split": split})
    pd.DataFrame(rows).to_csv(root / "m.csv", index=False)
    victim = tmp_path / "escape"
    out = tmp_path / "o"
    ok("scan", root / "m.csv", "--out", out, "--no-clr", *FAST)
    dest = tmp_path / "deep" / "dest"
    ok("relabel", "export", out, "--to", "folder", "--dest", dest)
    written = [p for p in tmp_path.rglob("*.png") if root not in p.parents]
    assert len(written) == 12 and all(dest in p.parents for p in written)
    assert not victim.exists()


def test_export_never_writes_over_the_input(tree, tmp_path):
    rows = [{"path": str(p), "label": p.parent.name} for p in sorted(tree.rglob("*.png"))]
    manifest = tmp_path / "m.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    out = tmp_path / "o"
    ok("scan", manifest, "--out", out, "--no-clr", *FAST)
    before = manifest.read_bytes(), tree_digest(tree)
    one_line_error(invoke("relabel", "export", out, "--to", "csv", "--dest", manifest), 3,
                   "is the input manifest")
    one_line_error(invoke("relabel", "export", out, "--to", "csv", "--dest", manifest,
                          "--force"), 3, "is the input manifest")
    one_line_error(invoke("relabel", "export", out, "--to", "folder", "--dest",
                          tree / "red" / "clean"), 3, "inside the input dataset's folder")
    (tmp_path / "taken.csv").write_text("keep me")
    one_line_error(invoke("relabel", "export", out, "--to", "csv", "--dest",
                          tmp_path / "taken.csv"), 3, "--force")
    ok("relabel", "export", out, "--to", "csv", "--dest", tmp_path / "taken.csv", "--force")
    assert (manifest.read_bytes(), tree_digest(tree)) == before


# ------------------------------------------------------------------ corrections are never lost

def correction(audit, tmp_path, label="green"):
    sid = pd.read_parquet(audit / "samples.parquet").query("label == 'red'")["id"].iat[0]
    pd.DataFrame({"id": [sid], "label": [label]}).to_csv(tmp_path / "fix.csv", index=False)
    return sid, tmp_path / "fix.csv"


def test_the_same_apply_twice_counts_once(audit, tmp_path):
    sid, fix = correction(audit, tmp_path)
    ok("relabel", "apply", audit, fix)
    counts = np.load(audit / "label_counts.npy")
    out = ok("relabel", "apply", audit, fix)
    assert "already applied" in out
    np.testing.assert_array_equal(np.load(audit / "label_counts.npy"), counts)
    assert len(pd.read_csv(audit / "corrections.csv")) == 1


def test_a_rescan_keeps_and_reapplies_the_corrections(audit, tree, tmp_path, caplog):
    sid, fix = correction(audit, tmp_path)
    ok("relabel", "apply", audit, fix, "--annotator", "ana")
    caplog.set_level(logging.INFO, logger="dqaudit")
    ok("scan", tree, "--out", audit, "--no-clr", *FAST[1:])
    assert "re-applied 1 of 1 corrections" in caplog.text
    samples = pd.read_parquet(audit / "samples.parquet").set_index("id")
    book = pd.read_csv(audit / "corrections.csv")
    assert samples.at[sid, "label"] == "green" and book["annotator"].tolist() == ["ana"]
    assert list((audit / "previous").glob("*/corrections.csv"))  # the earlier ledger, kept


def test_a_rescan_without_pdf_leaves_no_stale_pdf(tree, tmp_path):
    out = tmp_path / "o"
    ok("scan", tree, "--out", out, "--no-clr", *FAST[:-1])
    assert (out / "report.pdf").exists()
    ok("scan", tree, "--out", out, "--no-clr", *FAST)
    assert not (out / "report.pdf").exists()


KILLED_APPLY = """
import os, sys
import dqaudit.api as api
def die(*a, **k):
    os._exit(9)  # as SIGKILL: no cleanup runs
api.Audit.rescore = die
api.Audit.load(sys.argv[1]).apply_corrections(sys.argv[2])
"""


def test_an_apply_killed_half_way_is_undone_and_runs_again_once(audit, tmp_path):
    sid, fix = correction(audit, tmp_path)
    before = np.load(audit / "label_counts.npy")
    killed = subprocess.run([sys.executable, "-c", KILLED_APPLY, str(audit), str(fix)])
    assert killed.returncode == 9
    assert (audit / outputs.ROLLBACK_DIR).exists()  # the ledger was written, the re-rank not
    ok("relabel", "apply", audit, fix)
    counts = np.load(audit / "label_counts.npy")
    assert counts.sum() == before.sum() + 1  # one annotation, not two
    assert len(pd.read_csv(audit / "corrections.csv")) == 1
    assert not (audit / outputs.ROLLBACK_DIR).exists()


def test_a_folder_mixing_two_runs_is_refused(audit, tree, tmp_path):
    other = tmp_path / "other"
    make_image(tree / "red" / "extra.png", COLORS["red"], seed=77)
    ok("scan", tree, "--out", other, "--no-clr", *FAST)
    shutil.copy(other / "samples.parquet", audit / "samples.parquet")
    one_line_error(invoke("report", audit, "--no-pdf"), 3, "is not the file this audit's")


# ------------------------------------------------------------------ kills and two writers

KILLED_EMBED = """
import os, sys
import dqaudit.embed as embed
embed.FLUSH_SECONDS = 0.0
real = embed.encode_batch
calls = []
def encode_then_die(*a, **k):
    calls.append(1)
    if len(calls) > 2:
        os._exit(9)  # as SIGKILL, after two batches
    return real(*a, **k)
embed.encode_batch = encode_then_die
from dqaudit.cli import main
main(["scan", sys.argv[1], "--out", sys.argv[2], "--batch-size", "4", "-q", "--model",
      "lite0", "--num-workers", "0", "--no-clr", "--no-report"])
"""


def test_a_killed_scan_resumes_from_the_cache(tree, tmp_path):
    out = tmp_path / "o"
    killed = subprocess.run([sys.executable, "-c", KILLED_EMBED, str(tree), str(out)])
    assert killed.returncode == 9
    ok("scan", tree, "--out", out, "--no-clr", "--no-report", *FAST)
    assert json.loads((out / "summary.json").read_text())["embedding"]["n_cached"] == 8


def test_a_second_writer_is_refused(tree, tmp_path):
    out = tmp_path / "o"
    with outputs.locked(out):  # a scan of this process holds the folder
        res = subprocess.run([sys.executable, "-m", "dqaudit", "scan", str(tree), "--out",
                              str(out), *FAST], capture_output=True, text=True)
    assert res.returncode == 3
    assert "being written by another dqaudit command" in res.stderr


def test_a_forked_child_never_keeps_the_folder_locked(tmp_path):
    """A process forked while a command held the folder (a DataLoader worker, a database
    server) must not hold it for the next command after the first has finished."""
    out = tmp_path / "o"
    release_r, release_w = os.pipe()
    with outputs.locked(out):
        pid = os.fork()
        if pid == 0:  # the child: alive, holding every descriptor it inherited, until told
            os.read(release_r, 1)
            os._exit(0)
    try:
        res = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                              "from dqaudit.io import outputs\n"
                              "with outputs.locked(Path(sys.argv[1])): print('got it')",
                              str(out)], capture_output=True, text=True)
    finally:
        os.write(release_w, b"x")
        os.waitpid(pid, 0)
    assert res.returncode == 0 and "got it" in res.stdout, res.stderr[-1000:]


def test_concurrent_writes_of_one_file_never_collide(tmp_path):
    errors = []

    def write(i):
        try:
            for k in range(50):
                outputs.write_json(tmp_path / "s.json", {"writer": i, "k": k})
        except Exception as exc:  # noqa: BLE001 - any failure is the bug
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and json.loads((tmp_path / "s.json").read_text())["k"] == 49
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]  # no temporary file left


def test_nothing_under_the_root_is_ignored_silently(tree, tmp_path):
    (tree / "README.txt").write_text("about")
    make_image(tree / ".thumbs" / "x.png", (1, 2, 3))
    make_image(tree / "red" / ".hidden.png", (1, 2, 3))
    (tree / "blue" / "loop").symlink_to(tree / "blue", target_is_directory=True)
    out = tmp_path / "o"
    ok("scan", tree, "--out", out, "--no-clr", *FAST)
    skipped = pd.read_csv(out / "skipped.csv").set_index("path")["reason"]
    assert skipped[str(tree / "README.txt")] == "not inside a class folder"
    assert "hidden" in skipped[str(tree / ".thumbs")]
    assert "hidden" in skipped[str(tree / "red" / ".hidden.png")]
    assert "not followed" in skipped[str(tree / "blue" / "loop")]
    assert json.loads((out / "summary.json").read_text())["n_samples"] == 18


SIGTERMED = """
import os, signal, sys
from dqaudit.cli.boundary import exit_on_sigterm
exit_on_sigterm()
try:
    os.kill(os.getpid(), signal.SIGTERM)
    signal.pause()
finally:
    open(sys.argv[1], "w").write("cleaned up")
"""


def test_sigterm_runs_the_cleanup_and_exits_143(tmp_path):
    marker = tmp_path / "marker"
    res = subprocess.run([sys.executable, "-c", SIGTERMED, str(marker)])
    assert res.returncode == 143 and marker.read_text() == "cleaned up"


def test_an_output_folder_inside_the_dataset_is_refused(tree, tmp_path):
    before = tree_digest(tree)
    for out in (tree, tree / "audit"):
        one_line_error(invoke("scan", tree, "--out", out, *FAST), 3,
                       "would be written into the input")
    assert tree_digest(tree) == before and not (tree / "audit").exists()


def test_a_folder_named_in_a_manifest_is_skipped_as_a_folder(tree, tmp_path):
    rows = [{"path": str(p), "label": p.parent.name} for p in sorted(tree.rglob("*.png"))]
    rows.append({"path": str(tree / "red"), "label": "red"})
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    ok("scan", tmp_path / "m.csv", "--out", tmp_path / "o", "--no-clr", *FAST)
    skipped = pd.read_csv(tmp_path / "o" / "skipped.csv").set_index("path")["reason"]
    assert skipped[str(tree / "red")] == "a folder, not an image file"
