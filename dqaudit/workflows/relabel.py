"""Relabelling: what a review budget is expected to fix, reviewing by ``review_score``."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from dqaudit.io import outputs
from dqaudit.config import EXPORT_TARGETS
from dqaudit.dataset import majority_labels, normal_text, original_path
from dqaudit.errors import DqauditError
from dqaudit.io.fiftyone_io import SOURCE_PATH, import_fiftyone, tag_samples, viewable_paths
from dqaudit.io.outputs import read_samples, read_summary, review_order_column, samples_for_csv
from dqaudit.report import REPORT_HTML, REPORT_PDF
from dqaudit.report.context import row_thumbnail

# --------------------------------------------------------------------------- review workflow

QUEUE_CSV = "review_queue.csv"
CORRECTIONS_CSV = "corrections.csv"   # every annotation received, append-only ledger
CHANGELOG_CSV = "changelog.csv"       # every label change, with who / when / why
DROP_LABEL = "DROP"                   # a correction with this label removes the sample on export
THUMBS_DIR = "review_thumbs"


LEDGER_COLUMNS = ["id", "label", "annotator", "note", "time", "batch"]
# the files a relabel apply changes, all or nothing (outputs.transaction)
APPLY_FILES = (outputs.LABEL_COUNTS_NPY, CORRECTIONS_CSV, CHANGELOG_CSV, outputs.SAMPLES_PARQUET,
               outputs.SAMPLES_CSV, outputs.SUMMARY_JSON, outputs.PROBS_NPY, REPORT_HTML,
               REPORT_PDF)


def ledger(out_dir) -> pd.DataFrame:
    """The corrections ledger: one row per annotation (``batch``: which apply added it)."""
    path = Path(out_dir) / CORRECTIONS_CSV
    if not path.exists():
        return pd.DataFrame(columns=LEDGER_COLUMNS)
    book = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "batch" not in book.columns:  # ledgers written before 2026-12-03
        book["batch"] = ""
    return book


def review_queue(out_dir, *, budget: int, thumbnails: bool = True) -> pd.DataFrame:
    """The next ``budget`` samples to review, highest ``review_score`` first (``priority`` for
    audits written before that column existed), skipping reviewed ones.

    Writes ``review_queue.csv`` (rank, id, path, label, suggested label and confidence,
    review score, priority, issues, thumbnail) and, with ``thumbnails``, upscaled PNGs in
    ``review_thumbs/``.
    When the audit was written to FiftyOne, the queued samples get the tag ``dq_review``.
    """

    if budget <= 0:
        raise DqauditError("--budget must be a positive number of samples")
    out = Path(out_dir)
    unapplied = filled_unapplied(out)
    if unapplied:
        raise DqauditError(
            f"{out / QUEUE_CSV} has {unapplied} filled-in correct_label row(s) that were never "
            f"applied: a new queue would overwrite them. Apply them first (dqaudit relabel "
            f"apply {out} {out / QUEUE_CSV}), or move the file away to discard them")
    samples = read_samples(out)
    summary = read_summary(out)
    reviewed = set(ledger(out)["id"])
    pending = samples[~samples["id"].isin(reviewed)]
    queue = pending.sort_values(review_order_column(pending), ascending=False,
                                kind="stable").head(budget)
    columns = ["id", "path", "label", "suggested_label", "suggested_confidence", "review_score",
               "priority", "noisiness", "ambiguity", "issues",
               # an object audit: which image the box is in, where (pixels)
               "image_id", "image_path", "box_x", "box_y", "box_w", "box_h"]
    queue = queue[[c for c in columns if c in queue.columns]].reset_index(drop=True)
    queue.insert(0, "rank", range(1, len(queue) + 1))
    queue["correct_label"] = ""
    if thumbnails:
        (out / THUMBS_DIR).mkdir(exist_ok=True)
        dicom = outputs.dicom_read(summary)  # the picture the audit saw
        paths = []
        for rank, rec in zip(queue["rank"], queue.to_dict("records")):
            uri = row_thumbnail(rec, dicom)
            target = out / THUMBS_DIR / f"{rank:05d}.png"
            if uri:
                target.write_bytes(base64.b64decode(uri.split(",", 1)[1]))
            paths.append(str(target) if uri else "")
        queue["thumbnail"] = paths
    samples_for_csv(queue).to_csv(out / QUEUE_CSV, index=False, float_format="%.4g")
    fo_name = summary.get("fiftyone_dataset")
    if fo_name:  # an object audit tags the images that hold the queued boxes
        tag_samples(fo_name, list(queue["image_path" if "image_path" in queue.columns
                                        else "path"]), "dq_review")
    return queue


def filled_unapplied(out: Path) -> int:
    """How many rows of the folder's review queue a reviewer filled in (``correct_label``)
    that the ledger does not hold yet: the reviewer's work a new queue must not overwrite."""
    path = out / QUEUE_CSV
    if not path.exists():
        return 0
    try:
        queue = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception:  # noqa: BLE001 - an unreadable queue is kept: count it as unapplied
        return 1
    if "correct_label" not in queue.columns or "id" not in queue.columns:
        return 0
    filled = queue[queue["correct_label"].str.strip() != ""]
    book = ledger(out)
    done = set(zip(book["id"].astype(str), book["label"].astype(str)))
    return sum((i, lab.strip()) not in done
               for i, lab in zip(filled["id"], filled["correct_label"]))


def sample_ids(values: list[str], samples: pd.DataFrame, *,
               fallbacks: list[str] | None = None) -> list[str | None]:
    """The sample id each value names (else its ``fallbacks`` entry), by meaning rather than
    by text: the id itself (spaces around it and Unicode normal form aside), or the sample's
    file by its absolute path, its path as the manifest or folder gives it (``./a.jpg`` =
    ``a.jpg``), or any spelling that resolves to the same file; None where nothing matches.
    Files are resolved (``realpath``, a system call per folder) only when a value is not found
    by its spelling."""
    ids, paths = samples["id"].astype(str).tolist(), samples["path"].astype(str).tolist()
    spelled: dict[str, str] = {}
    for sid, path in zip(ids, paths):
        for key in (normal_text(sid), normal_text(path)):
            spelled.setdefault(key, sid)
            spelled.setdefault(os.path.normpath(key), sid)
    resolved: dict[str, str] = {}

    def find(value) -> str | None:
        v = normal_text(value)
        if not v:
            return None
        hit = spelled.get(v) or spelled.get(os.path.normpath(v))
        if hit is None:
            if not resolved:
                for sid, path in zip(ids, paths):
                    resolved.setdefault(os.path.realpath(original_path(path)), sid)
            hit = resolved.get(os.path.realpath(v))
        return hit

    return [find(v) or (find(f) if fallbacks is not None else None)
            for v, f in zip(values, fallbacks if fallbacks is not None else values)]


def record_corrections(out_dir, corrections, *, annotator: str | None = None) -> dict:
    """Add reviewers' labels to the ledger and the label counts and take the majority.

    ``corrections`` is a CSV path or DataFrame with ``id`` (or ``path``) and ``label`` (the
    correct label, or ``DROP`` for junk), optionally ``annotator`` and ``note``. Each row is one
    more annotation of that sample: a sample's label becomes the majority of its counts, a tie
    going to the newest annotation, so a reviewer's word outweighs a single original label.
    Every label change lands in ``changelog.csv``; the input dataset is never modified.
    Returns the counts of what was recorded and, for the re-rank (``Audit.apply_corrections``),
    ``labels`` (every row's label now), ``dropped_ids`` and ``label_counts``.
    """
    out = Path(out_dir)
    new = outputs.read_user_csv(corrections) \
        if not isinstance(corrections, pd.DataFrame) else corrections.astype(str)
    samples = outputs.read_samples(out)
    summary = outputs.read_summary(out)
    classes = summary["dataset"]["classes"]
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
    # one reviewer's row given twice in one file is one annotation, not two votes
    for column in ("annotator", "note"):
        if column in new.columns:
            new[column] = new[column].str.strip()
    new = new.drop_duplicates(subset=[c for c in ("id", "label", "annotator", "note")
                                      if c in new.columns], keep="last")
    bad = sorted(set(new["label"]) - set(classes) - {DROP_LABEL})
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
    # the same corrections given twice (a re-run after a crash, a second click) count once
    batch = hashlib.sha256("\x1e".join(
        "\x1f".join(r) for r in sorted(new[["id", "label", "annotator", "note"]].itertuples(
            index=False, name=None))).encode()).hexdigest()[:16]
    new["batch"] = batch
    new = new[LEDGER_COLUMNS]
    before = ledger(out)
    if len(new) and (before["batch"] == batch).any():
        when = before.loc[before["batch"] == batch, "time"].iat[0]
        return {"annotations": 0, "label_changes": 0, "already_applied": when,
                "dropped": int(before.loc[before["label"] == DROP_LABEL, "id"].nunique()),
                "reviewed_samples": int(before["id"].nunique()), "labels": None,
                "dropped_ids": None, "label_counts": None}
    book = pd.concat([before, new], ignore_index=True)

    counts = np.load(out / outputs.LABEL_COUNTS_NPY)
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
    outputs.write_array(out, outputs.LABEL_COUNTS_NPY, counts)
    outputs.write_csv(out / CORRECTIONS_CSV, book)
    log = out / CHANGELOG_CSV
    old_log = pd.read_csv(log, dtype=str, keep_default_na=False) if log.exists() else None
    frames = [f for f in (old_log, pd.DataFrame(changes)) if f is not None and len(f)]
    if frames:
        outputs.write_csv(log, pd.concat(frames, ignore_index=True))
    result = {"annotations": len(new), "already_applied": None,
              "label_changes": sum(c["new_label"] != DROP_LABEL for c in changes),
              "dropped": len(dropped), "reviewed_samples": int(book["id"].nunique()),
              "labels": labels, "dropped_ids": dropped, "label_counts": counts}
    return result


def corrections_summary(out_dir) -> dict | None:
    """What the review ledger holds, for the report's Corrections section: annotations, by
    whom, when, and the label changes and drops they made (None: no correction yet)."""
    out = Path(out_dir)
    book = ledger(out)
    if book.empty:
        return None
    log_path = out / CHANGELOG_CSV
    log = pd.read_csv(log_path, dtype=str, keep_default_na=False) if log_path.exists() \
        else pd.DataFrame(columns=["id", "new_label"])
    who = book["annotator"].replace("", "unnamed").value_counts()
    return {"annotations": len(book), "reviewed_samples": int(book["id"].nunique()),
            "label_changes": int((log["new_label"] != DROP_LABEL).sum()),
            "dropped": int(book.loc[book["label"] == DROP_LABEL, "id"].nunique()),
            "annotators": {str(k): int(v) for k, v in who.items()},
            "first": str(book["time"].min()), "last": str(book["time"].max())}


OBJECT_EXPORT_TARGETS = ("coco", "fiftyone")  # an object audit's boxes stay boxes


def safe_component(name: str) -> str:
    """One folder or file name from user text (a label, a split, an id): separators become
    ``__``, and "", "." and ".." become "_", so the name can never leave its folder."""
    text = str(name).replace("\x00", "").replace("/", "__").replace("\\", "__")
    return "_" if text.strip(". ") == "" else text


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (links resolved)."""
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _check_destination(target: Path, summary: dict, sources: set[str], *, force: bool) -> None:
    """Refuse a destination that is the input manifest or an input image, or that is, or lies
    inside, the input's folder (the class-folder root, else the images' common folder); an
    existing one unless ``force``."""
    source = summary["dataset"]["source"]
    if source.get("kind") == "manifest" and target.resolve() == Path(
            str(source["location"])).resolve():
        raise DqauditError(f"{target} is the input manifest; export to a new file")
    if str(target.resolve()) in sources:
        raise DqauditError(f"{target} is an input image; choose another destination")
    root = Path(str(source["location"])) if source.get("kind") == "folder" else (
        Path(os.path.commonpath([str(Path(p).parent) for p in sources])) if sources else None)
    if root is not None and root.exists() and inside(target, root):
        raise DqauditError(f"{target} is inside the input dataset's folder {root}; export "
                           "outside it, so the input stays as it was")
    if target.exists() and not force and (target.is_file() or any(target.iterdir())):
        raise DqauditError(f"{target} exists{' and is not empty' if target.is_dir() else ''}; "
                           "choose a new destination or pass --force to write over it")


def export_cleaned(out_dir, *, to: str, dest: str, drop_junk: bool = True,
                   force: bool = False) -> dict:
    """Write the cleaned dataset as a new copy; the input dataset is never touched.

    ``to``: ``folder`` (DEST/<split>/<label>/<file>, files copied), ``csv`` (a manifest DEST
    with absolute paths, label, split) or ``fiftyone`` (a new FiftyOne dataset named DEST).
    An object audit exports its boxes: ``coco`` (an instances JSON DEST, file names absolute,
    annotation ids the audit's) or ``fiftyone`` (Detections in ``ground_truth``).
    Samples marked ``DROP`` are left out when ``drop_junk``. ``changelog.csv`` is copied beside
    a folder or CSV export. Labels, splits and ids become file names through
    ``safe_component`` and every file is checked to land inside DEST; a DEST that is the input
    (its manifest, an image, or a folder inside a class-folder tree) is refused, and an
    existing non-empty DEST needs ``force`` (input files are never written, even then).
    """
    if to not in EXPORT_TARGETS:
        raise DqauditError(f"unknown export target {to!r}; valid: {', '.join(EXPORT_TARGETS)}")
    out = Path(out_dir)
    samples = read_samples(out)
    summary = read_summary(out)
    objects = summary["dataset"]["source"].get("unit") == "object"
    if objects != (to == "coco") and not (objects and to == "fiftyone"):
        raise DqauditError(
            f"--to {to}: an object audit (boxes of a detection dataset) exports its boxes: use "
            f"--to {' or --to '.join(OBJECT_EXPORT_TARGETS)}" if objects else
            "--to coco exports the boxes of an object audit; this audit is of images")
    if drop_junk and "dropped" in samples.columns:
        samples = samples[~samples["dropped"].astype(bool)]
    if objects:
        return _export_boxes(samples, summary, to=to, dest=dest, changelog=out / CHANGELOG_CSV,
                             force=force)
    paths = [original_path(p) for p in samples["path"]]
    sources = {str(Path(p).resolve()) for p in paths}
    changelog = out / CHANGELOG_CSV
    if to in ("folder", "csv"):
        _check_destination(Path(dest), summary, sources, force=force)
    if to == "folder":
        target = Path(dest)
        plan, taken = [], set()
        for sid, path, label, split in zip(samples["id"], paths, samples["label"],
                                           samples["split"]):
            # a name unique per sample (ids are unique), keeping the file's extension
            name = safe_component(sid)
            if not name.lower().endswith(Path(path).suffix.lower()):
                name += Path(path).suffix
            dst = target / (safe_component(split) if split else "") / safe_component(label) / name
            while str(dst) in taken:  # two ids that the same safe name stands for
                dst = dst.with_name(dst.stem + "_" + dst.suffix)
            taken.add(str(dst))
            if not inside(dst, target) or str(dst.resolve()) in sources:
                raise DqauditError(f"export path {dst} would leave {target} or overwrite an "
                                   "input file; nothing was written")
            plan.append((path, dst))
        for path, dst in plan:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dst)
        if changelog.exists():
            shutil.copy2(changelog, target / CHANGELOG_CSV)
        return {"to": "folder", "dest": str(target), "n_samples": len(samples)}
    if to == "csv":
        target = Path(dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        kept = _as_input_manifest(samples, summary, dropped=drop_junk)
        if kept is not None:  # the input manifest, only its labels changed
            table, sep = kept
            with outputs.replacing(target) as tmp:
                table.to_csv(tmp, sep=sep, index=False)
            _changelog_beside(changelog, target)
            return {"to": "csv", "dest": str(target), "n_samples": len(samples),
                    "format": "the input manifest, labels changed",
                    "label_changes": int((table[CHANGE_COLUMN] != "").sum())}
        outputs.write_csv(target, samples[["path", "label", "split", "id"]])
        _changelog_beside(changelog, target)
        return {"to": "csv", "dest": str(target), "n_samples": len(samples)}
    fo, dataset = _new_fiftyone_dataset(dest)
    shown, sources = viewable_paths(  # a DICOM file as the PNG the audit saw, in its folder
        [original_path(p) for p in samples["path"]], out_dir=out_dir,
        dicom=outputs.dicom_read(summary))
    new = []
    for p, src, lab, s in zip(shown, sources, samples["label"], samples["split"]):
        sample = fo.Sample(filepath=p, tags=[s] if s else [],
                           ground_truth=fo.Classification(label=lab))
        if src is not None:
            sample[SOURCE_PATH] = src
        new.append(sample)
    dataset.add_samples(new, progress=False)
    return {"to": "fiftyone", "dest": dest, "n_samples": len(samples)}


def _export_boxes(samples: pd.DataFrame, summary: dict, *, to: str, dest: str,
                  changelog: Path, force: bool) -> dict:
    """The cleaned boxes of an object audit as a COCO instances file or a FiftyOne dataset
    (boxes that were never audited, listed in skipped.csv, are not in it)."""
    classes = summary["dataset"]["classes"]
    images = {p: k + 1 for k, p in enumerate(dict.fromkeys(samples["image_path"]))}
    first = samples.drop_duplicates("image_path").set_index("image_path")
    if to == "coco":
        target = Path(dest)
        if target.exists() and not force:
            raise DqauditError(f"{target} exists; pass --force to replace it")
        sources = {str(Path(original_path(p)).resolve()) for p in images}
        if str(target.resolve()) in sources or target.resolve() == Path(
                summary["dataset"]["source"].get("location", "")).resolve():
            raise DqauditError(f"{target} is an input file; export to a new file")
        doc = {"info": {"description": f"cleaned by dqaudit {summary.get('dqaudit_version')}"},
               "images": [{"id": k, "file_name": original_path(p),
                           "width": int(first.loc[p, "image_width"]),
                           "height": int(first.loc[p, "image_height"])}
                          for p, k in images.items()],
               "annotations": [{"id": int(i) if str(i).isdigit() else str(i),
                                "image_id": images[p], "category_id": classes.index(lab) + 1,
                                "bbox": [round(float(v), 2) for v in (x, y, w, h)],
                                "area": round(float(w * h), 2), "iscrowd": 0}
                               for i, p, lab, x, y, w, h in zip(
                                   samples["id"], samples["image_path"], samples["label"],
                                   samples["box_x"], samples["box_y"], samples["box_w"],
                                   samples["box_h"])],
               "categories": [{"id": j + 1, "name": c} for j, c in enumerate(classes)]}
        target.parent.mkdir(parents=True, exist_ok=True)
        outputs.write_json(target, doc)
        _changelog_beside(changelog, target)
        return {"to": "coco", "dest": str(target), "n_samples": len(samples)}
    fo, dataset = _new_fiftyone_dataset(dest)
    dets: dict[str, list] = {p: [] for p in images}
    for i, p, lab, x, y, w, h in zip(samples["id"], samples["image_path"], samples["label"],
                                     samples["box_x"], samples["box_y"], samples["box_w"],
                                     samples["box_h"]):
        iw, ih = float(first.loc[p, "image_width"]), float(first.loc[p, "image_height"])
        dets[p].append(fo.Detection(label=lab, bounding_box=[x / iw, y / ih, w / iw, h / ih],
                                    dq_object_id=str(i)))
    splits = dict(zip(first.index, first["split"]))
    dataset.add_samples([fo.Sample(filepath=original_path(p), tags=[splits[p]] if splits[p]
                                   else [], ground_truth=fo.Detections(detections=d))
                         for p, d in dets.items()], progress=False)
    return {"to": "fiftyone", "dest": dest, "n_samples": len(samples)}


CHANGE_COLUMN = "dq_label_change"


def _as_input_manifest(samples: pd.DataFrame, summary: dict, *, dropped: bool
                       ) -> tuple[pd.DataFrame, str] | None:
    """The audit's input manifest with each sample's label replaced by its label now: every
    other column, the row order, the paths as written and the splits kept, one column added
    (``dq_label_change``: ``old -> new``, or ``dropped as junk`` where junk rows are kept).
    Rows the scan skipped are kept unchanged. None when the input was not a one-row-per-image
    manifest with a label column (count columns or repeated rows: the generic export)."""
    from dqaudit.io.ingest import manifest_files, read_table

    source = summary["dataset"]["source"]
    manifest = Path(source.get("location", ""))
    if source.get("kind") != "manifest" or not source.get("label_column") or \
            source.get("count_columns") or not manifest.is_file():
        return None
    table = read_table(manifest)
    pcol, lcol = source["path_column"], source["label_column"]
    if pcol not in table.columns or lcol not in table.columns or CHANGE_COLUMN in table.columns:
        return None
    base = Path(source.get("image_root") or manifest.parent)
    files = manifest_files(table[pcol].astype(str).str.strip(), base=base)
    if len(set(files)) < len(files):
        return None  # one row per annotation: a row's label is not the sample's
    by_file = {os.path.realpath(original_path(p)): (lab, bool(d)) for p, lab, d in zip(
        samples["path"], samples["label"], samples.get("dropped", pd.Series(
            [False] * len(samples), index=samples.index)))}
    labels, change, keep = [], [], []
    for f, old in zip(files, table[lcol].astype(str)):
        new, junk = by_file.get(f, (None, False))
        keep.append(not (junk and dropped))
        if new is None or normal_text(old) == new:
            labels.append(old)
            change.append("dropped as junk" if junk else "")
        else:
            labels.append(new)
            change.append(f"{normal_text(old)} -> {new}")
    table[lcol] = labels
    table[CHANGE_COLUMN] = change
    table = table[np.array(keep, dtype=bool)]
    parquet = manifest.suffix.lower() in (".parquet", ".pq")
    return table, "," if parquet else outputs.separator(manifest)


def _changelog_beside(changelog: Path, target: Path) -> None:
    """The corrections' changelog copied beside an exported file (``<stem>.changelog.csv``)."""
    if changelog.exists():
        shutil.copy2(changelog, target.with_name(target.stem + "." + CHANGELOG_CSV))


def _new_fiftyone_dataset(name: str):
    """(fiftyone, a new persistent dataset ``name``): an export never writes into an existing
    dataset."""
    fo = import_fiftyone()
    if fo.dataset_exists(name):
        raise DqauditError(f"FiftyOne dataset {name!r} exists; choose a new name")
    return fo, fo.Dataset(name, persistent=True)
