"""The audit pipeline: ingest -> embed -> posteriors -> scores -> outputs.

``audit`` is the one function behind the CLI's ``scan``, the FiftyOne plugin and the Python API.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from .errors import DqauditError
from .ingest import LabeledImages, load_dataset

DEFAULT_SEED = 0


@dataclass
class AuditResult:
    """What one audit produced; the same data as the files in ``out_dir``."""

    dataset: LabeledImages
    embeddings: np.ndarray
    samples: pd.DataFrame
    summary: dict
    out_dir: Path | None = None
    extras: dict = field(default_factory=dict)


def _log(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr)


def audit(
    source: str | os.PathLike | LabeledImages,
    *,
    out_dir: str | os.PathLike | None = None,
    model: str = "lite0",
    device: str = "auto",
    seed: int = DEFAULT_SEED,
    batch_size: int | None = None,
    num_workers: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    quiet: bool = False,
    command: str | None = None,
    **ingest_options,
) -> AuditResult:
    """Audit a labeled image dataset and, when ``out_dir`` is given, write the outputs there.

    ``source`` is anything ``load_dataset`` takes (folder, manifest, FiftyOne name with
    ``from_fiftyone=True``) or an already loaded ``LabeledImages``. ``ingest_options`` are passed
    to ``load_dataset``.
    """
    from .devices import resolve_device
    from .embed import embed_images

    timings: dict[str, float] = {}
    t = time.perf_counter()
    data = source if isinstance(source, LabeledImages) else load_dataset(source, **ingest_options)
    timings["ingest_seconds"] = round(time.perf_counter() - t, 3)
    device = resolve_device(device)
    _log(quiet, f"dqaudit: {len(data)} images, {data.n_classes} classes; "
                f"model {model} on {device}")

    t = time.perf_counter()
    result = embed_images(data.paths, model=model, device=device, batch_size=batch_size,
                          num_workers=num_workers, cache_dir=cache_dir, use_cache=use_cache,
                          progress=not quiet)
    timings["embed_seconds"] = round(time.perf_counter() - t, 3)
    info = result.info
    _log(quiet, f"dqaudit: embedded {info['n_embedded']} images "
                f"({info['n_cached']} from cache, {info['n_failed']} undecodable)"
                + (f" at {info['images_per_second']} img/s" if info["images_per_second"] else ""))
    if result.failures:
        data = data.subset(result.ok, extra_skipped=result.failures)
        embeddings = result.embeddings[result.ok]
    else:
        embeddings = result.embeddings
    if len(data) == 0:
        raise DqauditError("no image could be decoded; see skipped.csv for the reasons")
    if len(set(data.labels.tolist())) < 2:
        raise DqauditError("after skipping undecodable files only one class is left; an audit "
                           "needs at least two")

    samples = base_samples_table(data)
    summary = build_summary(data, info, seed=seed, timings=timings, command=command)
    res = AuditResult(dataset=data, embeddings=embeddings, samples=samples, summary=summary)
    if out_dir is not None:
        write_outputs(res, Path(out_dir))
        _log(quiet, f"dqaudit: wrote {Path(out_dir) / 'summary.json'}")
    return res


def base_samples_table(data: LabeledImages) -> pd.DataFrame:
    return pd.DataFrame({
        "id": data.ids,
        "path": data.paths,
        "label": [data.classes[i] for i in data.labels],
        "split": list(data.splits),
    })


def build_summary(data: LabeledImages, embed_info: dict, *, seed: int, timings: dict,
                  command: str | None) -> dict:
    splits = pd.Series(list(data.splits)).value_counts().sort_index()
    skipped_reasons = pd.Series([s["reason"] for s in data.skipped]).value_counts()
    return {
        "dqaudit_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "seed": seed,
        "dataset": {
            "source": data.source,
            "n_classes": data.n_classes,
            "classes": data.classes,
            "multi_annotator": data.has_multiple_annotations,
            "splits": {str(k): int(v) for k, v in splits.items() if str(k)},
        },
        "n_samples": len(data),
        "class_counts": data.class_counts(),
        "n_skipped": len(data.skipped),
        "skipped_reasons": {str(k): int(v) for k, v in skipped_reasons.items()},
        "embedding": embed_info,
        "model": embed_info["model"],
        "device": embed_info["device"],
        "timings": timings,
        "environment": {"python": platform.python_version(), "platform": platform.platform()},
    }


def write_outputs(res: AuditResult, out_dir: Path) -> None:
    from . import outputs

    out_dir.mkdir(parents=True, exist_ok=True)
    outputs.write_samples(out_dir, res.samples)
    outputs.write_skipped(out_dir, res.dataset.skipped)
    outputs.write_array(out_dir, outputs.EMBEDDINGS_NPY, res.embeddings.astype(np.float32))
    outputs.write_array(out_dir, outputs.LABEL_COUNTS_NPY, res.dataset.label_counts)
    res.out_dir = out_dir
    outputs.write_json(out_dir / outputs.SUMMARY_JSON, res.summary)
