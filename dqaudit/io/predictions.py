"""A model's predictions, as a user gives them (``dqaudit evaluate --predictions``): a CSV or
Parquet table of image paths (or ids) and predicted classes, or one probability column per
class, matched to an audit's samples by meaning (``files.sample_ids``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dqaudit.errors import DqauditError
from dqaudit.files import sample_ids
from dqaudit.io import outputs

PATH_COLUMNS = ("path", "filepath", "file", "filename", "image", "id")


PREDICTED_COLUMNS = ("predicted", "prediction", "pred", "predicted_label")


def read_predictions(source, *, name: str, samples: pd.DataFrame,
                     classes: list[str]) -> pd.DataFrame:
    """A model's predictions -> DataFrame(``row``: index into ``samples``, ``predicted``: class
    index). ``source``: a CSV/Parquet path or a DataFrame with a path (or id) column and
    ``predicted``, or one probability column per class (then the top class is the
    prediction). Samples are found by meaning (``files.sample_ids``: the id, the path as
    the manifest or folder gives it, the absolute path). Every problem is one error naming
    the file and the fix; nothing is written."""
    what = f"--predictions {name}" + (f" ({source})" if not isinstance(source, pd.DataFrame)
                                      else "")
    df = source if isinstance(source, pd.DataFrame) else _read_table(Path(source), what)
    if len(df) == 0:
        raise DqauditError(f"{what}: no rows; it needs a header and one row per image "
                           "(path,predicted)")
    lower = {str(c).strip().lower(): c for c in df.columns}
    key = next((lower[c] for c in PATH_COLUMNS if c in lower), None)
    if key is None:
        raise DqauditError(f"{what}: no path column (tried {', '.join(PATH_COLUMNS)}); columns "
                           f"are {', '.join(map(str, df.columns))}")
    pred_col = next((lower[c] for c in PREDICTED_COLUMNS if c in lower), None)
    prob_cols = [c for c in df.columns if str(c) in classes]
    if pred_col is not None:
        predicted = df[pred_col].astype(str).map(str.strip)
    elif len(prob_cols) == len(classes):
        probs = df[[c for c in classes]].apply(pd.to_numeric, errors="coerce").to_numpy()
        if np.isnan(probs).any():
            raise DqauditError(f"{what}: probability columns hold values that are not numbers")
        predicted = pd.Series([classes[j] for j in probs.argmax(axis=1)], index=df.index)
    else:
        raise DqauditError(f"{what}: no 'predicted' column, nor one probability column per "
                           f"class ({', '.join(classes[:5])}...); add a 'predicted' column")
    unknown = sorted(set(predicted) - set(classes))
    if unknown:
        raise DqauditError(f"{what}: {len(unknown)} predicted classes are not classes of this "
                           f"audit ({', '.join(map(repr, unknown[:3]))}); valid: "
                           f"{', '.join(classes)}")
    values = df[key].astype(str).tolist()
    ids = sample_ids(values, samples, fallbacks=None)
    missing = [v for v, i in zip(values, ids) if i is None]
    if missing:
        raise DqauditError(f"{what}: {len(missing)} of {len(values)} rows name no sample of "
                           f"this audit (first: {', '.join(map(repr, missing[:3]))}); name "
                           "images by the path the manifest or folder gives, their absolute "
                           "path, or the id column of samples.csv")
    position = {sid: i for i, sid in enumerate(samples["id"].astype(str))}
    rows = np.array([position[i] for i in ids], dtype=np.int64)
    repeated = pd.Series(rows).duplicated(keep=False).to_numpy()
    if repeated.any():
        first = values[int(np.flatnonzero(repeated)[0])]
        raise DqauditError(f"{what}: {int(pd.Series(rows[repeated]).nunique())} images have "
                           f"more than one row (first: {first!r}); give one prediction per "
                           "image")
    index = {c: j for j, c in enumerate(classes)}
    return pd.DataFrame({"row": rows, "predicted": [index[c] for c in predicted]})


def _read_table(path: Path, what: str) -> pd.DataFrame:
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises many types for unreadable files
            raise DqauditError(f"{what}: not a readable Parquet file ({type(exc).__name__})"
                               ) from None
    if path.is_file() and path.stat().st_size == 0:
        raise DqauditError(f"{what}: the file is empty; it needs a header and one row per "
                           "image (path,predicted)")
    try:
        return outputs.read_user_csv(path)
    except DqauditError as exc:
        raise DqauditError(f"--predictions: {exc}") from None
