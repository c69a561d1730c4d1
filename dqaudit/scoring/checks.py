"""The checks a scan runs, as one registry (cleanlab's issue managers, as data).

Each ``Check`` is one issue name of ``samples.issues``: the switch of ``--checks`` that runs it
(``group``; None: always run when its inputs exist), whether a hit sets ``flagged``, the issues
that suppress it on the same sample (a junk image gets no label-error flag) and the sentence the
report and the docs give for it. ``scoring.table.score_dataset`` computes each check's (N,) mask
and reads the registry for the order of ``issues``, the gating, the suppression and ``flagged``;
the report reads its text from here. A new check is one entry here and one mask there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dqaudit.imaging.image_checks import IMAGE_ISSUE_TEXT, IMAGE_ISSUES, JUNK_ISSUES

# the switches of --checks: label errors (and ambiguity), near and exact duplicates, images
CHECKS = ("labels", "duplicates", "images")


@dataclass(frozen=True)
class Check:
    """One issue type: its name, switch, flag, suppressors and report text."""

    name: str
    group: str | None
    flags: bool
    what: str
    suppressed_by: tuple[str, ...] = ()


REGISTRY: tuple[Check, ...] = (
    Check("label_error", "labels", True,
          "the given label is likely wrong: the confident joint counts it off-diagonal "
          "(out-of-sample posteriors, per-class thresholds)", suppressed_by=JUNK_ISSUES),
    Check("ambiguous", "labels", False,
          "the posterior is nearly tied between two classes (top-two margin below "
          "{ambiguity_margin:g}): one look may not settle it",
          suppressed_by=("label_error", *JUNK_ISSUES)),
    Check("duplicate", "duplicates", True,
          "a near duplicate: cosine similarity of the embeddings at or above "
          "{duplicate_threshold:g}, or the same pixels"),
    Check("exact_duplicate", "duplicates", True, "the same pixels as another image"),
    Check("conflicting_duplicate", "duplicates", True,
          "a duplicate group whose members carry different labels"),
    Check("leak", "duplicates", True, "a duplicate group that spans splits"),
    Check("outlier", None, True,
          "far from its nearest neighbours in the embedding (the dataset's top outlier "
          "scores)"),
    *(Check(k, "images", True, IMAGE_ISSUE_TEXT[k]) for k in IMAGE_ISSUES),
    # an object audit's checks of its boxes (io.objects, imaging.boxes)
    Check("box_outside", None, True,
          "reached outside its image (audited clipped to the image)"),
    Check("duplicate_box", None, True,
          "the same object boxed twice: two boxes of one image overlapping at IoU "
          "≥ {iou:g} (same class or not)"),
    Check("possible_spurious", None, True,
          "no prediction of the detector matches it (IoU ≥ {match_iou:g}): possibly nothing "
          "there"),
)
BY_NAME = {c.name: c for c in REGISTRY}
ISSUE_NAMES = tuple(c.name for c in REGISTRY)
BOX_ISSUES = ("box_outside", "duplicate_box", "possible_spurious")


def issue_masks(masks: dict, *, checked: tuple[str, ...]) -> dict:
    """The registry applied to raw (N,) bool ``masks`` by issue name: a check whose switch is
    not in ``checked`` sets nothing, and a check's hits are cleared where one of its
    ``suppressed_by`` issues (as already gated) holds. Returns the masks in registry order,
    only the names given."""
    out: dict = {}
    for c in REGISTRY:
        if c.name not in masks:
            continue
        m = masks[c.name].astype(bool)
        if c.group is not None and c.group not in checked:
            m = m & False
        for other in c.suppressed_by:
            if other in out:
                m = m & ~out[other]
            elif other in masks:
                m = m & ~masks[other].astype(bool)
        out[c.name] = m
    return out


def flagged(masks: dict):
    """(N,) bool: any issue of ``masks`` (``issue_masks``' output) whose check flags."""
    hits = [m for name, m in masks.items() if BY_NAME[name].flags]
    return np.any(hits, axis=0)
