"""Manifests of label sets (multi-label data): a label column whose cells hold sets
(``cat;dog``; ``label_sep`` to change the separator; an empty cell is the empty set), or one
0/1 column per class (``label_columns``). Rows naming one file are its annotators: a class is
in the file's set when a majority of them marked it, a tie going to the newest row. Every
problem is one line naming the row and the fix; nothing is written.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from dqaudit.dataset import LabeledImages, first_classes
from dqaudit.errors import InputError
from dqaudit.files import normal_text, printable
from dqaudit.io.manifest import (LABEL_COLUMN_CANDIDATES, checked_files, manifest_files, opened,
                                 pick_column)
from dqaudit.io.outputs import separator
from dqaudit.io.set_names import check_set_classes, sets_of_names

YES = frozenset({"1", "1.0", "true", "yes", "y", "t"})
NO = frozenset({"0", "0.0", "false", "no", "n", "f", ""})


def load_set_manifest(manifest: Path, *, path_column: str | None, label_column: str | None,
                      split_column: str | None, image_root: str | None, label_sep: str,
                      label_columns: tuple[str, ...] | None,
                      classes: tuple[str, ...] | None) -> LabeledImages:
    """A manifest of label sets -> a multi-label ``LabeledImages`` (see the module). With
    ``classes`` given, a set naming another class is an error; without, the classes are those
    the sets name."""
    manifest = manifest.resolve()
    df, pcol, scol, base = opened(manifest, path_column=path_column, split_column=split_column,
                                  image_root=image_root)
    known = [normal_text(c) for c in classes] if classes else None
    if known is not None:
        inside = [c for c in known if label_sep in c]
        if inside:
            raise InputError(f"class {inside[0]!r} contains the set separator {label_sep!r}; "
                             "pass --label-sep with a character no class name holds")
    lcol = None
    duplicated = 0
    if label_columns:
        missing = [c for c in label_columns if c not in df.columns]
        if missing:
            raise InputError(f"{manifest}: no column {missing[0]!r} for --label-columns; "
                             f"columns are {', '.join(map(str, df.columns))}")
        names = [normal_text(c) for c in label_columns]
        if known is not None and set(names) != set(known):
            raise InputError("--classes and --label-columns name different classes; give one "
                             "of them")
        rows = np.zeros((len(df), len(names)), dtype=bool)
        for k, col in enumerate(label_columns):
            cells = df[col].astype(str).str.strip().str.lower()
            bad = ~cells.isin(YES | NO)
            if bad.any():
                r = int(np.flatnonzero(bad.to_numpy())[0])
                raise InputError(f"{manifest}: row {r + 2}, column {col!r}: {df[col].iat[r]!r} "
                                 "is not 0 or 1; each --label-columns column says whether "
                                 "its class is present (1) or not (0)")
            rows[:, k] = cells.isin(YES).to_numpy()
        check_set_classes(names)
    else:
        lcol = pick_column(df, label_column, LABEL_COLUMN_CANDIDATES, "label", manifest,
                           "--label-column", True)
        parsed, duplicated = [], 0
        for cell in df[lcol].astype(str):
            parts = [normal_text(p) for p in cell.split(label_sep)]
            parts = [p for p in parts if p]
            duplicated += len(parts) != len(set(parts))
            parsed.append(set(parts))
        names, rows = sets_of_names(parsed, known, where=lambda r: f"{manifest}: row {r + 2}",
                                    fix="the row")
    if not len(names):
        raise InputError(f"{manifest}: no set names a class; fill the label column "
                         f"{lcol!r} with sets like 'cat{label_sep}dog'")
    order = np.argsort(names, kind="stable")  # classes are kept sorted everywhere
    names, rows = [names[i] for i in order], rows[:, order]
    paths = df[pcol].astype(str).str.strip()
    files = manifest_files(paths, base=base)
    codes, unique = pd.factorize(pd.Series(files))
    votes = np.zeros((len(unique), len(names)))
    np.add.at(votes, codes, rows.astype(float))
    n_rows = np.bincount(codes, minlength=len(unique))
    newest = np.zeros((len(unique), len(names)), dtype=bool)
    newest[codes] = rows  # later rows overwrite earlier ones: the newest row's answers
    sets = (2 * votes > n_rows[:, None]) | ((2 * votes == n_rows[:, None]) & newest)
    first = np.full(len(unique), len(df))
    np.minimum.at(first, codes, np.arange(len(df)))
    paths_rel = [paths.iat[i] for i in first]
    splits_raw = [df[scol].astype(str).iat[i] if scol else "" for i in first]
    abs_paths = list(unique)
    skipped: list[dict] = []
    keep, splits = checked_files(manifest, abs_paths, base=base, splits_raw=splits_raw,
                                 skipped=skipped)
    sets = sets[keep]
    repeated = len(df) - len(unique)
    read = (f"a manifest of label sets: paths from column {pcol!r}, "
            + (f"classes from 0/1 columns {', '.join(map(repr, label_columns))}"
               if label_columns else f"sets from {lcol!r} separated by {label_sep!r}")
            + (f", splits from {scol!r}" if scol else "")
            + (f", columns separated by {separator(manifest)!r}"
               if manifest.suffix.lower() not in (".parquet", ".pq") else "")
            + (f", {repeated} rows name a file already named (its annotators: a class is in "
               "the set when most of them marked it)" if repeated else "")
            + (f"; {duplicated} cells name a class twice (counted once)" if duplicated else ""))
    return LabeledImages(
        paths=[p for p, k in zip(abs_paths, keep) if k], labels=first_classes(sets),
        classes=names, label_counts=sets.astype(np.float32), multi_label=True,
        splits=splits[keep],
        ids=[printable(os.path.normpath(p)) for p, k in zip(paths_rel, keep) if k],
        source={"kind": "manifest", "location": str(manifest), "path_column": pcol,
                "label_column": lcol, "label_columns": list(label_columns or []),
                "label_sep": label_sep, "split_column": scol, "image_root": str(base),
                "multi_label": True, "duplicate_classes_in_cells": duplicated,
                "read_as": read},
        skipped=skipped)
