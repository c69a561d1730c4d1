"""Box maths for object-level audits: overlap, box problems, duplicate boxes, and matching a
detector's predictions to the ground truth.

Boxes are (N, 4) float arrays ``x, y, w, h`` in pixels, (x, y) the top-left corner (COCO's
convention); every function here is a function of arrays.
"""

from __future__ import annotations

import numpy as np

# a box table, one row per ground-truth box (dqaudit.io.objects reads COCO and YOLO into it,
# dqaudit.io.fiftyone_io a Detections field): ``object_id`` is the sample id (unique in the
# dataset); ``x, y, w, h`` pixels from the top-left corner (0-1 of the image when the source
# says ``relative``); ``image_width``, ``image_height`` NaN when the file has to say
BOX_COLUMNS = ("image_path", "image_id", "object_id", "label", "split", "x", "y", "w", "h",
               "image_width", "image_height")

# context around a box, as a fraction of its side on each side; chosen by
# benchmarks/detect_boxes.py (RESULTS.md "Object-level audit"): on pasted CIFAR-10N scenes
# (two seeds) 0 kept box-level F1 within 0.01 of image-level, 0.1 lost 0.02-0.07 and 0.25
# 0.03-0.09. CIFAR images carry their own context, so the benchmark favours no margin; a crop
# is still widened to a square (context around a long box)
DEFAULT_MARGIN = 0.0
# below this many pixels on its shorter side a box is listed, not audited. Measured with
# benchmarks/detect_boxes.py --sizes (RESULTS.md): CIFAR-10N objects pasted at one side for all,
# random1 labels (17.6% wrong): at 16 px half the flags are right (precision 0.53, 1.5x as many
# flagged as wrong); at 8 px a third (0.34, 2.5x), at 4 px a quarter (0.27, 3.3x). Below 16 px
# the boxes would swamp the review queue with false flags and inflate the dataset's estimated
# share of wrong labels; at 24 px and up the flags are nearly as good as on whole images
MIN_BOX_SIDE = 16.0
# two ground-truth boxes of one image overlapping above this IoU are the same object boxed
# twice. Redrawn boxes of one object agree to IoU 0.88 on average (Papadopoulos et al. 2017,
# "Extreme clicking", on PASCAL VOC), and COCO's own evaluation already counts 0.5 as "the
# same object"; 0.7, the usual NMS threshold, keeps two distinct objects that merely overlap
# (people in a crowd) apart. A chosen value, not one measured on dqaudit's data (RESULTS.md)
DUPLICATE_BOX_IOU = 0.7
# FiftyOne Brain's compute_mistakenness for detections: a prediction matches a ground truth
# box at IoU >= 0.5; an unmatched prediction above confidence 0.95 is a possible missing box
MATCH_IOU = 0.5
MISSING_CONFIDENCE = 0.95


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) intersection over union of boxes ``a`` (N, 4) and ``b`` (M, 4), xywh."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ax1, ay1 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx1, by1 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax1[:, None], bx1[None]) - np.maximum(a[:, None, 0], b[None, :, 0]),
                 0, None)
    ih = np.clip(np.minimum(ay1[:, None], by1[None]) - np.maximum(a[:, None, 1], b[None, :, 1]),
                 0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def box_problems(boxes: np.ndarray, sizes: np.ndarray, *, min_side: float = MIN_BOX_SIDE
                 ) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Check boxes (N, 4) against their images' sizes (N, 2: width, height).

    Returns the (N, 4) boxes clipped to their image, per box a reason it cannot be audited
    ("" when it can: degenerate, wholly outside its image, or under ``min_side`` px on its
    shorter side once clipped), and (N,) bool: the box reached outside its image (and was
    clipped; an annotation tool's rounding of under a pixel is not counted).
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    size = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    x0 = np.clip(b[:, 0], 0, size[:, 0])
    y0 = np.clip(b[:, 1], 0, size[:, 1])
    x1 = np.clip(b[:, 0] + b[:, 2], 0, size[:, 0])
    y1 = np.clip(b[:, 1] + b[:, 3], 0, size[:, 1])
    clipped = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)
    finite = np.isfinite(b).all(axis=1)
    with np.errstate(invalid="ignore"):
        outside = finite & ((b[:, 0] < -1) | (b[:, 1] < -1) | (b[:, 0] + b[:, 2] > size[:, 0] + 1)
                            | (b[:, 1] + b[:, 3] > size[:, 1] + 1))
    reasons = []
    for i in range(len(b)):
        w, h = b[i, 2], b[i, 3]
        if not finite[i]:
            reasons.append("degenerate box (a coordinate is not a number)")
        elif w <= 0 or h <= 0:
            reasons.append("degenerate box (no width or no height)")
        elif clipped[i, 2] <= 0 or clipped[i, 3] <= 0:
            reasons.append("box wholly outside its image")
        elif min(clipped[i, 2], clipped[i, 3]) < min_side:
            reasons.append(f"box under {min_side:g} px on its shorter side: too small for "
                           "the encoder to see")
        else:
            reasons.append("")
    return clipped, reasons, outside


def duplicate_boxes(boxes: np.ndarray, images: np.ndarray, *,
                    threshold: float = DUPLICATE_BOX_IOU) -> tuple[np.ndarray, np.ndarray]:
    """For each box (N, 4) the index of the other box of the same image (``images`` (N,)
    any hashable ids) it overlaps most, and that IoU; -1 and 0.0 when no box of its image
    overlaps it at ``threshold`` or more. Same class or not: a box drawn twice with two
    classes is the worse case."""
    n = len(boxes)
    partner = np.full(n, -1, dtype=np.int64)
    best = np.zeros(n)
    images = np.asarray(images, dtype=object)
    order = np.argsort(images.astype(str), kind="stable")
    bounds = np.flatnonzero(np.r_[True, images[order][1:] != images[order][:-1], True])
    for s, e in zip(bounds[:-1], bounds[1:]):
        idx = order[s:e]
        if len(idx) < 2:
            continue
        m = iou(boxes[idx], boxes[idx])
        np.fill_diagonal(m, 0.0)
        j = m.argmax(axis=1)
        top = m[np.arange(len(idx)), j]
        hit = top >= threshold
        partner[idx[hit]] = idx[j[hit]]
        best[idx[hit]] = top[hit]
    return partner, best


def match_predictions(gt: np.ndarray, gt_labels: np.ndarray, pred: np.ndarray,
                      pred_labels: np.ndarray, confidence: np.ndarray, *,
                      iou_threshold: float = MATCH_IOU, classwise: bool = False
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching of one image's predictions to its ground truth, as COCO's and
    FiftyOne's detection evaluation do: predictions in order of confidence, each taking the
    unmatched ground-truth box (of its class when ``classwise``) with the highest IoU at
    ``iou_threshold`` or more. Class-agnostic by default, as ``compute_mistakenness`` matches:
    a box with the wrong class is the label audit's to find, not a missing or spurious box.

    Returns (G,) bool: the ground-truth box was matched, and (P,) bool: the prediction was.
    A ground-truth box no prediction matches is a possible spurious box; a prediction above
    ``MISSING_CONFIDENCE`` that matches nothing, a possible missing one (FiftyOne Brain's
    ``compute_mistakenness`` conventions).
    """
    g_hit = np.zeros(len(gt), dtype=bool)
    p_hit = np.zeros(len(pred), dtype=bool)
    if not len(gt) or not len(pred):
        return g_hit, p_hit
    m = iou(pred, gt)
    if classwise:
        m = np.where(np.asarray(pred_labels)[:, None] == np.asarray(gt_labels)[None], m, 0.0)
    for p in np.argsort(-np.asarray(confidence, dtype=np.float64), kind="stable"):
        row = np.where(g_hit, -1.0, m[p])
        g = int(row.argmax())
        if row[g] >= iou_threshold:
            g_hit[g] = p_hit[p] = True
    return g_hit, p_hit
