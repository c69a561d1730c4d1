"""Features a user brings: their own (N, D) embeddings (an array, ``.npy`` or ``.npz``
file) and, for a multi-label audit, (N, R, D) embeddings of each image's regions; each matched
to the audited samples and checked, an InputError naming the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dqaudit.dataset import LabeledImages
from dqaudit.errors import InputError


def given_embeddings(data: LabeledImages, source) -> tuple[np.ndarray, dict]:
    """The user's own (N, D) embeddings for ``data``: an array, a ``.npy`` file with one row per
    audited sample in ingest order, or a ``.npz`` file with ``embeddings`` and ``paths`` (or
    ``ids``) matched to the samples."""
    name = "array"
    if isinstance(source, (str, Path)):
        path = Path(source)
        name = path.name
        if not path.is_file():
            raise InputError(f"{path}: no such embeddings file")
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = set(z.files)
                if "embeddings" not in keys or not keys & {"paths", "ids"}:
                    raise InputError(f"{path}: an .npz needs arrays 'embeddings' and 'paths' "
                                     f"(or 'ids'); it has {', '.join(sorted(keys))}")
                key = "paths" if "paths" in keys else "ids"
                rows = {str(v): i for i, v in enumerate(z[key])}
                want = [str(Path(p).resolve()) for p in data.paths] if key == "paths" \
                    else [str(v) for v in data.ids]
                if key == "paths":
                    rows = {str(Path(k).resolve()): i for k, i in rows.items()}
                missing = [w for w in want if w not in rows]
                if missing:
                    raise InputError(f"{path}: {len(missing)} audited samples have no row "
                                     f"(first: {missing[0]}); match its {key!r} to the dataset")
                source = z["embeddings"][[rows[w] for w in want]]
        elif path.suffix == ".npy":
            source = np.load(path, allow_pickle=False)
        else:
            raise InputError(f"{path}: embeddings must be a .npy or .npz file")
    x = np.asarray(source, dtype=np.float32)
    if x.ndim != 2 or len(x) != len(data):
        raise InputError(f"embeddings from {name} have shape {x.shape}; expected "
                         f"({len(data)}, D), one row per audited sample in the order dqaudit "
                         "reads them (or an .npz with 'paths' to match rows by file)")
    if not np.isfinite(x).all():
        raise InputError(f"embeddings from {name} contain NaN or infinite values")
    info = {"model": f"user embeddings ({name})", "device": None, "dim": int(x.shape[1]),
            "image_size": None, "flip_tta": False,
            "n_embedded": len(x), "n_cached": 0, "n_failed": 0, "images_per_second": None}
    return x, info


def checked_regions(regions, embeddings, n: int) -> np.ndarray | None:
    """A user's region embeddings (N, R, D) as float32, checked against the (N, D)
    ``embeddings`` they go with; an InputError names what is wrong (None stays None)."""
    if regions is None:
        return None
    if embeddings is None:
        raise InputError("region_embeddings= go beside embeddings= (the whole images' features "
                         "of the same model); pass both")
    r = np.asarray(regions, dtype=np.float32)
    d = np.shape(embeddings)[1] if np.ndim(embeddings) == 2 else None
    if r.ndim != 3 or len(r) != n or r.shape[1] < 1 or r.shape[2] != d:
        raise InputError(f"region_embeddings have shape {r.shape}; expected ({n}, R, {d}): R "
                         "regions of each sample, in the embeddings' rows and dimensions")
    if not np.isfinite(r).all():
        raise InputError("region_embeddings contain NaN or infinite values")
    return r


def pred_probs_info(n: int) -> dict:
    """The embed stage's record of an audit of a user's ``pred_probs`` alone (no features)."""
    return {"model": "user pred_probs", "device": None, "image_size": None, "flip_tta": False,
            "n_embedded": n, "n_cached": 0, "n_failed": 0, "images_per_second": None}
