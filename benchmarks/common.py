"""Shared helpers for the benchmarks: the real data in ../shared/data, embedded once and cached.

Benchmarks are run by hand (never in CI); each prints a table and can write it as JSON.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DQAUDIT_SHARED_DATA", REPO.parent / "shared" / "data"))
CIFAR10N = SHARED / "cifar10n"
CIFAR10H = SHARED / "cifar10h"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]
NOISE_SETS = ["aggre", "random1", "random2", "random3", "worst"]


def require(path: Path) -> Path:
    if not path.exists():
        sys.exit(f"benchmark data not found at {path}; set DQAUDIT_SHARED_DATA")
    return path


def cifar10n_table() -> pd.DataFrame:
    df = pd.read_csv(require(CIFAR10N) / "labels.csv")
    df["path"] = [str(CIFAR10N / f) for f in df["file"]]
    return df


def cifar10h_table() -> pd.DataFrame:
    df = pd.read_csv(require(CIFAR10H) / "labels.csv")
    df["path"] = [str(CIFAR10H / f) for f in df["file"]]
    return df


def embed(paths: list[str], *, model: str | None = None, image_size="auto", device: str = "cpu",
          flip_tta: bool = True, progress: bool = False) -> np.ndarray:
    """Embeddings exactly as `dqaudit scan` computes them (same defaults, same cache)."""
    from dqaudit.embed import DEFAULT_ENCODER, auto_image_size, embed_images, load_encoder
    from dqaudit.io.ingest import median_image_side

    model = model or DEFAULT_ENCODER

    if image_size == "auto":
        image_size = auto_image_size(model, median_image_side(paths, seed=0))
    enc = load_encoder(model, image_size=image_size, flip_tta=flip_tta)
    res = embed_images(paths, model=enc, device=device, progress=progress)
    assert res.ok.all(), res.failures[:3]
    return res.embeddings


def probe_accuracy(x: np.ndarray, y: np.ndarray) -> float:
    """5-fold cross-validated accuracy of a logistic-regression probe on features ``x``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    return float(cross_val_score(LogisticRegression(max_iter=2000), x, y, cv=5).mean())


def report(result: dict, json_path: str | None) -> None:
    """Print a benchmark's result as JSON, and write it to ``json_path`` when given."""
    print(json.dumps(result, indent=1))
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=1))


def labeled_images(paths, labels, classes=CLASSES, counts=None):
    """A LabeledImages from arrays (the benchmarks bypass file ingest, not the scoring)."""
    from dqaudit.dataset import LabeledImages

    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[v] for v in labels], dtype=np.int64)
    if counts is None:
        counts = np.zeros((len(y), len(classes)), dtype=np.float32)
        counts[np.arange(len(y)), y] = 1
    return LabeledImages(paths=list(paths), labels=y, classes=list(classes),
                         label_counts=counts.astype(np.float32),
                         splits=np.array([""] * len(y), dtype=object),
                         ids=[os.path.basename(p) for p in paths])


def scored_cases(*, cache: Path | None = None) -> dict:
    """The 8 CIFAR-10N cases of clr_accuracy.py (clean, clean + 5% / 20% uniform, the five
    human label sets) scored as `dqaudit scan` scores them: per case the labels, the truth
    (label != clean) and the audit's columns. Cached as .npz (scoring takes ~20 s a case)."""
    from clr_accuracy import cases

    from dqaudit.scoring.table import score_dataset

    cache = cache or Path(os.environ.get("DQAUDIT_BENCH_CACHE",
                                         Path.home() / ".cache" / "dqaudit" / "bench"))
    cache.mkdir(parents=True, exist_ok=True)
    df = cifar10n_table()
    clean = np.array([CLASSES.index(c) for c in df["clean"]])
    emb = None
    out = {}
    for name, y in cases(df, clean).items():
        path = cache / f"scored-{name.replace('%', 'pct').replace(' ', '_')}.npz"
        if not path.exists():
            if emb is None:
                emb = embed(list(df["path"]))
            data = labeled_images(df["path"], [CLASSES[i] for i in y])
            sc = score_dataset(data, emb, method="linear", seed=0)
            t = sc.table
            np.savez(path, labels=y, errors=(y != clean), probs=sc.probs,
                     label_error_probability=t["label_error_probability"].to_numpy(),
                     given_label_disagreement=t["given_label_disagreement"].to_numpy(),
                     noisiness=t["noisiness"].to_numpy(), review_score=t["review_score"].to_numpy(),
                     estimated_label_errors=sc.stats["estimated_label_errors"])
        out[name] = dict(np.load(path))
    return out
