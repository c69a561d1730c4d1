"""The audit folder: what it holds, and the one reader and the one writer of it.

``Audit`` holds an audit's state in memory (``Stored``: the samples table, the summary, the
arrays, the corrections ledger and changelog, the verification frame and sample); ``read``
makes that state from a folder and ``write`` makes the folder from it (atomic writes, under the
folder's lock, summary.json last with a stamp of each data file). Workflows are functions of
those values; nothing else writes the folder, except the two files a person edits by hand that
a command hands out: ``review_queue.csv`` with its pictures (``write_queue``) and the report
(``report.render_report``). File formats are ``outputs``' (CSV of text, Parquet, .npy).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from dqaudit.errors import DqauditError
from dqaudit.io import outputs

REPORT_HTML = "report.html"
REPORT_PDF = "report.pdf"
QUEUE_CSV = "review_queue.csv"
CORRECTIONS_CSV = "corrections.csv"   # every annotation received, append-only ledger
CHANGELOG_CSV = "changelog.csv"       # every label change, with who / when / why
THUMBS_DIR = "review_thumbs"
VERIFY_SAMPLE_CSV = "verify_sample.csv"
VERIFY_FRAME = "verify_frame.parquet"
PREVIOUS_DIR = "previous"
LEDGER_COLUMNS = ["id", "label", "annotator", "note", "time", "batch"]
CHANGELOG_COLUMNS = ["id", "path", "old_label", "new_label", "annotator", "time", "note"]

# the arrays and tables ``write`` makes; summary.json records a stamp of each
DATA_FILES = (outputs.SAMPLES_PARQUET, outputs.SAMPLES_CSV, outputs.SKIPPED_CSV,
              outputs.EMBEDDINGS_NPY, outputs.LABEL_COUNTS_NPY, outputs.PROBS_NPY,
              outputs.IMAGE_STATS_NPY, outputs.REGIONS_NPY)
# the reviewers' work: a new scan into the folder keeps a copy and re-applies the ledger
EARLIER_WORK = (CORRECTIONS_CSV, CHANGELOG_CSV, QUEUE_CSV, THUMBS_DIR, VERIFY_SAMPLE_CSV,
                VERIFY_FRAME)
EARLIER_OUTPUTS = (outputs.SUMMARY_JSON, REPORT_HTML, REPORT_PDF, "simulation.svg", *DATA_FILES)
# a rescan replaces these all or none (the review pictures follow their queue)
RESCAN_FILES = tuple(n for n in EARLIER_WORK + EARLIER_OUTPUTS if n != THUMBS_DIR)
# a change of labels (corrections, verified labels) replaces these all or none
APPLY_FILES = (outputs.LABEL_COUNTS_NPY, CORRECTIONS_CSV, CHANGELOG_CSV, outputs.SAMPLES_PARQUET,
               outputs.SAMPLES_CSV, outputs.SUMMARY_JSON, outputs.PROBS_NPY, VERIFY_SAMPLE_CSV,
               VERIFY_FRAME, REPORT_HTML, REPORT_PDF)


def empty_ledger() -> pd.DataFrame:
    return pd.DataFrame(columns=LEDGER_COLUMNS)


def empty_changelog() -> pd.DataFrame:
    return pd.DataFrame(columns=CHANGELOG_COLUMNS)


@dataclass
class Stored:
    """An audit's state as the folder holds it (every table of text read as text)."""

    samples: pd.DataFrame
    summary: dict
    label_counts: np.ndarray
    embeddings: np.ndarray | None = None
    probs: np.ndarray | None = None
    image_stats: np.ndarray | None = None
    ledger: pd.DataFrame = field(default_factory=empty_ledger)
    changelog: pd.DataFrame = field(default_factory=empty_changelog)
    verify_frame: pd.DataFrame | None = None
    verify_sample: pd.DataFrame | None = None
    regions: np.ndarray | None = None  # (N, R, D), stored as float16


def _text_table(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError):
        raise DqauditError(outputs.damaged(path)) from None


def read_ledger(folder: Path) -> pd.DataFrame:
    """The corrections ledger of ``folder`` (one row per annotation; ``batch``: which apply
    added it); empty when there is none."""
    book = _text_table(Path(folder) / CORRECTIONS_CSV)
    if book is None:
        return empty_ledger()
    if "batch" not in book.columns:  # ledgers written before 2026-12-03
        book["batch"] = ""
    return book


def fitted_sets(summary: dict) -> None:
    """Multi-label audits scanned before 2026-12-07 recorded the posteriors they fitted as a
    user's ``pred_probs``, so their re-ranks kept the scan's; a scan takes no pred_probs, so
    such a record of a scanned dataset (not arrays) is the audit's own fit: say so."""
    source = (summary.get("dataset") or {}).get("source") or {}
    if summary.get("multi_label") and summary.get("posterior_method") == "pred_probs" and \
            source.get("kind") not in (None, "arrays"):
        summary["posterior_method"] = ((summary.get("config") or {}).get("score") or {}).get(
            "posterior_method") or "linear"


def read(out: Path) -> Stored:
    """The audit saved in ``out`` (embeddings memory-mapped). An interrupted change is put
    back first (``outputs.recover``; returned in ``summary["_recovered"]`` for the message)."""
    if not out.is_dir():
        raise DqauditError(f"{out}: no such folder; run `dqaudit scan DATASET --out {out}` "
                           "first")
    recovered = False
    if (out / outputs.ROLLBACK_DIR).exists():
        with outputs.locked(out):
            recovered = outputs.recover(out)
    if not (out / outputs.SUMMARY_JSON).exists():
        raise DqauditError(f"{out}: not an audit folder (no summary.json); run `dqaudit "
                           f"scan DATASET --out {out}` first")
    summary = outputs.read_summary(out)
    outputs.check_stamps(out, summary)
    if "verified" in (summary.get("clr") or {}):  # audits written before 2026-12-07
        summary["verified"] = summary["clr"].pop("verified")
    fitted_sets(summary)
    samples = outputs.read_samples(out)
    emb, probs, stats = (out / outputs.EMBEDDINGS_NPY, out / outputs.PROBS_NPY,
                         out / outputs.IMAGE_STATS_NPY)
    frame = None
    if (out / VERIFY_FRAME).exists():
        frame = pd.read_parquet(out / VERIFY_FRAME)
    changelog = _text_table(out / CHANGELOG_CSV)
    stored = Stored(
        samples=samples, summary=summary,
        label_counts=np.load(out / outputs.LABEL_COUNTS_NPY),
        embeddings=np.load(emb, mmap_mode="r") if emb.exists() else None,
        probs=np.load(probs) if probs.exists() else None,
        image_stats=np.load(stats) if stats.exists() else None,
        ledger=read_ledger(out),
        changelog=changelog if changelog is not None else empty_changelog(),
        verify_frame=frame, verify_sample=_text_table(out / VERIFY_SAMPLE_CSV),
        regions=np.load(out / outputs.REGIONS_NPY, mmap_mode="r")
        if (out / outputs.REGIONS_NPY).exists() else None)
    if recovered:
        summary["_recovered"] = True
    return stored


def write(out: Path, state: Stored, *, skipped: list[dict]) -> None:
    """Make folder ``out`` hold ``state``: every file written atomically, the files of an
    earlier state that this one lacks removed, summary.json last (it names the data files it
    goes with; ``read`` checks them). The caller holds the folder's lock."""
    out.mkdir(parents=True, exist_ok=True)
    outputs.write_samples(out, state.samples)
    outputs.write_skipped(out, skipped)
    outputs.write_array(out, outputs.LABEL_COUNTS_NPY, state.label_counts)
    for name, array, dtype in ((outputs.EMBEDDINGS_NPY, state.embeddings, np.float32),
                               (outputs.REGIONS_NPY, state.regions, np.float16),
                               (outputs.PROBS_NPY, state.probs, np.float32),
                               (outputs.IMAGE_STATS_NPY, state.image_stats, np.float64)):
        path = out / name
        if isinstance(array, np.memmap) and Path(array.filename).resolve() == path.resolve():
            continue  # the folder's own file, read memory-mapped: already there
        if array is not None:
            outputs.write_array(out, name, array.astype(dtype))
        elif path.exists():
            path.unlink()  # an earlier run's, not this audit's
    for name, table in ((CORRECTIONS_CSV, state.ledger), (CHANGELOG_CSV, state.changelog)):
        _write_table(out / name, table)
    write_verification(out, frame=state.verify_frame, sample=state.verify_sample)
    state.summary["files"] = {name: outputs.file_stamp(out / name) for name in DATA_FILES
                              if (out / name).exists()}
    write_summary(out, state.summary)


def _write_table(path: Path, table: pd.DataFrame | None) -> None:
    """A table of text as CSV; none (or an empty one) removes an earlier file."""
    if table is not None and len(table):
        outputs.write_csv(path, table)
    elif path.exists():
        path.unlink()


def write_verification(out: Path, *, frame: pd.DataFrame | None,
                       sample: pd.DataFrame | None) -> None:
    """The verification frame and sample alone: a draw or a batch of checked labels changes
    no data file (the caller writes summary.json after them)."""
    _write_table(out / VERIFY_SAMPLE_CSV, sample)
    if frame is not None:
        with outputs.replacing(out / VERIFY_FRAME) as tmp:
            frame.to_parquet(tmp, index=False)
    elif (out / VERIFY_FRAME).exists():
        (out / VERIFY_FRAME).unlink()


def write_summary(out: Path, summary: dict) -> None:
    """summary.json alone (a change that touches no data file: a FiftyOne name, a re-render)."""
    outputs.write_json(out / outputs.SUMMARY_JSON, summary)


def keep_earlier_work(out: Path) -> Path | None:
    """Before a new scan is written into a folder that holds an earlier audit: the reviewers'
    work (``EARLIER_WORK``) is copied to ``previous/<time>/`` and the earlier run's files are
    removed, so nothing stale stays beside the new ones (inside the scan's transaction: they
    come back if it does not finish). Returns that folder, or None when nothing was kept."""
    if not (out / outputs.SUMMARY_JSON).exists():
        return None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    keep = out / PREVIOUS_DIR / stamp
    for name in EARLIER_WORK:
        if (out / name).is_dir():
            shutil.copytree(out / name, keep / name)
        elif (out / name).exists():
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy2(out / name, keep / name)
    for name in RESCAN_FILES:
        if (out / name).is_file():
            (out / name).unlink()
    return keep if keep.exists() else None


def read_queue(out: Path) -> pd.DataFrame | None:
    """The folder's review queue as a reviewer left it (None: none, or not a table)."""
    try:
        return _text_table(out / QUEUE_CSV)
    except DqauditError:
        return pd.DataFrame({"id": ["?"], "correct_label": ["?"]})  # kept: counts as filled


def write_queue(out: Path, queue: pd.DataFrame, pictures: list[bytes | None] | None) -> None:
    """``review_queue.csv`` and, with ``pictures`` (one PNG or None per row), its pictures in
    ``review_thumbs/<rank>.png`` (column ``thumbnail``)."""
    if pictures is not None:
        (out / THUMBS_DIR).mkdir(exist_ok=True)
        paths = []
        for rank, png in zip(queue["rank"], pictures):
            target = out / THUMBS_DIR / f"{rank:05d}.png"
            if png:
                with outputs.replacing(target) as tmp:
                    tmp.write_bytes(png)
            paths.append(str(target) if png else "")
        queue["thumbnail"] = paths
    with outputs.replacing(out / QUEUE_CSV) as tmp:
        outputs.samples_for_csv(queue).to_csv(tmp, index=False, float_format="%.4g")


def drop_stale_pictures(out: Path) -> None:
    """The review pictures of a queue that is no longer there."""
    if not (out / QUEUE_CSV).exists():
        shutil.rmtree(out / THUMBS_DIR, ignore_errors=True)
