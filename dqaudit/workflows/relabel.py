"""Relabelling: the review queue, the corrections ledger and the label each sample takes.

Functions of an audit's values (its samples table, ledger, changelog and label counts) that
return new values; ``Audit`` holds them and its store writes them (``io.store``). A reviewer's
label is one more annotation: a sample's label is the majority of its annotations, a tie going
to the newest annotation among the tied (``dataset.majority_labels``).
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from dqaudit.dataset import majority_labels, set_row, set_text
from dqaudit.errors import DqauditError
from dqaudit.files import normal_text, sample_ids
from dqaudit.io import outputs
from dqaudit.io.outputs import review_order_column
from dqaudit.io.store import LEDGER_COLUMNS
from dqaudit.report.context import row_thumbnail

DROP_LABEL = "DROP"  # a correction with this label removes the sample on export
EMPTY_SET = "(none)"  # a multi-label correction saying the sample holds no class
QUEUE_COLUMNS = ["id", "path", "label", "suggested_label", "suggested_labels", "missing_labels",
                 "extra_labels", "suggested_confidence",
                 "review_score", "priority", "noisiness", "ambiguity", "issues",
                 # an object audit: which image the box is in, where (pixels)
                 "image_id", "image_path", "box_x", "box_y", "box_w", "box_h"]


def review_queue(*, samples: pd.DataFrame, ledger: pd.DataFrame, budget: int) -> pd.DataFrame:
    """The next ``budget`` samples to review, highest ``review_score`` first (``priority`` for
    audits written before that column existed), skipping samples the ledger holds: rank, id,
    path, label, suggested label and confidence, review score, priority, issues, and an empty
    ``correct_label`` for the reviewer."""
    if budget <= 0:
        raise DqauditError("--budget must be a positive number of samples")
    pending = samples[~samples["id"].isin(set(ledger["id"]))]
    queue = pending.sort_values(review_order_column(pending), ascending=False,
                                kind="stable").head(budget)
    queue = queue[[c for c in QUEUE_COLUMNS if c in queue.columns]].reset_index(drop=True)
    queue.insert(0, "rank", range(1, len(queue) + 1))
    queue["correct_label"] = ""
    return queue


def queue_pictures(queue: pd.DataFrame, *, dicom) -> list[bytes | None]:
    """One upscaled PNG per queued row (None where the image cannot be read), as the audit saw
    it (``dicom``: how it read DICOM files)."""
    out = []
    for rec in queue.to_dict("records"):
        uri = row_thumbnail(rec, dicom)
        out.append(base64.b64decode(uri.split(",", 1)[1]) if uri else None)
    return out


def filled_unapplied(queue: pd.DataFrame | None, ledger: pd.DataFrame) -> int:
    """How many rows of a review queue a reviewer filled in (``correct_label``) that the
    ledger does not hold yet: the reviewer's work a new queue must not overwrite."""
    if queue is None or "correct_label" not in queue.columns or "id" not in queue.columns:
        return 0
    filled = queue[queue["correct_label"].str.strip() != ""]
    done = set(zip(ledger["id"].astype(str), ledger["label"].astype(str)))
    return sum((i, lab.strip()) not in done
               for i, lab in zip(filled["id"], filled["correct_label"]))




def read_corrections(corrections, samples: pd.DataFrame, classes: list[str], *,
                     annotator: str | None, sets: bool) -> pd.DataFrame:
    """The ledger rows (``LEDGER_COLUMNS``) of ``corrections``: a CSV path or DataFrame with
    ``id`` (or ``path``) and ``label`` (or ``correct_label``, as in review_queue.csv; a class
    or ``DROP``), optionally ``annotator``, ``note`` and ``time``; validated (an error names the
    fix), samples named by meaning, one reviewer's row given twice counted once, ``batch`` the
    hash that makes the same corrections given twice one batch."""
    new = outputs.read_user_csv(corrections) \
        if not isinstance(corrections, pd.DataFrame) else corrections.astype(str)
    if "correct_label" in new.columns:  # a filled-in review_queue.csv: its label is the old one
        new = new.drop(columns=["label"], errors="ignore").rename(
            columns={"correct_label": "label"})
    if "label" not in new.columns:
        raise DqauditError("corrections need a 'label' column (or 'correct_label', as in "
                           "review_queue.csv)")
    new = new[new["label"].str.strip() != ""].copy()
    if "id" not in new.columns and "path" not in new.columns:
        raise DqauditError("corrections need an 'id' or a 'path' column")
    named = list(new["id"] if "id" in new.columns else new["path"])
    # an id that matches nothing: its row's path
    found = sample_ids(named, samples, fallbacks=list(new["path"])
                       if "id" in new.columns and "path" in new.columns else None)
    unknown = [v for v, f in zip(named, found) if f is None]
    if unknown:
        raise DqauditError(f"{len(unknown)} corrections name no sample of this audit (first: "
                           f"{unknown[0]!r}); name samples by the id column of samples.csv, or "
                           "by their file's path (absolute, or as the manifest or folder "
                           "gives it)")
    new["id"] = found
    new["label"] = new["label"].map(normal_text)  # as the scan read the classes
    if sets:  # each label is a set ("a;b", EMPTY_SET for none): written as the audit writes it
        new["label"] = [lab if lab == DROP_LABEL else set_text(set_row(
            "" if lab == EMPTY_SET else lab, classes, what=f"correction of {sid!r}"), classes)
            or EMPTY_SET for sid, lab in zip(new["id"], new["label"])]
    for column in ("annotator", "note"):
        if column in new.columns:
            new[column] = new[column].str.strip()
    new = new.drop_duplicates(subset=[c for c in ("id", "label", "annotator", "note")
                                      if c in new.columns], keep="last")
    bad = [] if sets else sorted(set(new["label"]) - set(classes) - {DROP_LABEL})
    if bad:
        raise DqauditError(f"unknown labels {bad[:5]}; valid: {', '.join(classes)} or "
                           f"{DROP_LABEL}")
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    new["annotator"] = new.get("annotator", pd.Series([""] * len(new), index=new.index))
    if annotator:
        new.loc[new["annotator"] == "", "annotator"] = annotator
    new["note"] = new.get("note", pd.Series([""] * len(new), index=new.index))
    # a re-applied ledger keeps when each annotation was made
    new["time"] = new["time"].where(new["time"] != "", now) if "time" in new.columns else now
    new["batch"] = hashlib.sha256("\x1e".join(
        "\x1f".join(r) for r in sorted(new[["id", "label", "annotator", "note"]].itertuples(
            index=False, name=None))).encode()).hexdigest()[:16]
    return new[LEDGER_COLUMNS]


def record_corrections(new: pd.DataFrame, *, samples: pd.DataFrame, classes: list[str],
                       ledger: pd.DataFrame, changelog: pd.DataFrame,
                       label_counts: np.ndarray) -> dict:
    """Add the ledger rows ``new`` (``read_corrections``) to the annotations and take the
    majority. Returns what was recorded (``annotations``, ``label_changes``, ``dropped``,
    ``reviewed_samples``, ``already_applied``: the time of an identical earlier batch, then
    nothing changes) and the new values: ``ledger``, ``changelog`` (one row per label change
    or drop, with who, when and why), ``label_counts`` (N, C), ``labels`` (every row's class
    name now) and ``dropped_ids``."""
    batch = new["batch"].iat[0] if len(new) else None
    if batch is not None and (ledger["batch"] == batch).any():
        when = ledger.loc[ledger["batch"] == batch, "time"].iat[0]
        return {"annotations": 0, "label_changes": 0, "already_applied": when,
                "dropped": int(ledger.loc[ledger["label"] == DROP_LABEL, "id"].nunique()),
                "reviewed_samples": int(ledger["id"].nunique()), "labels": None,
                "dropped_ids": None, "label_counts": None, "ledger": ledger,
                "changelog": changelog}
    book = pd.concat([ledger, new], ignore_index=True) if len(ledger) else new.copy()
    counts = np.array(label_counts, dtype=np.float32, copy=True)
    index = {sid: i for i, sid in enumerate(samples["id"])}
    cls = {c: j for j, c in enumerate(classes)}
    old_labels = samples["label"].tolist()
    newest: dict[int, int] = {}
    for sid, lab in zip(new["id"], new["label"]):
        if lab == DROP_LABEL:
            continue
        counts[index[sid], cls[lab]] += 1
        newest[index[sid]] = cls[lab]
    # the one tie rule: ties go to the newest annotation, else the current label
    prefer = np.array([newest.get(i, cls[v]) for i, v in enumerate(old_labels)], dtype=np.int64)
    labels = [classes[j] for j in majority_labels(counts, prefer=prefer)]
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    changes = []
    dropped = set(book.loc[book["label"] == DROP_LABEL, "id"])
    for i, (old, lab) in enumerate(zip(old_labels, labels)):
        if old != lab:
            row = new[new["id"] == samples["id"].iat[i]].iloc[-1]
            changes.append({"id": samples["id"].iat[i], "path": samples["path"].iat[i],
                            "old_label": old, "new_label": lab, "annotator": row["annotator"],
                            "time": now, "note": row["note"] or "majority of annotations"})
    for sid in sorted(set(new.loc[new["label"] == DROP_LABEL, "id"])):
        i = index[sid]
        row = new[(new["id"] == sid) & (new["label"] == DROP_LABEL)].iloc[-1]
        changes.append({"id": sid, "path": samples["path"].iat[i], "old_label": labels[i],
                        "new_label": DROP_LABEL, "annotator": row["annotator"], "time": now,
                        "note": row["note"] or "marked as junk"})
    if changes:
        added = pd.DataFrame(changes).astype(str)
        changelog = pd.concat([changelog, added], ignore_index=True) if len(changelog) \
            else added
    return {"annotations": len(new), "already_applied": None,
            "label_changes": sum(c["new_label"] != DROP_LABEL for c in changes),
            "dropped": len(dropped), "reviewed_samples": int(book["id"].nunique()),
            "labels": labels, "dropped_ids": dropped, "label_counts": counts,
            "ledger": book, "changelog": changelog}


def record_set_corrections(new: pd.DataFrame, *, samples: pd.DataFrame, classes: list[str],
                           ledger: pd.DataFrame, changelog: pd.DataFrame,
                           label_counts: np.ndarray) -> dict:
    """``record_corrections`` for label sets: a reviewer's set replaces the sample's (the
    newest annotation wins: a set is checked class by class, not voted on); ``label_counts``
    (N, C) are the sets as 0/1; each change's note names the classes added and removed."""
    batch = new["batch"].iat[0] if len(new) else None
    if batch is not None and (ledger["batch"] == batch).any():
        return record_corrections(new, samples=samples, classes=classes, ledger=ledger,
                                  changelog=changelog, label_counts=label_counts)
    book = pd.concat([ledger, new], ignore_index=True) if len(ledger) else new.copy()
    sets = np.array(label_counts, dtype=np.float32, copy=True)
    index = {sid: i for i, sid in enumerate(samples["id"])}
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    old = samples["label"].astype(str).tolist()
    changes = []
    for sid, lab, who, note in zip(new["id"], new["label"], new["annotator"], new["note"]):
        i = index[sid]
        if lab == DROP_LABEL:
            changes.append({"id": sid, "path": samples["path"].iat[i], "old_label": old[i],
                            "new_label": DROP_LABEL, "annotator": who, "time": now,
                            "note": note or "marked as junk"})
            continue
        row = set_row("" if lab == EMPTY_SET else lab, classes, what=f"correction of {sid!r}")
        before = sets[i] > 0
        if (row != before).any():
            added = [c for c, a, b in zip(classes, row, before) if a and not b]
            removed = [c for c, a, b in zip(classes, row, before) if b and not a]
            changes.append({"id": sid, "path": samples["path"].iat[i],
                            "old_label": set_text(before, classes),
                            "new_label": set_text(row, classes), "annotator": who,
                            "time": now, "note": note or "; ".join(
                                part for part in (f"added {', '.join(added)}" if added else "",
                                                  f"removed {', '.join(removed)}"
                                                  if removed else "") if part)})
        sets[i] = row
    if changes:
        added = pd.DataFrame(changes).astype(str)
        changelog = pd.concat([changelog, added], ignore_index=True) if len(changelog) \
            else added
    dropped = set(book.loc[book["label"] == DROP_LABEL, "id"])
    return {"annotations": len(new), "already_applied": None,
            "label_changes": sum(c["new_label"] != DROP_LABEL for c in changes),
            "dropped": len(dropped), "reviewed_samples": int(book["id"].nunique()),
            "labels": [set_text(r, classes) for r in sets > 0], "dropped_ids": dropped,
            "label_counts": sets, "ledger": book, "changelog": changelog}


def corrections_summary(ledger: pd.DataFrame, changelog: pd.DataFrame) -> dict | None:
    """What the review ledger holds, for the report's Corrections section: annotations, by
    whom, when, and the label changes and drops they made (None: no correction yet)."""
    if ledger.empty:
        return None
    who = ledger["annotator"].replace("", "unnamed").value_counts()
    changed = changelog["new_label"] if "new_label" in changelog.columns else pd.Series([])
    return {"annotations": len(ledger), "reviewed_samples": int(ledger["id"].nunique()),
            "label_changes": int((changed != DROP_LABEL).sum()),
            "dropped": int(ledger.loc[ledger["label"] == DROP_LABEL, "id"].nunique()),
            "annotators": {str(k): int(v) for k, v in who.items()},
            "first": str(ledger["time"].min()), "last": str(ledger["time"].max())}
