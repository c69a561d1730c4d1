"""Ingest: a class-folder tree, a CSV/Parquet manifest or a FiftyOne dataset -> ``LabeledImages``.

This is the door where every input is validated once (ARCHITECTURE rule 2). Problems that make
the whole dataset unusable raise ``InputError`` with a one-line message naming the file and the
fix; problems with single files (empty, not an image) are recorded in ``skipped`` and the rest
carries on. Nothing here ever writes to the input.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd

from dqaudit.dataset import (IMAGE_EXTENSIONS, LAYOUTS, SPLIT_NAMES, LabeledImages, case_variants,
                      cheap_file_problem, file_digests, is_dicom_file, majority_labels,
                      normal_text, one_hot, printable)
from dqaudit.imaging.dicom import header_size
from dqaudit.errors import InputError
from dqaudit.io.outputs import separator
from dqaudit.imaging.boxes import MIN_BOX_SIDE
from dqaudit.io.fiftyone_io import (DEFAULT_LABEL_FIELD, load_fiftyone_boxes, load_fiftyone_dataset,
                          load_view)
from dqaudit.io.objects import is_coco, is_yolo, load_coco, load_yolo, object_dataset

PATH_COLUMN_CANDIDATES = ("path", "filepath", "file_path", "file", "filename", "image",
                          "image_path")
LABEL_COLUMN_CANDIDATES = ("label", "labels", "class", "class_name", "category", "target", "y")
SPLIT_COLUMN_CANDIDATES = ("split", "subset", "fold")
DEFAULT_COUNT_PREFIX = "n_"
# manifest values that mean "no label" (pandas' own missing-value spellings among them), not a
# class: a row holding one is skipped with its reason
MISSING_LABELS = frozenset({"", "nan", "na", "n/a", "none", "null", "<na>", "nat"})


def load_dataset(
    source: str | os.PathLike,
    *,
    path_column: str | None = None,
    label_column: str | None = None,
    split_column: str | None = None,
    count_prefix: str | None = None,
    image_root: str | os.PathLike | None = None,
    label_field: str = DEFAULT_LABEL_FIELD,
    from_fiftyone: bool = False,
    saved_view: str | None = None,
    box_margin: float | None = None,
    cache_dir: str | os.PathLike | None = None,
    pred_field: str | None = None,
    min_box_side: float = MIN_BOX_SIDE,
    layout: str = "auto",
) -> LabeledImages:
    """Load a labeled image dataset from a folder tree, a manifest file or a FiftyOne dataset.

    ``source`` is a directory (class folders, optionally under train/val/test), a ``.csv`` or
    ``.parquet`` manifest, or with ``from_fiftyone=True`` the name of a FiftyOne dataset.
    A detection dataset (a COCO instances ``.json``, a YOLO folder, a FiftyOne ``Detections``
    field) is audited object by object (``dqaudit.io.objects``): every box a sample, its crop
    with ``box_margin`` of context (default ``boxes.DEFAULT_MARGIN``) kept in the crop
    cache under ``cache_dir`` (default: the embedding cache's). ``pred_field``: a FiftyOne
    ``Detections`` field of a detector's predictions, for possible missing and spurious boxes.
    Boxes under ``min_box_side`` px on their shorter side are listed, not audited.
    ``layout``: how a folder tree's nested class folders are read (``load_folder``).
    """
    if from_fiftyone:
        view = load_view(str(source), saved_view=saved_view) if saved_view else None
        return load_fiftyone(str(source), label_field=label_field, view=view,
                             pred_field=pred_field, box_margin=box_margin, cache_dir=cache_dir,
                             min_box_side=min_box_side)
    if pred_field:
        raise InputError("--pred-field names a FiftyOne field: use it with --from-fiftyone")
    path = Path(source).expanduser()
    if not path.exists():
        raise InputError(f"{path}: no such file or directory; pass a class-folder tree, a .csv or "
                         ".parquet manifest, a COCO .json, a YOLO folder, or --from-fiftyone NAME")
    if is_coco(path) or is_yolo(path):
        table, classes, skipped, info = load_coco(path, image_root=image_root) \
            if is_coco(path) else load_yolo(path)
        return object_dataset(table, classes=classes, source=info, skipped=skipped,
                              margin=box_margin, cache_dir=cache_dir, min_side=min_box_side)
    if path.is_dir():
        return load_folder(path, layout=layout)
    if path.suffix.lower() in (".csv", ".tsv", ".parquet", ".pq"):
        return load_manifest(path, path_column=path_column, label_column=label_column,
                             split_column=split_column, count_prefix=count_prefix,
                             image_root=image_root)
    raise InputError(f"{path}: not a folder, .csv or .parquet manifest, or COCO .json; pass a "
                     "class-folder tree or a manifest with a path and a label column")


def load_fiftyone(name: str, *, label_field: str = DEFAULT_LABEL_FIELD, view=None,
                  pred_field: str | None = None, box_margin: float | None = None,
                  cache_dir: str | os.PathLike | None = None,
                  min_box_side: float = MIN_BOX_SIDE) -> LabeledImages:
    """A FiftyOne dataset (or ``view`` of it): a ``Classification`` field gives an image audit,
    a ``Detections`` field an object audit (every box a sample; see ``load_dataset``)."""
    boxes = load_fiftyone_boxes(name, label_field=label_field, view=view, pred_field=pred_field)
    if boxes is not None:
        table, classes, skipped, info = boxes
        return object_dataset(table, classes=classes, source=info, skipped=skipped,
                              margin=box_margin, cache_dir=cache_dir, min_side=min_box_side)
    if pred_field:
        raise InputError(f"--pred-field {pred_field}: predictions are matched to boxes, and "
                         f"field {label_field!r} holds no Detections")
    return load_fiftyone_dataset(name, label_field=label_field, view=view)


# --------------------------------------------------------------------------- folder trees


HIDDEN = "hidden (its name starts with '.'), not read"


def _tree_files(root: Path, skipped: list[dict]) -> list[tuple[Path, tuple[str, ...]]]:
    """Every visible file under ``root`` with the folder names between them; hidden entries and
    links to folders (which could loop) become rows of ``skipped``."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        walked = []
        for name in sorted(dirnames):
            q = here / name
            if name.startswith("."):
                skipped.append({"path": str(q), "reason": HIDDEN})
            elif q.is_symlink():
                skipped.append({"path": str(q), "reason": "link to a folder, not followed "
                                "(it could loop); link the files, or copy the folder"})
            else:
                walked.append(name)
        dirnames[:] = walked
        folders = here.relative_to(root).parts
        for name in sorted(filenames):
            if name.startswith("."):
                skipped.append({"path": str(here / name), "reason": HIDDEN})
            else:
                found.append((here / name, folders))
    return found


def read_tree_path(folders: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """The one layout rule: a folder named as a split (``SPLIT_NAMES``, any case) at any level
    gives the split, the outermost one if several; the other folders, outermost first, are the
    class path. ``train/cat``, ``cat/train`` and ``cat`` are class ``cat``."""
    split, classes = "", []
    for name in folders:
        if not split and name.lower() in SPLIT_NAMES:
            split = SPLIT_NAMES[name.lower()]
        else:
            classes.append(normal_text(name))
    return split, tuple(classes)


def load_folder(root: Path, *, layout: str) -> LabeledImages:
    """A class-folder tree, read by one stated rule (``read_tree_path``): split folders at any
    level, the class from the folders left. When class folders nest (``animals/cat``),
    ``layout`` says which folder is the class: ``top`` the outermost (everything under it is
    that class), ``leaf`` the innermost; ``auto`` refuses nested images with the fix, except
    DICOM files, whose convention is patient/study/series folders under the class (read as
    ``top``). Class names are ``normal_text``: ``truck`` and ``truck `` are one class; case variants
    stay apart and are reported (``source["case_variants"]``)."""
    if layout not in LAYOUTS:
        raise InputError(f"--layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    root = root.resolve()
    # nothing under the root is ignored silently: what is not read is a row of skipped.csv
    skipped: list[dict] = []
    rows: list[tuple[str, str, str]] = []  # (abs path, class, split)
    nested: tuple[str, ...] | None = None  # the first nested image that is not DICOM
    depths = set()
    for path, folders in _tree_files(root, skipped):
        split, class_path = read_tree_path(folders)
        if not class_path:
            skipped.append({"path": str(path), "reason": "not inside a class folder" + (
                f" (its folder {folders[-1]!r} is read as a split; a class of that name needs "
                "a manifest)" if folders else "")})
            continue
        depths.add(len(class_path))
        reason = cheap_file_problem(path)
        if len(class_path) > 1 and nested is None and not is_dicom_file(path):
            nested = folders
        if reason:
            skipped.append({"path": str(path), "reason": reason})
            continue
        rows.append((str(path), class_path[-1] if layout == "leaf" else class_path[0], split))
    if nested is not None and layout == "auto":
        example = "/".join(nested)
        _, class_path = read_tree_path(nested)
        raise InputError(
            f"{root}: class folders are nested ({example}/, {max(depths)} levels); pass "
            f"--layout leaf to use the innermost folder as the class ({class_path[-1]!r}), or "
            f"--layout top to use the outermost ({class_path[0]!r}) with everything under it")
    if not rows:
        folders = any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir())
        raise InputError(f"{root}: " + ("found no image files in its class folders" if folders
                                        else "no class folders found") + "; expected "
                         f"{root}/<class>/<image files> (optionally under train/val/test) or a "
                         f"manifest (.csv/.parquet); supported extensions: "
                         f"{', '.join(sorted(IMAGE_EXTENSIONS))}")
    classes = sorted({c for _, c, _ in rows})
    if len(classes) < 2:
        raise InputError(f"{root}: only one class ({classes[0]!r}) has images; an audit needs at "
                         "least two class folders")
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[c] for _, c, _ in rows], dtype=np.int64)
    splits = sorted({s for _, _, s in rows if s})
    levels = max(depths) + (1 if splits else 0)
    read_as = [f"{len(splits)} split{'s' if len(splits) != 1 else ''}"
               + (f" ({', '.join(splits)})" if splits else ""),
               f"{len(classes)} classes", f"{levels} level{'s' if levels != 1 else ''}"]
    if max(depths) > 1:
        read_as.append("classes from the " + ("innermost folder" if layout == "leaf" else
                       "outermost folder" + (" (DICOM series folders below)"
                                             if layout == "auto" else "")))
    return LabeledImages(
        paths=[p for p, _, _ in rows],
        labels=labels,
        classes=classes,
        label_counts=one_hot(labels, len(classes)),
        splits=np.array([s for _, _, s in rows], dtype=object),
        ids=[printable(os.path.relpath(p, root)) for p, _, _ in rows],
        source={"kind": "folder", "location": str(root), "split_layout": bool(splits),
                "layout": layout, "read_as": "a class-folder tree: " + ", ".join(read_as),
                "case_variants": case_variants(classes)},
        skipped=skipped,
    )


def files_fingerprint(data: LabeledImages) -> str:
    """SHA-256 over every sample's id and file digest (``dataset.file_digest``), in id order:
    the part of the fingerprint that labelling cannot change, computed once, at the scan."""
    digests = data.digests if data.digests is not None else file_digests(data.paths)
    digest = hashlib.sha256()
    for i in sorted(range(len(data)), key=lambda j: data.ids[j]):
        digest.update(f"{data.ids[i]}\x1f{digests[i]}\x1e".encode())
    return digest.hexdigest()


def fingerprint(data: LabeledImages, *, files: str, dropped=frozenset()) -> str:
    """SHA-256 over the dataset as audited now: ``files`` (``files_fingerprint``, "" for an
    audit of arrays), the classes, every sample's id and current label counts, and the ids
    dropped as junk. Renaming the root folder keeps it; changing any pixel, label or
    annotation changes it."""
    digest = hashlib.sha256()
    digest.update((files + "\x1e" + "\x1f".join(data.classes) + "\x1e").encode())
    for i in sorted(range(len(data)), key=lambda j: data.ids[j]):
        counts = ",".join(f"{v:g}" for v in data.label_counts[i])
        digest.update(f"{data.ids[i]}\x1f{counts}\x1e".encode())
    digest.update("\x1f".join(sorted(dropped)).encode())
    return digest.hexdigest()


def median_image_side(paths: list[str], *, sample: int = 200, seed: int = 0) -> float | None:
    """Median shorter side of up to ``sample`` images (headers only; unreadable ones ignored)."""
    from PIL import Image

    if not paths:
        return None
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(paths), size=min(sample, len(paths)), replace=False)
    sides = []
    for i in sorted(pick):
        if is_dicom_file(paths[i]):
            size = header_size(paths[i])
            if size:
                sides.append(min(size))
            continue
        try:
            with Image.open(paths[i]) as img:
                sides.append(min(img.size))
        except Exception:  # undecodable files are reported by the embed stage
            continue
    return float(np.median(sides)) if sides else None


# --------------------------------------------------------------------------- manifests


def read_table(path: Path) -> pd.DataFrame:
    """A manifest as text, whatever its format: every cell a string, a missing value ``""``
    (what ``read_csv(dtype=str, keep_default_na=False)`` gives), so a Parquet file and the same
    table as CSV are read alike, and a dependency's change of how missing values become text
    (pandas 3's ``astype(str)``) cannot reach the rules below."""
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return as_text(pd.read_parquet(path))
        return pd.read_csv(path, sep=separator(path), dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas/pyarrow raise many types for unreadable files
        raise InputError(f"{path}: cannot read manifest ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}); check it is a valid "
                         "CSV or Parquet file") from exc


def as_text(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every cell as the text a CSV file would hold: whole numbers without ``.0``
    (a Parquet integer column with a gap is stored as floats), missing values as ``""``."""
    typed = df.convert_dtypes()
    return typed.astype(object).where(typed.notna(), "").astype(str)


def _pick_column(df: pd.DataFrame, requested: str | None, candidates: tuple[str, ...],
                 what: str, manifest: Path, option: str, required: bool) -> str | None:
    if requested is not None:
        if requested not in df.columns:
            raise InputError(f"{manifest}: no {what} column {requested!r}; columns are "
                             f"{', '.join(map(str, df.columns))}; pass {option} with one of them")
        return requested
    lower = {str(c).lower(): c for c in df.columns}
    for cand in candidates:
        if cand in lower:
            return lower[cand]
    if required:
        raise InputError(f"{manifest}: cannot find a {what} column (tried {', '.join(candidates)});"
                         f" columns are {', '.join(map(str, df.columns))}; pass {option} NAME")
    return None


def load_manifest(
    manifest: Path,
    *,
    path_column: str | None = None,
    label_column: str | None = None,
    split_column: str | None = None,
    count_prefix: str | None = None,
    image_root: str | os.PathLike | None = None,
) -> LabeledImages:
    """A CSV/Parquet manifest: a path column and a label column, or per-class count columns.

    Paths are relative to ``image_root`` (default: the manifest's folder). Label counts come from
    columns named ``<count_prefix><class>`` (default prefix ``n_``, used when such columns exist),
    or from several rows that name the same path (one row per annotation).
    """
    manifest = manifest.resolve()
    df = read_table(manifest)
    if len(df) == 0:
        raise InputError(f"{manifest}: the manifest has no rows; add one row per image")
    pcol = _pick_column(df, path_column, PATH_COLUMN_CANDIDATES, "path", manifest,
                        "--path-column", True)
    prefix = DEFAULT_COUNT_PREFIX if count_prefix is None else count_prefix
    count_cols = [c for c in df.columns if prefix and str(c).startswith(prefix)
                  and str(c) != pcol] if prefix else []
    if count_prefix is not None and not count_cols:
        raise InputError(f"{manifest}: no columns start with the count prefix {count_prefix!r}; "
                         f"columns are {', '.join(map(str, df.columns))}")
    lcol = _pick_column(df, label_column, LABEL_COLUMN_CANDIDATES, "label", manifest,
                        "--label-column", required=not count_cols)
    scol = _pick_column(df, split_column, SPLIT_COLUMN_CANDIDATES, "split", manifest,
                        "--split-column", False)
    base = Path(image_root).expanduser().resolve() if image_root else manifest.parent

    df = df.copy()
    df["_path"] = df[pcol].astype(str).str.strip()
    skipped: list[dict] = []
    if lcol is not None:
        df["_label"] = df[lcol].map(normal_text)
        no_label = df[lcol].isna() | df["_label"].str.lower().isin(MISSING_LABELS)
        if count_cols:
            no_label &= _count_matrix(df, count_cols, manifest).sum(axis=1) == 0
        for p, lab in zip(df.loc[no_label, "_path"], df.loc[no_label, "_label"]):
            skipped.append({"path": str(base / p), "reason": "no label in the manifest" + (
                f" ({lab!r} reads as missing; rename the class to keep it)"
                if lab and lab.lower() != "nan" else "")})
        df = df.loc[~no_label]
    if len(df) == 0:
        raise InputError(f"{manifest}: no row has a label in column {lcol!r}")
    # a sample is its file: x.jpg, ./x.jpg, its absolute path or a link to it are one sample,
    # its rows' annotations counted together
    df["_file"] = manifest_files(df["_path"], base=base)
    repeated = int(df["_file"].duplicated().sum())

    if count_cols:
        classes = [str(c)[len(prefix):] for c in count_cols]
        counts = _count_matrix(df, count_cols, manifest)
        zero = counts.sum(axis=1) == 0
        if zero.any():
            for p in df.loc[zero, "_path"]:
                skipped.append({"path": str(base / p), "reason": "all label counts are zero"})
            df, counts = df.loc[~zero], counts[~zero]
        if lcol is not None:
            unknown = sorted(set(df["_label"]) - set(classes))
            if unknown:
                raise InputError(f"{manifest}: labels {unknown[:5]} in column {lcol!r} have no "
                                 f"count column {prefix}<label>; add the columns or fix the labels")
            index = {c: i for i, c in enumerate(classes)}
            named = np.array([index[v] for v in df["_label"]], dtype=np.int64)
            outvoted = counts[np.arange(len(named)), named] < counts.max(axis=1)
            if outvoted.any():
                row = int(np.flatnonzero(outvoted)[0])
                raise InputError(f"{manifest}: the label {df['_label'].iat[row]!r} of "
                                 f"{df['_path'].iat[row]} in column {lcol!r} is not a majority "
                                 f"of its count columns ({outvoted.sum()} rows like it); the "
                                 "given label is the most annotated class: fix the counts, or "
                                 "drop the label column to use the counts alone")
        else:
            named = None
        codes, unique = pd.factorize(df["_file"])
        if len(unique) < len(df):  # one file named by several rows: their counts add up
            rows = np.arange(len(df))
            summed = np.zeros((len(unique), counts.shape[1]), dtype=np.float32)
            np.add.at(summed, codes, counts)
            first = np.full(len(unique), len(df))
            np.minimum.at(first, codes, rows)
            last = np.zeros(len(unique), dtype=np.int64)  # the newest row of each file
            np.maximum.at(last, codes, rows)
            counts, df = summed, df.iloc[first]
            labels = majority_labels(counts, prefer=None if named is None else named[last])
        else:
            # a majority class of every row: where counts tie, the label column decides
            labels = named if named is not None else majority_labels(counts)
        order = np.argsort(classes, kind="stable")  # classes are kept sorted everywhere
        remap = np.empty_like(order)
        remap[order] = np.arange(len(order))
        classes = [classes[i] for i in order]
        counts = counts[:, order]
        labels = remap[labels]
        paths_rel, files = list(df["_path"]), list(df["_file"])
        splits_raw = list(df[scol].astype(str)) if scol else [""] * len(df)
    else:
        classes = sorted(set(df["_label"]))
        index = {c: i for i, c in enumerate(classes)}
        # one row per annotation: rows with the same path are summed into label counts
        grouped: dict[str, int] = {}
        paths_rel, files, splits_raw, rows_counts = [], [], [], []
        for p, f, lab, s in zip(df["_path"], df["_file"], df["_label"],
                                df[scol].astype(str) if scol else [""] * len(df)):
            j = grouped.get(f)
            if j is None:
                grouped[f] = j = len(files)
                paths_rel.append(p)
                files.append(f)
                splits_raw.append(s)
                rows_counts.append(np.zeros(len(classes), dtype=np.float32))
            rows_counts[j][index[lab]] += 1
        counts = np.stack(rows_counts)
        # the one tie rule (dataset.majority_labels): a tie goes to the newest annotation
        # among the tied classes (the class of the tie whose last row comes last)
        last = np.full(counts.shape, -1, dtype=np.int64)
        for row, (f, lab) in enumerate(zip(df["_file"], df["_label"])):
            last[grouped[f], index[lab]] = row
        tied = counts == counts.max(axis=1, keepdims=True)
        labels = majority_labels(counts, prefer=np.where(tied, last, -1).argmax(axis=1))

    if len(set(labels.tolist())) < 2:
        raise InputError(f"{manifest}: every labeled row has the same class "
                         f"({classes[int(labels[0])]!r}); an audit needs at least two classes")
    abs_paths = files
    missing = [p for p in abs_paths if not os.path.exists(p)]
    if missing:
        raise InputError(f"{manifest}: {len(missing)} of {len(abs_paths)} image paths do not exist "
                         f"(first: {missing[0]}); paths are read relative to {base}, pass "
                         "--image-root DIR if they are relative to another folder")
    keep = np.ones(len(abs_paths), dtype=bool)
    for i, p in enumerate(abs_paths):
        reason = cheap_file_problem(Path(p))
        if reason:
            keep[i] = False
            skipped.append({"path": p, "reason": reason})
    splits = np.array([SPLIT_NAMES.get(s.strip().lower(), s.strip()) for s in splits_raw],
                      dtype=object)
    return LabeledImages(
        paths=[p for p, k in zip(abs_paths, keep) if k],
        labels=labels[keep],
        classes=classes,
        label_counts=counts[keep].astype(np.float32),
        splits=splits[keep],
        # the id: the file as the manifest first spells it, tidied (./x.jpg is x.jpg)
        ids=[printable(os.path.normpath(p)) for p, k in zip(paths_rel, keep) if k],
        source={"kind": "manifest", "location": str(manifest), "path_column": pcol,
                "label_column": lcol, "split_column": scol, "image_root": str(base),
                "count_columns": [str(c) for c in count_cols],
                "read_as": _manifest_read_as(manifest, pcol=pcol, lcol=lcol, scol=scol,
                                             n_count=len(count_cols), repeated=repeated),
                "case_variants": case_variants(classes)},
        skipped=skipped,
    )


def manifest_files(paths, *, base: Path) -> list[str]:
    """Each manifest path (relative to ``base`` unless absolute) as the file it names, links
    and ``..`` resolved: what makes two spellings one sample."""
    return [os.path.realpath(p if os.path.isabs(p) else base / p) for p in paths]


def _manifest_read_as(manifest: Path, *, pcol, lcol, scol, n_count: int, repeated: int) -> str:
    parts = [f"paths from column {pcol!r}"]
    if lcol is not None:
        parts.append(f"labels from {lcol!r}")
    if n_count:
        parts.append(f"annotation counts from {n_count} columns")
    if scol is not None:
        parts.append(f"splits from {scol!r}")
    if manifest.suffix.lower() not in (".parquet", ".pq"):
        parts.append(f"separated by {separator(manifest)!r}")
    if repeated:
        parts.append(f"{repeated} rows name a file already named (one sample, annotations "
                     "counted)")
    return "a manifest: " + ", ".join(parts)


def _count_matrix(df: pd.DataFrame, cols: list, manifest: Path) -> np.ndarray:
    try:
        values = df[cols].apply(pd.to_numeric, errors="raise")
    except (ValueError, TypeError) as exc:
        raise InputError(f"{manifest}: label count columns must be numbers ({exc})") from exc
    counts = values.fillna(0).to_numpy(dtype=np.float32)
    if (counts < 0).any():
        raise InputError(f"{manifest}: label count columns hold negative numbers")
    return counts
