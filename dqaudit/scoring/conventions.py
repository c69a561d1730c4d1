"""The audit in the shapes users of cleanlab's Datalab and cleanvision know.

Datalab: ``get_issues(name)`` is one row per sample with ``is_<type>_issue`` (bool) and
``<type>_score``, a *quality* score in [0, 1] where low means bad; ``get_issue_summary()`` is
one row per type with ``num_issues`` and the mean ``score``; ``report()`` prints both. dqaudit's
own columns keep their directions (higher = worse: ``label_error_probability``, the image
checks' ``*_score``); here each becomes ``1 - value``, and the image checks take cleanvision's
names (``bright`` is cleanvision's ``light``). Functions of the samples table; nothing is
computed that the audit does not hold.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dqaudit.errors import DqauditError

# Datalab / cleanvision issue type -> (dqaudit's issue tag, dqaudit's column, how to turn it
# into a quality score)
IMAGE_TYPES = {"dark": "dark", "light": "bright", "blurry": "blurry",
               "low_information": "low_information", "grayscale": "grayscale",
               "odd_size": "odd_size", "blank": "blank"}
ISSUE_TYPES = ("label", "outlier", "near_duplicate", "exact_duplicate", *IMAGE_TYPES)


def _has(samples: pd.DataFrame, tag: str) -> np.ndarray:
    return samples["issues"].map(lambda v: tag in list(v)).to_numpy(dtype=bool)


def _one(samples: pd.DataFrame, name: str) -> pd.DataFrame | None:
    """The columns of one issue type, or None when the audit did not run its check."""
    if name == "label":
        if samples["label_error_probability"].isna().all():
            return None
        return pd.DataFrame({
            "is_label_issue": _has(samples, "label_error"),
            "label_score": 1.0 - samples["label_error_probability"].to_numpy(dtype=float),
            "given_label": samples["label"].to_numpy(),
            "predicted_label": samples["suggested_label"].to_numpy()})
    if name == "outlier":
        if samples["outlier_percentile"].isna().all():
            return None
        return pd.DataFrame({
            "is_outlier_issue": _has(samples, "outlier"),
            # the rank of the sample's outlier score among all samples, as a quality
            "outlier_score": 1.0 - samples["outlier_percentile"].to_numpy(dtype=float) / 100})
    if name in ("near_duplicate", "exact_duplicate"):
        column = "dup_group" if name == "near_duplicate" else "exact_dup_group"
        if column not in samples.columns:
            return None
        group = samples[column].to_numpy()
        ids = samples["id"].astype(str).to_numpy()
        members: dict[int, list[str]] = {}
        for g, sid in zip(group, ids):
            if g >= 0:
                members.setdefault(int(g), []).append(sid)
        sets = [[o for o in members[int(g)] if o != sid] if g >= 0 else []
                for g, sid in zip(group, ids)]
        return pd.DataFrame({
            f"is_{name}_issue": group >= 0,
            # dqaudit keeps the groups, not each pair's similarity: 0 in a group, 1 outside
            f"{name}_score": np.where(group >= 0, 0.0, 1.0),
            f"{name}_sets": sets})
    column = f"{IMAGE_TYPES[name]}_score"
    if column not in samples.columns or samples[column].isna().all():
        return None
    return pd.DataFrame({f"is_{name}_issue": _has(samples, IMAGE_TYPES[name]),
                         f"{name}_score": 1.0 - samples[column].to_numpy(dtype=float)})


def get_issues(samples: pd.DataFrame, name: str | None) -> pd.DataFrame:
    """Datalab's ``get_issues``: one row per sample (in ``samples``' order), for ``name`` or,
    with None, every type the audit checked."""
    if name is not None and name not in ISSUE_TYPES:
        raise DqauditError(f"unknown issue type {name!r}; valid: {', '.join(ISSUE_TYPES)}")
    parts = [p for n in ([name] if name else ISSUE_TYPES)
             if (p := _one(samples.reset_index(drop=True), n)) is not None]
    if not parts:
        raise DqauditError(f"this audit did not check {name!r} (see --checks)")
    return pd.concat(parts, axis=1)


def get_issue_summary(samples: pd.DataFrame, name: str | None) -> pd.DataFrame:
    """Datalab's ``get_issue_summary``: ``issue_type``, ``num_issues`` and the mean quality
    ``score`` per type, the worst first."""
    rows = []
    for n in ([name] if name else ISSUE_TYPES):
        part = _one(samples.reset_index(drop=True), n)
        if part is not None:
            rows.append({"issue_type": n, "num_issues": int(part[f"is_{n}_issue"].sum()),
                         "score": round(float(part[f"{n}_score"].mean()), 4)})
    if not rows:
        raise DqauditError(f"this audit did not check {name!r} (see --checks)")
    return pd.DataFrame(rows).sort_values("score", kind="stable").reset_index(drop=True)


def report_text(summary: dict, samples: pd.DataFrame, *, top: int) -> str:
    """Datalab's ``report()`` as text: the headline, the issue summary, the top label issues."""
    head = summary["headline"] if "headline" in summary else None
    lines = [f"dqaudit audit of {summary['n_samples']:,} samples, "
             f"{summary['dataset']['n_classes']} classes"]
    if head:
        lines.append(f"noise: {head['text']}")
    lines += ["", get_issue_summary(samples, None).to_string(index=False)]
    try:
        label = get_issues(samples, "label")
    except DqauditError:
        return "\n".join(lines)
    worst = label[label["is_label_issue"]].sort_values("label_score").head(top)
    if len(worst):
        shown = worst.assign(id=samples["id"].to_numpy()[worst.index])[
            ["id", "label_score", "given_label", "predicted_label"]]
        lines += ["", f"top {len(worst)} label issues (lowest label_score):",
                  shown.to_string(index=False)]
    return "\n".join(lines)


class DatalabViews:
    """cleanlab Datalab's shapes as methods of ``Audit`` (its ``samples`` and ``summary``)."""

    def get_issues(self, name: str | None = None) -> pd.DataFrame:
        """cleanlab Datalab's ``get_issues``: per sample ``is_<type>_issue`` and a quality
        ``<type>_score`` (low = bad) for ``name`` (``label``, ``outlier``, ``near_duplicate``,
        ``exact_duplicate``, cleanvision's ``dark``, ``light``, ...) or every type checked;
        rows in ``samples``' order (``conventions.get_issues``)."""
        return get_issues(self.samples, name)

    def get_issue_summary(self, name: str | None = None) -> pd.DataFrame:
        """Datalab's ``get_issue_summary``: ``issue_type``, ``num_issues``, mean ``score``."""
        return get_issue_summary(self.samples, name)

    def report(self, *, top: int = 10) -> None:
        """Datalab's ``report()``: the headline, the issue summary and the ``top`` label issues,
        printed (in a notebook the audit also shows itself as HTML)."""
        print(report_text(self._summary_now(), self.samples, top=top))

    def _repr_html_(self) -> str:
        from html import escape

        s = self._summary_now()
        table = get_issue_summary(self.samples, None).to_html(index=False)
        return (f"<p><b>dqaudit</b>: {s['n_samples']:,} samples, "
                f"{s['dataset']['n_classes']} classes; {escape(s['headline']['text'])}</p>"
                + table)

    def _summary_now(self) -> dict:
        """The summary with its derived blocks (the headline) as they stand now."""
        if "headline" not in self.summary:
            self._derive()
        return self.summary
