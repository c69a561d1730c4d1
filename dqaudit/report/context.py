"""Build the report context: summary.json's data plus the top rows of the samples table,
thumbnails and figures. Templates only place and format these values; they compute nothing."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import pandas as pd
from PIL import Image, ImageDraw

from dqaudit.embed.loader import open_rgb
from dqaudit.estimates.headline import headline
from dqaudit.files import is_dicom_file, original_path
from dqaudit.imaging.dicom import DicomRead
from dqaudit.imaging.dicom_header import header_record
from dqaudit.imaging.image_checks import IMAGE_ISSUES, THRESHOLDS
from dqaudit.io.objects import context_region
from dqaudit.io.outputs import dicom_read, review_order_column
from dqaudit.report import figures
from dqaudit.scoring.checks import BOX_ISSUES, BY_NAME

THUMB = 96  # px: 32 px images are upscaled 3x with nearest neighbour so they stay crisp
BOX_COLOUR = (255, 0, 170)  # an object audit's box in its image: a colour photos rarely hold
BOX_CONTEXT = 0.5  # a box is shown with half its side of its image around it
SAMPLE_BOX = ("box_x", "box_y", "box_w", "box_h")  # an object audit's box, px in its image


DEFAULT_READ = DicomRead.of({})


def thumbnail(path: str, dicom: DicomRead = DEFAULT_READ) -> str | None:
    """A PNG data URI of the image, or None when it cannot be read."""
    img = _open_rgb(path, dicom)
    return None if img is None else _data_uri(img)


def box_thumbnail(image_path: str, box, dicom: DicomRead = DEFAULT_READ) -> str | None:
    """A PNG data URI of a box (x, y, w, h px) in its image: the box with ``BOX_CONTEXT`` of
    its side around it, squared within the image, the box drawn; None when unreadable."""
    img = _open_rgb(image_path, dicom)
    if img is None or not all(pd.notna(v) for v in box):
        return None
    x, y, w, h = (float(v) for v in box)
    x0, y0, x1, y1 = context_region(x, y, w, h, margin=BOX_CONTEXT, size=img.size)
    view = img.crop((x0, y0, x1, y1))
    fw, fh = max(x1 - x0, 1), max(y1 - y0, 1)
    return _data_uri(view, ((x - x0) / fw, (y - y0) / fh, (x + w - x0) / fw, (y + h - y0) / fh))


def row_thumbnail(rec: dict, dicom: DicomRead = DEFAULT_READ) -> str | None:
    """The thumbnail of a samples-table row: its image, or an object audit's box in its image."""
    if "image_path" in rec and "box_x" in rec:
        return box_thumbnail(rec["image_path"], [rec[c] for c in SAMPLE_BOX], dicom)
    return thumbnail(rec["path"], dicom)


@dataclass
class Thumbnails:
    """The report's thumbnails: none when redacted; a DICOM image that may carry burned-in
    patient text (``dicom.burned_in``) withheld unless ``burned_in`` allows it."""

    dicom: DicomRead = DEFAULT_READ
    burned_in: bool = False
    redacted: bool = False

    def of(self, rec: dict) -> tuple[str | None, bool]:
        """(data URI or None, whether it was withheld for burned-in text)."""
        if self.redacted:
            return None, False
        path = original_path(str(rec.get("image_path") or rec["path"]))
        if not self.burned_in and is_dicom_file(path):
            record = header_record(path)
            if record is None or record["burned_in"]:
                return None, True
        return row_thumbnail(rec, self.dicom), False


def _open_rgb(path: str, dicom: DicomRead):
    try:
        return open_rgb(original_path(path), dicom)
    except Exception:  # a moved or deleted file shows as a grey box, not a crash
        return None


def _data_uri(img, box: tuple | None = None) -> str:
    """``img`` scaled to thumbnail size as a PNG data URI; ``box`` (x0, y0, x1, y1 as
    fractions of it) drawn on it."""
    w, h = img.size
    if max(w, h) <= THUMB:
        factor = max(1, THUMB // max(w, h))
        img = img.resize((w * factor, h * factor), Image.Resampling.NEAREST)
    else:
        img.thumbnail((THUMB * 4 // 3, THUMB * 4 // 3), Image.Resampling.BICUBIC)
    if box is not None:
        w, h = img.size
        ImageDraw.Draw(img).rectangle(
            [box[0] * w, box[1] * h, box[2] * w - 1, box[3] * h - 1], outline=BOX_COLOUR,
            width=max(1, round(min(w, h) / 48)))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _rows(df: pd.DataFrame, columns: list[str], redact, thumbs: Thumbnails) -> list[dict]:
    out = []
    for row_number, rec in zip(df.index, df.to_dict("records")):
        row = {c: rec[c] for c in columns if c in rec}
        row["issues"] = list(rec.get("issues", []))
        row["thumb"], row["withheld"] = thumbs.of(rec)
        if "paths" in redact:  # ids are often file names: the row of samples.csv instead
            row["id"] = row["path"] = f"samples.csv row {int(row_number) + 1}"
            row.pop("image_id", None)
        out.append(row)
    return out


def _location(source: dict, redact) -> str:
    """Where the dataset was read from; with ``paths`` redacted, only its last name."""
    location = str((source or {}).get("location", ""))
    return location.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] if "paths" in redact \
        else location


ROW_COLUMNS = ["id", "path", "label", "split", "suggested_label", "suggested_labels",
               "missing_labels", "extra_labels", "suggested_confidence",
               "noisiness", "ambiguity", "priority", "review_score", "importance",
               "outlier_score", "outlier_percentile", "dup_group", "label_error_probability",
               "given_label_disagreement", "image_id"]


def build_context(summary: dict, samples: pd.DataFrame, *, title: str | None, top_n: int,
                  page_size: str, samples_csv: str = "", max_duplicate_groups: int = 12,
                  redact: tuple[str, ...] = (), burned_in_thumbnails: bool = False) -> dict:
    """Everything the templates show."""
    thumbs = Thumbnails(dicom=dicom_read(summary),
                        burned_in=burned_in_thumbnails, redacted="thumbnails" in redact)
    if "dropped" in samples.columns:  # samples a reviewer marked as junk are out of the audit
        samples = samples[~samples["dropped"].astype(bool)]
    issues = samples["issues"].map(list)
    is_error = issues.map(lambda v: "label_error" in v).to_numpy()
    suspects = samples[is_error].sort_values(review_order_column(samples), ascending=False,
                                             kind="stable")
    ambiguous = samples[issues.map(lambda v: "ambiguous" in v).to_numpy()].sort_values(
        "ambiguity", ascending=False, kind="stable")
    outliers = samples[issues.map(lambda v: "outlier" in v).to_numpy()].sort_values(
        "outlier_score", ascending=False, kind="stable")

    image_issues = []
    for issue in IMAGE_ISSUES:
        hit = samples[issues.map(lambda v, k=issue: k in v).to_numpy()]
        if len(hit):
            hit = hit.sort_values(f"{issue}_score", ascending=False, kind="stable")
            image_issues.append({"issue": issue, "n": int(len(hit)),
                                 "threshold": THRESHOLDS[issue], "what": BY_NAME[issue].what,
                                 "rows": _rows(hit.head(min(top_n, 5)),
                                               ROW_COLUMNS + [f"{issue}_score"], redact,
                                               thumbs)})

    groups = []
    dups = samples[samples["dup_group"] >= 0]
    # groups with a problem first (conflicting labels, leaks), then by size
    keyed = []
    for gid, members in dups.groupby("dup_group", sort=True):
        member_issues = set().union(*members["issues"].map(set))
        keyed.append(("conflicting_duplicate" not in member_issues, "leak" not in member_issues,
                      -len(members), gid, members))
    for *_, gid, members in sorted(keyed, key=lambda k: k[:4])[:max_duplicate_groups]:
        groups.append({"group": int(gid),
                       "members": _rows(members.head(6), ROW_COLUMNS, redact, thumbs),
                       "conflicting": bool(members["label"].nunique() > 1),
                       "leak": bool(members["split"][members["split"] != ""].nunique() > 1)})

    ds = summary["dataset"]
    objects = ds["source"].get("unit") == "object"
    box_checks = _box_checks(ds["source"], samples, top_n=top_n, redact=redact, thumbs=thumbs) \
        if objects else []
    class_counts = summary["class_counts"]
    flagged_per_class = [summary["per_class_noise"][c]["flagged_label_errors"]
                         for c in ds["classes"]]
    figs = {
        "class_distribution": figures.class_distribution(
            ds["classes"], [class_counts[c] for c in ds["classes"]], flagged_per_class),
        # a label set's noisiness and ambiguity are probabilities (scoring.multilabel)
        "priority": figures.priority_histogram(
            samples["priority"].to_numpy(), is_error.astype(bool),
            unit="probabilities" if summary.get("multi_label") else "nats"),
        # label sets have no class-by-class transitions (summary["multi_label"] says why)
        "transition": figures.transition_heatmap(
            ds["classes"], summary["estimated_transition_matrix"]["matrix"])
        if summary.get("estimated_transition_matrix") else "",
        "relabel_plan": figures.relabel_plan(summary["relabel_plan"]),
    }
    if (summary.get("clr") or {}).get("curves"):
        figs["clr"] = figures.clr_curves(summary["clr"]["curves"])
    if summary.get("evaluation"):
        figs["evaluation"] = figures.evaluation(summary["evaluation"]["models"])
    # sections are numbered in order; the optional ones shift those after them
    plan_number = 5 if summary.get("clr") or summary.get("verified") else 4
    evaluation_number = plan_number + 1 if summary.get("evaluation") else None
    return {
        "s": summary,
        "head": headline(summary),
        "title": title or f"Dataset audit: {summary['dataset_name']}",
        "top_n": top_n,
        "suspects": _rows(suspects.head(top_n), ROW_COLUMNS, redact, thumbs),
        "n_suspects": int(len(suspects)),
        "ambiguous": _rows(ambiguous.head(top_n), ROW_COLUMNS, redact, thumbs),
        "n_ambiguous": int(len(ambiguous)),
        "outliers": _rows(outliers.head(top_n), ROW_COLUMNS, redact, thumbs),
        "n_outliers": int(len(outliers)),
        "duplicate_groups": groups,
        "image_issues": image_issues,
        "image_checks_ran": "blank_score" in samples.columns and bool(
            samples["blank_score"].notna().any()),
        "figures": figs,
        # the image checks' findings for the cover, in the checks' order, nonzero only
        "image_findings": [(name, summary["issue_counts"][name]) for name in IMAGE_ISSUES
                           if summary.get("issue_counts", {}).get(name)],
        "evaluation_number": evaluation_number,
        "method_number": (evaluation_number or plan_number) + 1,
        "samples_csv": "samples.csv" if "paths" in redact else samples_csv,
        "location": _location(ds["source"], redact),
        "command": "(redacted)" if "paths" in redact and summary.get("command") else
        summary.get("command"),
        "redacted": list(redact),
        "page_size": page_size,
        "skipped_examples": [] if "paths" in redact else summary.get("skipped_examples", []),
        "has_splits": bool(ds["splits"]),
        "objects": objects,
        "unit": "boxes" if objects else "samples",
        "box_checks": box_checks,
        "predictions": ds["source"].get("predictions"),
        "dicom": summary.get("dicom"),
        "burned_in_shown": burned_in_thumbnails,
    }




def _box_checks(source: dict, samples: pd.DataFrame, *, top_n: int, redact,
                thumbs: Thumbnails) -> list[dict]:
    """An object audit's box checks (``source``: the dataset's source block): per check, how
    many boxes and the first few."""
    out = []
    predictions = source.get("predictions") or {}
    issues = samples["issues"].map(list)
    for issue in BOX_ISSUES:
        text = BY_NAME[issue].what
        if issue == "possible_spurious" and not predictions:
            continue
        hit = samples[issues.map(lambda v, k=issue: k in v).to_numpy()]
        out.append({"issue": issue, "n": int(len(hit)),
                    "what": text.format(iou=source.get("duplicate_box_iou", 0),
                                        match_iou=predictions.get("match_iou", 0)),
                    "rows": _rows(hit.head(min(top_n, 6)), ROW_COLUMNS, redact, thumbs)})
    return out
