"""A reviewer's work survives anything: a rescan killed at any write, a failing rescan, a new
review queue over a filled one; and every expected failure at the CLI is one line with a
documented exit code. Properties over families of kill points and failures, not one case each."""

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dqaudit.api import Audit
from dqaudit.cli import main
from dqaudit.errors import DqauditError, describe_os_error
from dqaudit.io import outputs

REPO = Path(__file__).resolve().parents[1]

# an audit of arrays saved into a folder, a reviewer's corrections applied, then a rescan into
# the same folder, killed (os._exit: no cleanup runs, as with SIGKILL) at write number KILL_AT
SCRIPT = textwrap.dedent("""
    import os, sys
    from contextlib import contextmanager
    import numpy as np, pandas as pd
    from dqaudit.io import outputs
    from dqaudit.api import Audit
    from dqaudit.config import AuditConfig, ReportConfig

    out, step, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    x = (rng.normal(size=(3, 8)) * 4)[y] + rng.normal(size=(60, 8))
    noisy = y.copy(); noisy[[0, 21, 42]] = [1, 2, 0]
    config = AuditConfig(clr=None, report=ReportConfig(enabled=False))
    ids = [f"s{i:02d}" for i in range(60)]
    if step == "first":
        audit = Audit.from_arrays(noisy, embeddings=x, ids=ids, config=config, out_dir=out)
        audit.apply_corrections(pd.DataFrame({"id": ["s00", "s21"], "label": ["0", "1"]}),
                                annotator="reviewer")
        sys.exit(0)
    writes = [0]
    real = outputs.replacing

    @contextmanager
    def counting(path):
        writes[0] += 1
        if writes[0] == kill_at:
            os._exit(9)
        with real(path) as tmp:
            yield tmp

    outputs.replacing = counting
    Audit.from_arrays(noisy, embeddings=x, ids=ids, config=config, out_dir=out)
    print("writes", writes[0])
""")


def run_step(out: Path, step: str, kill_at: int = 0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, str(out), step, str(kill_at)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)


def state(out: Path) -> dict:
    """What a user sees of an audit folder: the labels, the ledger, the headline count."""
    audit = Audit.load(out)
    book = pd.read_csv(out / "corrections.csv", dtype=str)
    return {"labels": audit.samples.set_index("id")["label"].astype(str).to_dict(),
            "ledger": sorted(zip(book["id"], book["label"])),
            "flagged": int(audit.summary["label_error_count"])}


@pytest.fixture(scope="module")
def first_audit(tmp_path_factory):
    """An audit folder with two corrections, made once (copied by each test)."""
    out = tmp_path_factory.mktemp("first") / "audit"
    assert run_step(out, "first").returncode == 0
    return out


def copy_of(first: Path, tmp: Path) -> Path:
    import shutil

    shutil.copytree(first, tmp / "audit")
    return tmp / "audit"


@pytest.fixture(scope="module")
def reference(first_audit, tmp_path_factory):
    """The earlier audit (with two corrections), and the same folder after an uninterrupted
    rescan: what every killed-then-rerun rescan must end as."""
    out = copy_of(first_audit, tmp_path_factory.mktemp("ref"))
    before = state(out)
    done = run_step(out, "rescan")
    assert done.returncode == 0, done.stderr[-2000:]
    n_writes = int(done.stdout.split()[-1])
    return before, state(out), n_writes


def test_the_earlier_corrections_are_kept_by_an_uninterrupted_rescan(reference):
    before, after, n_writes = reference
    assert before["ledger"] == [("s00", "0"), ("s21", "1")]
    assert after["ledger"] == before["ledger"]
    assert after["labels"]["s00"] == "0" and after["labels"]["s21"] == "1"
    assert n_writes >= 8  # the kill points below cover every one of them


@settings(max_examples=examples(6), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fraction=st.floats(0, 1))
def test_a_rescan_killed_at_any_write_loses_no_correction(reference, first_audit,
                                                          tmp_path_factory, fraction):
    """Killed at any of its writes, a rescan leaves a folder that loads (the earlier audit put
    back whole, or the new one complete) with every correction; run again, it ends exactly as
    the uninterrupted rescan; no lock or temporary file stays behind."""
    before, after, n_writes = reference
    kill_at = 1 + int(fraction * (n_writes - 1))
    out = copy_of(first_audit, tmp_path_factory.mktemp("kill"))
    killed = run_step(out, "rescan", kill_at)
    assert killed.returncode == 9, (kill_at, killed.stderr[-1500:])
    now = state(out)  # loading recovers an unfinished transaction
    assert now["ledger"] == before["ledger"], kill_at
    assert now["labels"]["s00"] == "0" and now["labels"]["s21"] == "1", kill_at
    again = run_step(out, "rescan")
    assert again.returncode == 0, again.stderr[-1500:]
    assert state(out) == after
    left = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert left == [], left


def test_a_failing_rescan_puts_the_earlier_audit_back(first_audit, tmp_path, monkeypatch):
    out = copy_of(first_audit, tmp_path)
    before = state(out)
    files = sorted(p.name for p in out.iterdir())
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    x = (rng.normal(size=(3, 8)) * 4)[y] + rng.normal(size=(60, 8))
    real = outputs.write_array

    def full_disk(out_dir, name, array):
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(out_dir) / name))

    monkeypatch.setattr(outputs, "write_array", full_disk)
    from dqaudit.config import AuditConfig, ReportConfig

    with pytest.raises(DqauditError, match="No space left on device"):
        Audit.from_arrays(y, embeddings=x, ids=[f"s{i:02d}" for i in range(60)],
                          config=AuditConfig(clr=None, report=ReportConfig(enabled=False)),
                          out_dir=out)
    monkeypatch.setattr(outputs, "write_array", real)
    assert state(out) == before
    assert sorted(p.name for p in out.iterdir()) == files  # nothing half-written beside


def test_a_new_queue_never_overwrites_filled_unapplied_rows(first_audit, tmp_path):
    out = copy_of(first_audit, tmp_path)
    runner = CliRunner()
    assert runner.invoke(main, ["relabel", "queue", str(out), "--budget", "5",
                                "--no-thumbnails"]).exit_code == 0
    queue = pd.read_csv(out / "review_queue.csv", dtype=str, keep_default_na=False)
    queue.loc[0, "correct_label"] = "2"
    queue.to_csv(out / "review_queue.csv", index=False)
    again = runner.invoke(main, ["relabel", "queue", str(out), "--budget", "5"])
    assert again.exit_code == 3 and "never applied" in again.output
    assert pd.read_csv(out / "review_queue.csv", dtype=str,
                       keep_default_na=False).loc[0, "correct_label"] == "2"
    applied = runner.invoke(main, ["relabel", "apply", str(out), str(out / "review_queue.csv")])
    assert applied.exit_code == 0, applied.output
    assert runner.invoke(main, ["relabel", "queue", str(out), "--budget", "5",
                                "--no-thumbnails"]).exit_code == 0


FAILURES = [
    (errno.ENOSPC, "no space left on the device"),
    (errno.ENAMETOOLONG, "file name too long"),
    (errno.EACCES, "permission denied"),
    (errno.ENOENT, "no such file or folder"),
    (errno.EROFS, "read-only file system"),
    (errno.EIO, "input/output error"),
]


@settings(max_examples=examples(30), deadline=None)
@given(failure=st.sampled_from(FAILURES), name=st.text(min_size=1, max_size=40).filter(
    lambda t: "\n" not in t and "\r" not in t and "\x00" not in t))
def test_file_system_failures_are_one_line_naming_the_file_and_a_fix(failure, name):
    code, what = failure
    line = describe_os_error(OSError(code, os.strerror(code), name))
    assert line.startswith(f"{name}: {what}; ") and "\n" not in line and len(line) < 400


@settings(max_examples=examples(20), deadline=None)
@given(failure=st.sampled_from(FAILURES + [(None, "input error")]),
       name=st.text(min_size=1, max_size=30).filter(lambda t: t.isprintable()))
def test_the_app_boundary_says_what_the_cli_says(failure, name):
    """The plugin's operators share the CLI's reading of a failure (errors.expected_failure):
    an expected one is one App notification naming the file and the fix, a bug re-raises."""
    import importlib.util

    from dqaudit.errors import InputError, expected_failure

    spec = importlib.util.spec_from_file_location(
        "dq_plugin", Path(__file__).parents[1] / "plugins" / "dqaudit" / "__init__.py")
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    code, what = failure
    exc = InputError(f"{name}: bad") if code is None else OSError(code, os.strerror(code), name)
    notes = []

    class Ops:
        def notify(self, text, variant):
            notes.append((text, variant))

    class Ctx:
        ops = Ops()

    class Op:
        @plugin.reported
        def execute(self, ctx):
            raise exc

    out = Op().execute(Ctx())
    assert notes == [(f"dqaudit: {expected_failure(exc)}", "error")]
    assert out == {"error": expected_failure(exc)}
    assert code is None or what in out["error"]

    class Bug:
        @plugin.reported
        def execute(self, ctx):
            raise KeyError("a bug")

    with pytest.raises(KeyError):
        Bug().execute(Ctx())


@pytest.mark.parametrize("damage", ["truncated", "not_json", "a_list"])
def test_a_damaged_summary_is_one_line_with_exit_3(first_audit, tmp_path, damage):
    out = copy_of(first_audit, tmp_path)
    path = out / "summary.json"
    text = path.read_text()
    path.write_text({"truncated": text[: len(text) // 2], "not_json": "\x00\x01garbage",
                     "a_list": "[1, 2]"}[damage])
    for args in (["report", str(out), "--no-pdf"], ["relabel", "queue", str(out), "--budget", "3"]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 3, (args, res.output)
        assert "summary.json: damaged" in res.output and "Traceback" not in res.output


def test_errors_at_the_door_and_ctrl_c(first_audit, tmp_path, monkeypatch):
    """An image deleted after the scan, a disk that fills, and Ctrl-C: one line each, with the
    README's exit codes (3, 3, 130); a true bug keeps its traceback and asks for a report."""
    import dqaudit.api as api

    out = copy_of(first_audit, tmp_path)

    def raising(exc):
        def f(*a, **k):
            raise exc
        return f

    cases = [(OSError(errno.ENOSPC, "No space left on device", str(out / "x.tmp")), 3,
              "no space left on the device"),
             (FileNotFoundError(errno.ENOENT, "No such file", "/data/gone.png"), 3,
              "moved or deleted"),
             (KeyboardInterrupt(), 130, "interrupted"),
             (ZeroDivisionError("boom"), 1, "this is a bug in dqaudit")]
    for exc, code, text in cases:
        monkeypatch.setattr(api.Audit, "render_report", raising(exc))
        res = CliRunner().invoke(main, ["report", str(out), "--no-pdf"])
        assert res.exit_code == code, (exc, res.output)
        assert text in res.output
    assert not (out / ".dqaudit.lock").exists()
    assert json.loads((out / "summary.json").read_text())["n_samples"] == 60


@pytest.fixture(scope="module")
def tree_audit(tmp_path_factory):
    """An audit of arrays whose samples are real files ``root/<class>/<k>.png``, ids relative
    to ``root`` as a class-folder scan gives them."""
    from dqaudit.config import AuditConfig, ReportConfig

    base = tmp_path_factory.mktemp("tree")
    root = base / "data"
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 12)
    x = (rng.normal(size=(3, 8)) * 4)[y] + rng.normal(size=(36, 8))
    ids = [f"c{c}/{k:02d}.png" for k, c in enumerate(y)]
    for i in ids:
        (root / i).parent.mkdir(parents=True, exist_ok=True)
        (root / i).write_bytes(b"x")
    out = base / "audit"
    Audit.from_arrays([f"c{c}" for c in y], embeddings=x, ids=ids,
                      paths=[str(root / i) for i in ids], out_dir=out,
                      config=AuditConfig(clr=None, report=ReportConfig(enabled=False)))
    return out, root, ids


SPELLINGS = ["id", "spaced", "dot", "absolute", "via_parent"]


def spelled(how: str, sid: str, root: Path) -> str:
    return {"id": sid, "spaced": f"  {sid} ", "dot": f"./{sid}",
            "absolute": str(root / sid),
            "via_parent": str(root / "c0" / ".." / sid)}[how]


@settings(max_examples=examples(25), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.integers(0, 35), st.sampled_from(SPELLINGS),
                               st.sampled_from(["c0", "c1", "c2"]), st.booleans()),
                     min_size=1, max_size=6))
def test_corrections_name_samples_by_meaning_and_count_once(tree_audit, tmp_path, rows):
    """Whatever spelling names a sample (its id, spaced, ./id, its absolute path, a path through
    ..), the correction lands on that sample; the same row twice in one file is one
    annotation."""
    import shutil
    import tempfile

    from dqaudit.api import Audit
    from dqaudit.io.store import read_ledger

    first, root, ids = tree_audit
    out = Path(tempfile.mkdtemp(dir=tmp_path)) / "audit"
    shutil.copytree(first, out)
    table = []
    for k, how, label, twice in rows:
        column = "path" if how in ("absolute", "via_parent") else "id"
        row = {"id": "", "path": "", "label": label, "annotator": "ana"}
        row[column] = spelled(how, ids[k], root)
        table.extend([row, dict(row)] if twice else [row])
    Audit.load(out).apply_corrections(pd.DataFrame(table).astype(str), rerank=False)
    book = read_ledger(out)
    got = sorted(zip(book["id"], book["label"]))
    want = sorted({(ids[k], label) for k, _, label, _ in rows})
    assert got == want
