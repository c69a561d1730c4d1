"""Manifests: a CSV or Parquet table of image paths and labels (or per-class annotation counts)
-> ``LabeledImages``. One row per image, or one row per annotation (repeated paths: the label
counts are the rows'); a path is the file it names (``manifest_files``), read as text, the
separator the one the header holds most (``outputs.separator``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from dqaudit.dataset import SPLIT_NAMES, LabeledImages, case_variants, majority_labels
from dqaudit.errors import InputError
from dqaudit.files import cheap_file_problem, normal_text, printable
from dqaudit.io.outputs import separator

PATH_COLUMN_CANDIDATES = ("path", "filepath", "file_path", "file", "filename", "image",
                          "image_path")
LABEL_COLUMN_CANDIDATES = ("label", "labels", "class", "class_name", "category", "target", "y")
SPLIT_COLUMN_CANDIDATES = ("split", "subset", "fold")
DEFAULT_COUNT_PREFIX = "n_"
# manifest values that mean "no label" (pandas' own missing-value spellings among them), not a
# class: a row holding one is skipped with its reason
MISSING_LABELS = frozenset({"", "nan", "na", "n/a", "none", "null", "<na>", "nat"})


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


def pick_column(df: pd.DataFrame, requested: str | None, candidates: tuple[str, ...],
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


def opened(manifest: Path, *, path_column: str | None, split_column: str | None,
           image_root: str | os.PathLike | None) -> tuple[pd.DataFrame, str, str | None, Path]:
    """(the rows of ``manifest`` (resolved), its path column, its split column or None, the
    folder its paths are relative to); an empty manifest or a missing path column is an
    InputError naming the fix. Both manifest readers start here."""
    df = read_table(manifest)
    if len(df) == 0:
        raise InputError(f"{manifest}: the manifest has no rows; add one row per image")
    pcol = pick_column(df, path_column, PATH_COLUMN_CANDIDATES, "path", manifest,
                       "--path-column", True)
    scol = pick_column(df, split_column, SPLIT_COLUMN_CANDIDATES, "split", manifest,
                       "--split-column", False)
    base = Path(image_root).expanduser().resolve() if image_root else manifest.parent
    return df, pcol, scol, base


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
    df, pcol, scol, base = opened(manifest, path_column=path_column, split_column=split_column,
                                  image_root=image_root)
    prefix = DEFAULT_COUNT_PREFIX if count_prefix is None else count_prefix
    count_cols = [c for c in df.columns if prefix and str(c).startswith(prefix)
                  and str(c) != pcol] if prefix else []
    if count_prefix is not None and not count_cols:
        raise InputError(f"{manifest}: no columns start with the count prefix {count_prefix!r}; "
                         f"columns are {', '.join(map(str, df.columns))}")
    lcol = pick_column(df, label_column, LABEL_COLUMN_CANDIDATES, "label", manifest,
                        "--label-column", required=not count_cols)

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
        looks_like_sets = [c for c in classes if ";" in c and
                           any(normal_text(part) in classes for part in c.split(";"))]
        if looks_like_sets:
            raise InputError(f"{manifest}: labels like {looks_like_sets[0]!r} hold several "
                             "classes: pass --multi-label to audit label sets (each cell a set "
                             "separated by ';', --label-sep to change it)")
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
    keep, splits = checked_files(manifest, abs_paths, base=base, splits_raw=splits_raw,
                                 skipped=skipped)
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


def checked_files(manifest: Path, files: list[str], *, base: Path, splits_raw: list[str],
                  skipped: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """((N,) bool: the manifest's ``files`` worth decoding, (N,) their split names). A missing
    file is an error naming ``base`` and the fix; an empty or non-image file is appended to
    ``skipped`` with its reason."""
    missing = [p for p in files if not os.path.exists(p)]
    if missing:
        raise InputError(f"{manifest}: {len(missing)} of {len(files)} image paths do not exist "
                         f"(first: {missing[0]}); paths are read relative to {base}, pass "
                         "--image-root DIR if they are relative to another folder")
    keep = np.ones(len(files), dtype=bool)
    for i, p in enumerate(files):
        reason = cheap_file_problem(Path(p))
        if reason:
            keep[i] = False
            skipped.append({"path": p, "reason": reason})
    splits = np.array([SPLIT_NAMES.get(s.strip().lower(), s.strip()) for s in splits_raw],
                      dtype=object)
    return keep, splits


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
