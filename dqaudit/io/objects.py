"""Detection datasets as object-level audits: every ground-truth box becomes a sample.

A COCO instances JSON, a YOLO folder (images + txt) or a FiftyOne ``Detections`` field is read
into a box table (one row per box); each box that can be audited is cut out of its image with
a margin of context and written once into the crop cache, keyed by the image's bytes, the box
and the cropping settings; the crops are then the ``LabeledImages`` every stage audits, with
the box table riding along as ``LabeledImages.objects``. Boxes that cannot be audited
(degenerate, outside their image, too small to see) are listed in ``skipped`` with the reason.

The box table's columns: ``boxes.BOX_COLUMNS``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from dqaudit.dataset import SPLIT_NAMES, LabeledImages, one_hot
from dqaudit.embed.cache import default_cache_dir
from dqaudit.embed.loader import describe_failure, load_strict, to_rgb
from dqaudit.errors import InputError
from dqaudit.files import IMAGE_EXTENSIONS, file_digest, printable
from dqaudit.imaging.boxes import (
    BOX_COLUMNS,
    DEFAULT_MARGIN,
    DUPLICATE_BOX_IOU,
    MIN_BOX_SIDE,
    box_problems,
    duplicate_boxes,
)

# the samples table's columns of an object audit (Audit.load rebuilds ``objects`` from them):
# where the box lies in its image (pixels: the report and the review queue show it there),
# the box checks (``possible_spurious`` only with a detector's predictions)
OBJECT_COLUMNS = ("image_path", "image_id", "box_x", "box_y", "box_w", "box_h", "image_width",
                  "image_height", "box_outside", "duplicate_box_of", "duplicate_box_iou",
                  "possible_spurious")
# crops are stored no larger than this on their longer side: the loader decodes at twice an
# encoder's input size (448 px for 224), so more would be stored and never seen
MAX_CROP_SIDE = 512
CROP_VERSION = 2  # bump when the cropping itself changes: every crop is cut again


def crop_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where crops are kept: ``<cache_dir or the embedding cache>/crops``."""
    return Path(cache_dir or default_cache_dir()) / "crops"


# --------------------------------------------------------------------------- readers


def is_coco(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".json"


def load_coco(path: Path, *, image_root: str | os.PathLike | None = None
              ) -> tuple[pd.DataFrame, list[str], list[dict], dict]:
    """A COCO instances JSON -> (box table, classes, skipped, source).

    Image files are found under ``image_root`` (default: the JSON's folder, then its
    ``images/`` folder). Crowd regions (``iscrowd``) are not one object each: listed, not
    audited. The split is read from the file name (``instances_val2017.json`` -> val).
    """
    path = path.resolve()
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read it as JSON ({exc}); pass a COCO instances file"
                         ) from None
    if not isinstance(doc, dict) or not all(k in doc for k in ("images", "annotations",
                                                                "categories")):
        raise InputError(f"{path}: not a COCO instances file (it needs 'images', 'annotations' "
                         "and 'categories')")
    names = {}
    for cat in doc["categories"]:
        names[cat.get("id")] = str(cat.get("name", cat.get("id")))
    if len(set(names.values())) < len(names):
        raise InputError(f"{path}: two categories share a name; give every category its own")
    roots = [Path(image_root).expanduser().resolve()] if image_root else [
        path.parent, path.parent / "images"]
    repeated = [i for i, k in Counter(img.get("id") for img in doc["images"]).items() if k > 1]
    if repeated:
        repeated = repeated[0]
        raise InputError(f"{path}: image id {repeated!r} is given to more than one image; "
                         "every image needs its own id (its boxes would be cut from the wrong "
                         "file)")
    images = {}
    for img in doc["images"]:
        rel = str(img.get("file_name", ""))
        found = next((r / rel for r in roots if (r / rel).is_file()), roots[0] / rel)
        images[img.get("id")] = (str(found), rel, img.get("width"), img.get("height"))
    missing = [p for p, *_ in images.values() if not os.path.exists(p)]
    if missing and len(missing) == len(images):
        raise InputError(f"{path}: none of its {len(images)} image files exist (first: "
                         f"{missing[0]}); pass --image-root DIR, the folder its file_name "
                         "entries are relative to")
    split = next((SPLIT_NAMES[t] for t in _tokens(path.stem) if t in SPLIT_NAMES), "")
    rows, skipped = [], []
    for ann in doc["annotations"]:
        image = images.get(ann.get("image_id"))
        if image is None:
            skipped.append({"path": f"annotation {ann.get('id')}",
                            "reason": f"its image_id {ann.get('image_id')!r} is not in images"})
            continue
        if ann.get("category_id") not in names:
            skipped.append({"path": f"{image[1]} annotation {ann.get('id')}",
                            "reason": f"category_id {ann.get('category_id')!r} is not in "
                                      "categories"})
            continue
        if ann.get("iscrowd"):
            skipped.append({"path": f"{image[1]} annotation {ann.get('id')}",
                            "reason": "crowd region (iscrowd), not one object"})
            continue
        bbox = ann.get("bbox") or [np.nan] * 4
        bbox = [float(v) if isinstance(v, (int, float)) else np.nan for v in list(bbox)[:4]]
        bbox += [np.nan] * (4 - len(bbox))
        rows.append((image[0], printable(image[1]), str(ann.get("id")),
                     names[ann["category_id"]], split, *bbox,
                     float(image[2]) if image[2] else np.nan,
                     float(image[3]) if image[3] else np.nan))
    table = pd.DataFrame(rows, columns=list(BOX_COLUMNS))
    if table["object_id"].duplicated().any():
        raise InputError(f"{path}: annotation ids repeat "
                         f"({table['object_id'][table['object_id'].duplicated()].iloc[0]!r}); "
                         "every annotation needs its own id")
    return table, sorted(set(names.values())), skipped, {
        "kind": "coco", "location": str(path), "relative": False}


def _tokens(stem: str) -> list[str]:
    return [t for t in stem.lower().replace("-", "_").split("_") if t] + [
        t.rstrip("0123456789") for t in stem.lower().replace("-", "_").split("_")]


YOLO_YAMLS = ("data.yaml", "dataset.yaml")


def is_yolo(root: Path) -> bool:
    """A YOLO export: ``data.yaml`` / ``classes.txt`` with ``labels/`` (and ``images/``: when
    that is missing, ``load_yolo`` says so)."""
    return root.is_dir() and (root / "labels").is_dir() and (
        any((root / y).is_file() for y in YOLO_YAMLS) or (root / "classes.txt").is_file())


def _yolo_names(root: Path) -> list[str]:
    for name in YOLO_YAMLS:
        if (root / name).is_file():
            try:
                doc = yaml.safe_load((root / name).read_text(encoding="utf-8")) or {}
            except Exception as exc:  # a broken YAML file names itself
                raise InputError(f"{root / name}: cannot read it ({exc})") from None
            names = doc.get("names")
            if isinstance(names, dict):
                return [str(names[k]) for k in sorted(names)]
            if isinstance(names, list):
                return [str(v) for v in names]
            raise InputError(f"{root / name}: no 'names' list of classes")
    return [line.strip() for line in (root / "classes.txt").read_text(
        encoding="utf-8").splitlines() if line.strip()]


def load_yolo(root: Path) -> tuple[pd.DataFrame, list[str], list[dict], dict]:
    """A YOLO folder -> (box table, classes, skipped, source): ``images/[split/]*.jpg``,
    ``labels/[split/]*.txt`` with one ``class cx cy w h`` line per box (0-1 of the image)."""
    root = root.resolve()
    if not (root / "images").is_dir():
        raise InputError(f"{root}: a YOLO export (class names, labels/) keeps its images in "
                         f"{root / 'images'}, which is missing; put them there")
    names = _yolo_names(root)
    if len(names) < 2:
        raise InputError(f"{root}: the class list has {len(names)} name(s); an audit needs two")
    rows, skipped = [], []
    for image in sorted((root / "images").rglob("*")):
        if image.is_dir() or image.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        rel = image.relative_to(root / "images")
        label_file = (root / "labels" / rel).with_suffix(".txt")
        split = SPLIT_NAMES.get(rel.parts[0].lower(), "") if len(rel.parts) > 1 else ""
        if not label_file.is_file():
            continue  # an image with no boxes: nothing to audit
        for k, line in enumerate(label_file.read_text(encoding="utf-8",
                                                      errors="replace").splitlines()):
            parts = line.split()
            if not parts:
                continue
            where = f"{label_file.relative_to(root)} line {k + 1}"
            try:
                cls = int(parts[0])
                cx, cy, w, h = (float(v) for v in parts[1:5])
            except (ValueError, IndexError):
                skipped.append({"path": where, "reason": "not 'class cx cy w h' numbers"})
                continue
            if not 0 <= cls < len(names):
                skipped.append({"path": where, "reason": f"class {cls} is not in the "
                                                         f"{len(names)} names"})
                continue
            rows.append((str(image), printable(str(rel)), printable(f"{rel}#{k + 1}"),
                         names[cls], split, cx - w / 2, cy - h / 2, w, h, np.nan, np.nan))
    if not rows:
        raise InputError(f"{root}: no boxes found in labels/*.txt next to images/")
    return pd.DataFrame(rows, columns=list(BOX_COLUMNS)), sorted(set(names)), skipped, {
        "kind": "yolo", "location": str(root), "relative": True}


# --------------------------------------------------------------------------- crops


def object_dataset(table: pd.DataFrame, *, classes: list[str], source: dict,
                   skipped: list[dict] | None = None, margin: float | None = None,
                   cache_dir: str | os.PathLike | None = None, workers: int = 8,
                   min_side: float = MIN_BOX_SIDE) -> LabeledImages:
    """The box table -> ``LabeledImages`` of crops (``objects``: the per-box columns of
    ``OBJECT_COLUMNS``). Boxes are read in pixels, or 0-1 of their image when
    ``source["relative"]``; image sizes missing from the table are read from the files.
    Boxes under ``min_side`` px on their shorter side are listed in ``skipped``; ``margin``
    None is ``boxes.DEFAULT_MARGIN``."""
    margin = DEFAULT_MARGIN if margin is None else float(margin)
    if margin < 0 or margin > 2:
        raise InputError(f"box margin {margin}: use a fraction of the box side, 0 to 2")
    skipped = list(skipped or [])
    table = table.reset_index(drop=True)
    if table.empty:
        raise InputError(f"{source.get('location')}: no boxes to audit")
    by_image = table.groupby("image_path", sort=True).indices
    crops = crop_cache_dir(cache_dir)
    crops.mkdir(parents=True, exist_ok=True)
    results: dict[int, object] = {}  # per box: its crop's dict, or why it has none

    def one(item):
        path, idx = item
        return idx, _crop_image(path, table.loc[idx], margin=margin, out=crops,
                                relative=bool(source.get("relative")), min_side=min_side)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for idx, res in pool.map(one, by_image.items()):
            for i, r in zip(idx, res):
                results[int(i)] = r
    rows, reasons = [], []
    for i in range(len(table)):
        res = results[i]
        if isinstance(res, str):
            reasons.append(res)
            rows.append(None)
        else:
            reasons.append("")
            rows.append(res)
    # pixels to 1/100: clipping arithmetic leaves 55.60000000000001 behind
    box = np.round(np.array([r["box"] if r else [np.nan] * 4 for r in rows], dtype=np.float64),
                   2)
    image_ids = table["image_id"].to_numpy(dtype=object)
    ok = np.array([r is not None for r in rows])
    # a box left out overlaps nothing: its own image id, one no real image can have
    partner, overlap = duplicate_boxes(np.where(ok[:, None], box, 0.0), np.where(
        ok, image_ids, np.array([f"\x00left out {i}" for i in range(len(ok))], dtype=object)))
    partner_id = np.array([table["object_id"].iat[j] if j >= 0 else "" for j in partner],
                          dtype=object)
    for i in np.flatnonzero(~ok):
        skipped.append({"path": f"{table['image_id'].iat[i]} box {table['object_id'].iat[i]}",
                        "reason": reasons[i]})
    keep = np.flatnonzero(ok)
    if len(keep) == 0:
        raise InputError(f"{source.get('location')}: none of its {len(table)} boxes can be "
                         f"audited (the first: {reasons[0]})")
    # categories no audited box has (COCO files often list unused ones) are not classes here
    used = set(table["label"].iloc[keep])
    classes = [c for c in classes if c in used]
    index = {c: j for j, c in enumerate(classes)}
    labels = np.array([index[v] for v in table["label"].iloc[keep]], dtype=np.int64)
    objects = pd.DataFrame({
        "image_path": [printable(p) for p in table["image_path"].iloc[keep]],
        "image_id": table["image_id"].iloc[keep].to_numpy(dtype=object),
        "box_x": box[keep, 0], "box_y": box[keep, 1], "box_w": box[keep, 2],
        "box_h": box[keep, 3],
        "image_width": [rows[i]["size"][0] for i in keep],
        "image_height": [rows[i]["size"][1] for i in keep],
        "box_outside": [bool(rows[i]["outside"]) for i in keep],
        "duplicate_box_of": partner_id[keep],
        "duplicate_box_iou": overlap[keep],
    })
    if "possible_spurious" in table.columns:  # a detector's predictions were matched
        objects["possible_spurious"] = table["possible_spurious"].iloc[keep].to_numpy(bool)
    return LabeledImages(
        paths=[rows[i]["crop"] for i in keep],
        labels=labels, classes=list(classes),
        label_counts=one_hot(labels, len(classes)),
        splits=table["split"].iloc[keep].to_numpy(dtype=object),
        ids=table["object_id"].iloc[keep].astype(str).tolist(),
        source={**source, "unit": "object", "box_margin": margin, "min_box_side": min_side,
                "duplicate_box_iou": DUPLICATE_BOX_IOU,
                "n_boxes": int(len(table)), "n_images": int(len(by_image))},
        skipped=skipped, objects=objects)


def _crop_image(path: str, rows: pd.DataFrame, *, margin: float, out: Path, relative: bool,
                min_side: float):
    """Per box of one image, a dict (crop path, clipped box, image size, outside flag) or the
    reason it cannot be audited."""
    n = len(rows)
    try:
        digest = file_digest(path)
        img = Image.open(path)
        size = img.size
    except Exception as exc:  # an unreadable image: each of its boxes says so
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else \
            describe_failure(exc)
        return [f"its image cannot be read: {text}"] * n
    declared = rows[["image_width", "image_height"]].to_numpy(dtype=np.float64)
    if np.isfinite(declared).all() and (np.abs(declared - size).max() > 0.5):
        img.close()
        return ["the image size in the annotations is not the file's: its boxes would be cut "
                "in the wrong place"] * n
    b = rows[["x", "y", "w", "h"]].to_numpy(dtype=np.float64)
    if relative:
        b = b * np.array([size[0], size[1], size[0], size[1]], dtype=np.float64)
    clipped, reasons, outside = box_problems(b, np.tile(size, (n, 1)), min_side=min_side)
    loaded = None
    out_rows = []
    for k in range(n):
        if reasons[k]:
            out_rows.append(reasons[k])
            continue
        x, y, w, h = clipped[k]
        region = context_region(x, y, w, h, margin=margin, size=size)
        key = hashlib.blake2b(
            f"{digest}|{x:.2f},{y:.2f},{w:.2f},{h:.2f}|{margin:g}|{MAX_CROP_SIDE}|"
            f"{CROP_VERSION}".encode(), digest_size=16).hexdigest()
        crop_path = out / key[:2] / f"{key}.png"
        if not crop_path.exists():
            if loaded is None:
                try:
                    load_strict(img)
                    loaded = to_rgb(img)
                except Exception as exc:
                    img.close()
                    return [f"its image cannot be read: {describe_failure(exc)}"] * n
            crop = loaded.crop(region)
            if max(crop.size) > MAX_CROP_SIDE:
                crop.thumbnail((MAX_CROP_SIDE, MAX_CROP_SIDE), Image.Resampling.BICUBIC)
            crop_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = crop_path.with_name(f".{key}.{os.getpid()}.tmp.png")
            crop.save(tmp, format="PNG")
            os.replace(tmp, crop_path)
        out_rows.append({"crop": str(crop_path), "box": clipped[k], "size": size,
                         "outside": bool(outside[k])})
    img.close()
    return out_rows


def context_region(x: float, y: float, w: float, h: float, *, margin: float, size) -> tuple:
    """The crop around a box, in whole pixels (x0, y0, x1, y1): ``margin`` of its side on each
    side, then widened to a square (an encoder centre-crops a long box and would cut its ends
    off), clipped to the image."""
    x0, y0, x1, y1 = x - margin * w, y - margin * h, x + w * (1 + margin), y + h * (1 + margin)
    side = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    x0, x1 = cx - side / 2, cx + side / 2
    y0, y1 = cy - side / 2, cy + side / 2
    # whole pixels that hold the box: outwards, so the crop never cuts the box's edge
    return (max(0, math.floor(x0)), max(0, math.floor(y0)), min(int(size[0]), math.ceil(x1)),
            min(int(size[1]), math.ceil(y1)))
