"""A small synthetic dataset with known label truth, generated here (no third-party data).

Six classes of shapes drawn with random colour, size, rotation, position and a noisy
background. ``manifest.csv`` lists every image with a ``label`` in which a known fraction is
deliberately corrupted (a uniformly random other class), the ``true_label`` beside it, a
``split`` and whether the label was corrupted. A few images are saved twice (duplicates),
one of them with a conflicting label and one across splits, and a few are broken on purpose
(``image_issue``: blank, dark, blurry, or an exact copy of another file), so every part of an
audit has something to find.
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("circle", "cross", "ring", "square", "star", "triangle")
SIZE = 64


def _polygon(cx: float, cy: float, r: float, n: int, rot: float, inner: float | None = None):
    pts = []
    steps = n * 2 if inner else n
    for k in range(steps):
        rad = (inner if inner and k % 2 else r)
        a = rot + 2 * math.pi * k / steps
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def draw_shape(kind: str, rng: np.random.Generator) -> Image.Image:
    """One SIZE x SIZE RGB image of ``kind``."""
    bg = rng.integers(0, 256, 3)
    noise = rng.normal(0, 18, (SIZE, SIZE, 3))
    base = np.clip(bg[None, None, :] + noise, 0, 255).astype(np.uint8)
    img = Image.fromarray(base, "RGB")
    d = ImageDraw.Draw(img)
    # a foreground colour far from the background so the shape is always visible
    fg = (bg + rng.integers(90, 166, 3)) % 256
    fg = tuple(int(v) for v in fg)
    r = rng.uniform(12, 24)
    cx, cy = rng.uniform(r + 2, SIZE - r - 2, 2)
    rot = rng.uniform(0, 2 * math.pi)
    width = max(3, int(r / 3))
    if kind == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
    elif kind == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fg, width=width)
    elif kind == "square":
        d.polygon(_polygon(cx, cy, r * 1.2, 4, rot), fill=fg)
    elif kind == "triangle":
        d.polygon(_polygon(cx, cy, r * 1.2, 3, rot), fill=fg)
    elif kind == "star":
        d.polygon(_polygon(cx, cy, r * 1.25, 5, rot, inner=r * 0.5), fill=fg)
    elif kind == "cross":
        for a in (rot, rot + math.pi / 2):
            dx, dy = r * math.cos(a), r * math.sin(a)
            d.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=fg, width=width + 2)
    else:
        raise ValueError(f"unknown shape {kind!r}")
    return img.filter(ImageFilter.GaussianBlur(0.6))


def _jpeg_bytes(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def generate(out_dir: str | os.PathLike, *, per_class: int = 50, noise_rate: float = 0.1,
             test_fraction: float = 0.2, n_duplicates: int = 4, broken: bool = True,
             seed: int = 0) -> dict:
    """Write ``images/*.jpg``, ``manifest.csv`` and two simulated models' test-split predictions
    (``predictions/careful.csv``, ``predictions/copycat.csv``) into ``out_dir``; return a short
    summary."""
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for kind in CLASSES:
        for k in range(per_class):
            name = f"images/{kind}_{k:03d}.jpg"
            (out / name).write_bytes(_jpeg_bytes(draw_shape(kind, rng), 90))
            rows.append({"path": name, "true_label": kind})
    df = pd.DataFrame(rows)
    n = len(df)
    df["split"] = np.where(rng.random(n) < test_fraction, "test", "train")
    labels = df["true_label"].to_numpy(dtype=object).copy()
    n_corrupt = int(round(noise_rate * n))
    flip = rng.choice(n, size=n_corrupt, replace=False)
    for i in flip:
        others = [c for c in CLASSES if c != labels[i]]
        labels[i] = others[rng.integers(len(others))]
    df["label"] = labels

    # duplicates: the same pixels saved again as PNG (another file, another format); the first
    # carries a conflicting label, the second sits in the other split (a train/test leak)
    dup_rows = []
    src = rng.choice(np.setdiff1d(np.arange(n), flip), size=n_duplicates, replace=False)
    for j, i in enumerate(src):
        name = f"images/dup_{j:02d}_of_{Path(df.loc[i, 'path']).stem}.png"
        with Image.open(out / df.loc[i, "path"]) as im:
            im.convert("RGB").save(out / name, format="PNG")
        true = df.loc[i, "true_label"]
        label = true
        split = df.loc[i, "split"]
        if j == 0:
            label = next(c for c in CLASSES if c != true)
        if j == 1:
            split = "test" if split == "train" else "train"
        dup_rows.append({"path": name, "true_label": true, "split": split, "label": label})
    df["image_issue"] = ""
    df.loc[src, "image_issue"] = "exact_duplicate"
    for row in dup_rows:
        row["image_issue"] = "exact_duplicate"
    broken_rows = _broken_images(out, df, np.setdiff1d(np.arange(n), np.r_[flip, src]), rng) \
        if broken else []
    df = pd.concat([df, pd.DataFrame(dup_rows), pd.DataFrame(broken_rows)], ignore_index=True)
    df["corrupted"] = df["label"] != df["true_label"]
    df = df[["path", "label", "true_label", "split", "corrupted", "image_issue"]]
    df.to_csv(out / "manifest.csv", index=False)
    _model_predictions(out, df, seed=seed)
    return {"n_images": len(df), "classes": list(CLASSES),
            "n_corrupted": int(df["corrupted"].sum()), "n_duplicates": n_duplicates,
            "n_broken": len(broken_rows)}


# two simulated models' predictions on the test split, for `dqaudit evaluate`: careful is
# right on 95% of the images; copycat learned the annotators' mistakes (it repeats the given
# label on 92%), so it reads better on the given labels while it is right less often
MODELS = {"careful": 0.95, "copycat": 0.92}


def _model_predictions(out: Path, df: pd.DataFrame, *, seed: int) -> None:
    rng = np.random.default_rng([seed, 1])  # apart from the images' stream
    test = df[df["split"] == "test"]
    (out / "predictions").mkdir(exist_ok=True)
    for name, share in MODELS.items():
        target = test["true_label"] if name == "careful" else test["label"]
        keep = rng.random(len(test)) < share
        other = [rng.choice([c for c in CLASSES if c != t]) for t in target]
        pd.DataFrame({"path": test["path"], "predicted": np.where(keep, target, other)}
                     ).to_csv(out / "predictions" / f"{name}.csv", index=False)


def _broken_images(out: Path, df: pd.DataFrame, pool: np.ndarray, rng) -> list[dict]:
    """Images broken on purpose, with their truth in ``image_issue``: two blank (black, white),
    two dark (x0.12 brightness), two blurry (Gaussian blur, radius 3) and one exact copy of
    another file. Their label is their source's (blank: a random class) and counts as right."""
    rows = []
    picks = rng.choice(pool, size=5, replace=False)
    for j, colour in enumerate(((0, 0, 0), (255, 255, 255))):
        label = CLASSES[int(rng.integers(len(CLASSES)))]
        name = f"images/broken_blank_{j}.png"
        Image.new("RGB", (SIZE, SIZE), colour).save(out / name)
        rows.append({"path": name, "label": label, "true_label": label, "split": "train",
                     "image_issue": "blank"})
    for j, (kind, i) in enumerate([("dark", picks[0]), ("dark", picks[1]),
                                   ("blurry", picks[2]), ("blurry", picks[3])]):
        with Image.open(out / df.loc[i, "path"]) as im:
            im = im.convert("RGB")
            im = im.point(lambda v: int(v * 0.12)) if kind == "dark" else \
                im.filter(ImageFilter.GaussianBlur(3))
        name = f"images/broken_{kind}_{j}_of_{Path(df.loc[i, 'path']).stem}.jpg"
        (out / name).write_bytes(_jpeg_bytes(im, 90))
        rows.append({"path": name, "label": df.loc[i, "label"],
                     "true_label": df.loc[i, "true_label"], "split": df.loc[i, "split"],
                     "image_issue": kind})
    i = picks[4]
    name = f"images/broken_copy_of_{Path(df.loc[i, 'path']).stem}.jpg"
    (out / name).write_bytes((out / df.loc[i, "path"]).read_bytes())
    df.loc[i, "image_issue"] = "exact_duplicate"
    rows.append({"path": name, "label": df.loc[i, "label"], "true_label": df.loc[i, "true_label"],
                 "split": df.loc[i, "split"], "image_issue": "exact_duplicate"})
    return rows


SCENE_SIZE = 256


def _draw_object(d: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float, rot: float,
                 fg: tuple) -> None:
    width = max(3, int(r / 3))
    if kind == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
    elif kind == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fg, width=width)
    elif kind in ("square", "triangle", "star"):
        n, scale, inner = {"square": (4, 1.2, None), "triangle": (3, 1.2, None),
                           "star": (5, 1.25, r * 0.5)}[kind]
        d.polygon(_polygon(cx, cy, r * scale, n, rot, inner=inner), fill=fg)
    else:  # cross
        for a in (rot, rot + math.pi / 2):
            dx, dy = r * math.cos(a), r * math.sin(a)
            d.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=fg, width=width + 2)


def generate_scenes(out_dir: str | os.PathLike, *, n_images: int = 60, objects: tuple = (3, 6),
                    noise_rate: float = 0.1, seed: int = 0) -> dict:
    """A detection dataset of shapes with known box-label truth: ``images/*.jpg`` of
    SCENE_SIZE px with ``objects`` (min, max) shapes each, boxes at their places, and
    ``scenes.json`` (COCO instances) in which ``noise_rate`` of the box labels are corrupted
    (a random other class). Each annotation also carries ``true_label`` and ``corrupted``.
    Three boxes are wrong on purpose for the box checks: one drawn twice (the copy's label
    is right), one reaching past the image's edge, one of 5 px (``box_issue`` says which)."""
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for k in range(n_images):
        bg = rng.integers(0, 256, 3)
        noise = rng.normal(0, 18, (SCENE_SIZE, SCENE_SIZE, 3))
        img = Image.fromarray(np.clip(bg[None, None, :] + noise, 0, 255).astype(np.uint8), "RGB")
        d = ImageDraw.Draw(img)
        placed: list[tuple[float, float, float]] = []
        for _ in range(int(rng.integers(objects[0], objects[1] + 1))):
            for _attempt in range(30):  # objects may touch, not hide each other
                r = rng.uniform(14, 34)
                cx, cy = rng.uniform(r * 1.3, SCENE_SIZE - r * 1.3, 2)
                if all(math.hypot(cx - px, cy - py) > 0.9 * (r + pr) for px, py, pr in placed):
                    break
            else:
                continue
            placed.append((cx, cy, r))
            kind = CLASSES[int(rng.integers(len(CLASSES)))]
            fg = tuple(int(v) for v in (bg + rng.integers(90, 166, 3)) % 256)
            _draw_object(d, kind, cx, cy, r, rng.uniform(0, 2 * math.pi), fg)
            half = r * 1.25
            annotations.append({"image_id": k + 1, "true_label": kind,
                                "bbox": [round(cx - half, 1), round(cy - half, 1),
                                         round(2 * half, 1), round(2 * half, 1)]})
        name = f"images/scene_{k:03d}.jpg"
        (out / name).write_bytes(_jpeg_bytes(img.filter(ImageFilter.GaussianBlur(0.6)), 90))
        images.append({"id": k + 1, "file_name": name, "width": SCENE_SIZE,
                       "height": SCENE_SIZE})
    n = len(annotations)
    flip = set(rng.choice(n, size=int(round(noise_rate * n)), replace=False).tolist())
    for i, ann in enumerate(annotations):
        ann["id"] = i + 1
        ann["category_id"] = CLASSES.index(ann["true_label"]) + 1
        if i in flip:
            others = [c for c in CLASSES if c != ann["true_label"]]
            ann["category_id"] = CLASSES.index(others[int(rng.integers(len(others)))]) + 1
        ann["corrupted"] = i in flip
        ann["box_issue"] = ""
        x, y, w, h = ann["bbox"]
        ann["area"] = round(w * h, 1)
        ann["iscrowd"] = 0
    clean = [a for a in annotations if not a["corrupted"]]
    twice, edge = clean[0], clean[1]
    copy = {**twice, "id": n + 1, "box_issue": "duplicate_box",
            "bbox": [v + 1.5 for v in twice["bbox"][:2]] + twice["bbox"][2:]}
    twice["box_issue"] = "duplicate_box"
    edge["bbox"] = [edge["bbox"][0], edge["bbox"][1], SCENE_SIZE + 20 - edge["bbox"][0],
                    edge["bbox"][3]]
    edge["box_issue"] = "box_outside"
    tiny = {**clean[2], "id": n + 2, "bbox": [2.0, 2.0, 5.0, 5.0], "area": 25.0,
            "box_issue": "tiny_box"}
    annotations += [copy, tiny]
    doc = {"info": {"description": "dqaudit synthetic shapes scenes"},
           "images": images, "annotations": annotations,
           "categories": [{"id": j + 1, "name": c} for j, c in enumerate(CLASSES)]}
    (out / "scenes.json").write_text(json.dumps(doc, indent=1) + "\n")
    return {"n_images": n_images, "n_boxes": len(annotations), "classes": list(CLASSES),
            "n_corrupted": len(flip)}


ML_SIZE = 112


def generate_multilabel(out_dir: str | os.PathLike, *, n_images: int = 180,
                        noise_rate: float = 0.1, seed: int = 0) -> dict:
    """A multi-label dataset of shapes with known set truth: ``images/*.jpg`` of ML_SIZE px
    with one to three shapes of different classes each, and ``manifest.csv`` (path, labels:
    the given set as ``a;b``, true_labels, corrupted, split). About ``noise_rate`` of the
    images get a wrong set: half of them miss one of their classes, half carry one extra."""
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(n_images):
        bg = rng.integers(0, 256, 3)
        noise = rng.normal(0, 14, (ML_SIZE, ML_SIZE, 3))
        img = Image.fromarray(np.clip(bg[None, None, :] + noise, 0, 255).astype(np.uint8), "RGB")
        d = ImageDraw.Draw(img)
        kinds = list(rng.choice(CLASSES, size=int(rng.integers(1, 4)), replace=False))
        placed: list[tuple[float, float, float]] = []
        for kind in kinds:
            for _attempt in range(50):  # shapes may touch, not hide each other
                r = rng.uniform(13, 22)
                cx, cy = rng.uniform(r * 1.3, ML_SIZE - r * 1.3, 2)
                if all(math.hypot(cx - px, cy - py) > 1.05 * (r + pr) for px, py, pr in placed):
                    break
            placed.append((cx, cy, r))
            fg = tuple(int(v) for v in (bg + rng.integers(90, 166, 3)) % 256)
            _draw_object(d, str(kind), cx, cy, r, rng.uniform(0, 2 * math.pi), fg)
        name = f"images/ml_{k:03d}.jpg"
        (out / name).write_bytes(_jpeg_bytes(img.filter(ImageFilter.GaussianBlur(0.5)), 90))
        truth = sorted(str(v) for v in kinds)
        rows.append({"path": name, "true_labels": ";".join(truth),
                     "split": "test" if k % 5 == 0 else "train"})
    wrong = set(rng.choice(n_images, size=int(round(noise_rate * n_images)),
                           replace=False).tolist())
    for k, row in enumerate(rows):
        given = row["true_labels"].split(";")
        if k in wrong:
            absent = [c for c in CLASSES if c not in given]
            if (k % 2 == 0 and len(given) > 1) or not absent:
                given.remove(given[int(rng.integers(len(given)))])  # a missing label
            else:
                given.append(absent[int(rng.integers(len(absent)))])  # an extra label
        row["labels"] = ";".join(sorted(given))
        row["corrupted"] = k in wrong
    pd.DataFrame(rows)[["path", "labels", "true_labels", "corrupted", "split"]].to_csv(
        out / "manifest.csv", index=False)
    return {"n_images": n_images, "classes": list(CLASSES), "n_corrupted": len(wrong)}
