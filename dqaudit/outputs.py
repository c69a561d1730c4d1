"""Outputs: the only stage that writes files (samples table, summary.json, skipped.csv, arrays).

Files are written to a temporary name and renamed, so a killed run never leaves a half-written
table that looks complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

SAMPLES_PARQUET = "samples.parquet"
SAMPLES_CSV = "samples.csv"
SUMMARY_JSON = "summary.json"
SKIPPED_CSV = "skipped.csv"
EMBEDDINGS_NPY = "embeddings.npy"
LABEL_COUNTS_NPY = "label_counts.npy"


def review_order_column(samples: pd.DataFrame) -> str:
    """The column that orders review: ``review_score``, or ``priority`` in audits written
    before that column existed."""
    return "review_score" if "review_score" in samples.columns else "priority"


def _atomic(path: Path):
    tmp = path.with_name(path.name + ".tmp")
    return tmp


def write_json(path: Path, data: dict) -> None:
    tmp = _atomic(path)
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def samples_for_csv(samples: pd.DataFrame) -> pd.DataFrame:
    """List-valued columns (``issues``) become ``;``-joined strings."""
    out = samples.copy()
    for col in out.columns:
        if len(out) and isinstance(out[col].iloc[0], (list, tuple, np.ndarray)):
            out[col] = out[col].map(lambda v: ";".join(map(str, v)))
    return out


def write_samples(out_dir: Path, samples: pd.DataFrame) -> None:
    pq = out_dir / SAMPLES_PARQUET
    tmp = _atomic(pq)
    samples.to_parquet(tmp, index=False)
    os.replace(tmp, pq)
    csv = out_dir / SAMPLES_CSV
    tmp = _atomic(csv)
    samples_for_csv(samples).to_csv(tmp, index=False, float_format="%.6g")
    os.replace(tmp, csv)


def write_csv(path: Path, table: pd.DataFrame) -> None:
    """``table`` as a CSV at ``path``, written to a temporary name and renamed."""
    tmp = _atomic(path)
    table.to_csv(tmp, index=False)
    os.replace(tmp, path)


def write_skipped(out_dir: Path, skipped: list[dict]) -> None:
    path = out_dir / SKIPPED_CSV
    tmp = _atomic(path)
    pd.DataFrame(skipped, columns=["path", "reason"]).to_csv(tmp, index=False)
    os.replace(tmp, path)


def write_array(out_dir: Path, name: str, array: np.ndarray) -> None:
    path = out_dir / name
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def read_summary(out_dir: Path) -> dict:
    return json.loads((Path(out_dir) / SUMMARY_JSON).read_text())


def read_samples(out_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(Path(out_dir) / SAMPLES_PARQUET)
