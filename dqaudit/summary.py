"""The dataset-level part of ``summary.json``: what was audited, with what, where, and the
numbers derived from the samples table (relabel plan, verification size)."""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pandas as pd

from dqaudit.dataset import LabeledImages
from dqaudit.estimates.headline import HEADLINE_HALF_WIDTH
from dqaudit.estimates.plan import relabel_plan
from dqaudit.estimates.survey import verification_size
from dqaudit.files import printable
from dqaudit.version import __version__


def build_summary(data: LabeledImages, embed_info: dict, *, seed: int, timings: dict,
                  command: str | None) -> dict:
    """The summary's description of the run; the scores' statistics are added by the audit."""
    splits = pd.Series(list(data.splits)).value_counts().sort_index()
    skipped_reasons = pd.Series([s["reason"] for s in data.skipped]).value_counts()
    source = data.source or {}
    location = str(source.get("location", "dataset"))
    name = Path(location).stem if source.get("kind") == "manifest" else Path(location).name
    if source.get("kind") == "manifest" and name in ("labels", "manifest", "metadata"):
        name = Path(location).parent.name
    return {
        "dqaudit_version": __version__,
        "dataset_name": name or location,
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
        "skipped_examples": [{"path": printable(str(r["path"])), "reason": r["reason"]}
                             for r in data.skipped[:20]],
        "embedding": embed_info,
        "model": embed_info["model"],
        "device": embed_info["device"],
        "timings": timings,
        "environment": {"python": platform.python_version(), "platform": platform.platform()},
        "versions": _versions(),
        "clr": None,  # filled by controlled CLR injection when it runs
        "fiftyone_dataset": None,
        "fiftyone_run": None,  # the name of an audit of part of that dataset (a view)
    }


def _versions() -> dict:
    out = {"dqaudit": __version__}
    for pkg in ("torch", "timm", "open-clip-torch", "numpy", "scikit-learn"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def plan_fields(samples: pd.DataFrame) -> dict:
    """``relabel_plan`` and ``verify_size_for_2pt`` of a scored samples table (scored rows)."""
    probability = samples["label_error_probability"].to_numpy(dtype=np.float64)
    return {"relabel_plan": relabel_plan(samples["review_score"].to_numpy(), probability),
            "verify_size_for_2pt": verification_size(probability, HEADLINE_HALF_WIDTH)}


def allocated(samples: pd.DataFrame, head: dict, column: str, *, names=None) -> dict:
    """Per value of ``column`` (a split, a given label): samples, flagged label errors, and the
    headline's share of wrong labels (``head``, from ``headline``) allocated in proportion to
    the group's summed ``label_error_probability``, so the groups' rates average to the
    headline exactly (its interval scaled the same way). Dropped samples are left out."""
    kept = samples[~samples["dropped"].astype(bool)] if "dropped" in samples else samples
    groups = kept[column].astype(str)
    q = kept["label_error_probability"].to_numpy(dtype=np.float64)
    flags = kept["issues"].map(lambda v: "label_error" in list(v)).to_numpy()
    total, n_all = q.sum(), len(kept)
    out = {}
    for name in names if names is not None else sorted(set(groups)):
        m = (groups == name).to_numpy()
        if not m.any():
            continue
        share = q[m].sum() / total if total > 0 else m.mean()
        scale = n_all * share / m.sum()
        rates = {key: None if head[of] is None else round(min(1.0, head[of] * scale), 4)
                 for key, of in (("headline_share", "rate"), ("ci_low", "ci_low"),
                                 ("ci_high", "ci_high"))}
        out[name or "(none)"] = {"n": int(m.sum()), "flagged_label_errors": int(flags[m].sum()),
                                 **rates}
    return out


def flag_meaning(samples: pd.DataFrame, head: dict, n_samples: int) -> dict:
    """What the label-error flag says beside the headline: how many samples carry it, the share
    of them expected to be wrong (their mean calibrated ``label_error_probability``) and the
    number of wrong labels the headline implies. The flag is set for review (it errs toward
    catching errors), so it can name more samples than there are wrong labels."""
    kept = samples[~samples["dropped"].astype(bool)] if "dropped" in samples else samples
    flags = kept["issues"].map(lambda v: "label_error" in list(v)).to_numpy()
    q = kept["label_error_probability"].to_numpy(dtype=np.float64)
    return {"flagged": int(flags.sum()),
            "expected_precision": round(float(q[flags].mean()), 4) if flags.any() else None,
            "expected_wrong_flagged": round(float(q[flags].sum()), 1),
            "headline_wrong_labels": int(round(head["rate"] * n_samples))}


def per_split(samples: pd.DataFrame, head: dict) -> dict | None:
    """The headline allocated to the splits (``allocated``); None when there are none."""
    if (samples["split"].astype(str) == "").all():
        return None
    return {"source": head["source"], "stale": bool(head["stale_label_changes"]),
            "splits": allocated(samples, head, "split"),
            "description": "the headline share of wrong labels, allocated to each split in "
                           "proportion to its summed label_error_probability"}


def per_class(samples: pd.DataFrame, head: dict, classes: list[str]) -> dict:
    """The headline allocated to the given labels (``allocated``), in class order: the table
    the report shows, which averages to the cover (``per_class_noise`` keeps each class's
    confident-joint rate, the transition matrix's)."""
    return {"source": head["source"], "stale": bool(head["stale_label_changes"]),
            "classes": allocated(samples, head, "label", names=classes),
            "description": "the headline share of wrong labels, allocated to each given label "
                           "in proportion to its summed label_error_probability"}
