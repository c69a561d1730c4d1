"""Export: the cleaned dataset as a new copy (a class-folder tree, the input manifest with its
labels changed, a FiftyOne dataset, or an object audit's boxes as COCO); the input is never
written. A function of the audit's values (``Audit.export``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from dqaudit.config import EXPORT_TARGETS
from dqaudit.dataset import SET_SEP
from dqaudit.errors import DqauditError
from dqaudit.files import normal_text, original_path
from dqaudit.io import outputs
from dqaudit.io.fiftyone_io import SOURCE_PATH, import_fiftyone
from dqaudit.io.fiftyone_results import viewable_paths
from dqaudit.io.store import CHANGELOG_CSV

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


def export_cleaned(*, samples: pd.DataFrame, summary: dict, changelog: pd.DataFrame,
                   out_dir: Path | None, to: str, dest: str, drop_junk: bool,
                   force: bool) -> dict:
    """Write the cleaned dataset as a new copy; the input dataset is never touched.

    ``to``: ``folder`` (DEST/<split>/<label>/<file>, files copied), ``csv`` (a manifest DEST
    with absolute paths, label, split) or ``fiftyone`` (a new FiftyOne dataset named DEST;
    label sets as ``Classifications``, which a scan reads back as sets).
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
    objects = summary["dataset"]["source"].get("unit") == "object"
    if objects != (to == "coco") and not (objects and to == "fiftyone"):
        raise DqauditError(
            f"--to {to}: an object audit (boxes of a detection dataset) exports its boxes: use "
            f"--to {' or --to '.join(OBJECT_EXPORT_TARGETS)}" if objects else
            "--to coco exports the boxes of an object audit; this audit is of images")
    if drop_junk and "dropped" in samples.columns:
        samples = samples[~samples["dropped"].astype(bool)]
    if objects:
        return _export_boxes(samples, summary, to=to, dest=dest, changelog=changelog,
                             force=force)
    paths = [original_path(p) for p in samples["path"]]
    sources = {str(Path(p).resolve()) for p in paths}
    if to in ("folder", "csv"):
        _check_destination(Path(dest), summary, sources, force=force)
    sets = bool(summary.get("multi_label"))
    if sets and to == "folder":
        raise DqauditError("--to folder: a class folder holds one class per image; export "
                           "label sets with --to csv (a label column of sets like 'cat;dog') "
                           "or --to fiftyone (Classifications)")
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
        if len(changelog):
            outputs.write_csv(target / CHANGELOG_CSV, changelog)
        return {"to": "folder", "dest": str(target), "n_samples": len(samples)}
    if to == "csv":
        target = Path(dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        kept = None if sets else _as_input_manifest(samples, summary, dropped=drop_junk)
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
        sample = fo.Sample(filepath=p, tags=[s] if s else [], ground_truth=fo.Classifications(
            classifications=[fo.Classification(label=c) for c in lab.split(SET_SEP) if c])
            if sets else fo.Classification(label=lab))
        if src is not None:
            sample[SOURCE_PATH] = src
        new.append(sample)
    dataset.add_samples(new, progress=False)
    return {"to": "fiftyone", "dest": dest, "n_samples": len(samples)}


def _export_boxes(samples: pd.DataFrame, summary: dict, *, to: str, dest: str,
                  changelog: pd.DataFrame, force: bool) -> dict:
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
    from dqaudit.io.manifest import manifest_files, read_table

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


def _changelog_beside(changelog: pd.DataFrame, target: Path) -> None:
    """The corrections' changelog written beside an exported file (``<stem>.changelog.csv``)."""
    if len(changelog):
        outputs.write_csv(target.with_name(target.stem + "." + CHANGELOG_CSV), changelog)


def _new_fiftyone_dataset(name: str):
    """(fiftyone, a new persistent dataset ``name``): an export never writes into an existing
    dataset."""
    fo = import_fiftyone()
    if fo.dataset_exists(name):
        raise DqauditError(f"FiftyOne dataset {name!r} exists; choose a new name")
    return fo, fo.Dataset(name, persistent=True)
