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
    """Write ``images/*.jpg`` and ``manifest.csv`` into ``out_dir``; return a short summary."""
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
    return {"n_images": len(df), "classes": list(CLASSES),
            "n_corrupted": int(df["corrupted"].sum()), "n_duplicates": n_duplicates,
            "n_broken": len(broken_rows)}


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
