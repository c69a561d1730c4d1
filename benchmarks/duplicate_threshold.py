"""Near-duplicate threshold: how similar edited copies stay, and how similar distinct images get.

150 random CIFAR-10N images are altered four ways (JPEG quality 60, saved as PNG, 2x bicubic
upscale, 1-pixel crop on each side, 10% brighter); for each encoder, the share of
(original, copy) pairs at or above each cosine threshold, against the number of the 5,000
distinct CIFAR-10N images whose nearest other image reaches it.

    .venv/bin/python benchmarks/duplicate_threshold.py [MODEL ...]   (default: lite0+lite2 lite0)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import common
import numpy as np
from PIL import Image, ImageEnhance

THRESHOLDS = (0.95, 0.96, 0.97, 0.98, 0.985, 0.99)


def main() -> None:
    models = sys.argv[1:] or ["lite0+lite2", "lite0"]
    df = common.cifar10n_table()
    pick = np.random.default_rng(0).choice(len(df), 150, replace=False)
    work = Path(tempfile.mkdtemp(prefix="dq-dups-"))
    copies = []
    for i in pick:
        img = Image.open(df.path[i]).convert("RGB")
        w, h = img.size
        edits = {"jpeg60": img, "png": img, "upscale2x": img.resize((2 * w, 2 * h), Image.BICUBIC),
                 "crop1px": img.crop((1, 1, w - 1, h - 1)),
                 "bright10": ImageEnhance.Brightness(img).enhance(1.1)}
        for name, edited in edits.items():
            path = work / f"{i}_{name}.{'png' if name == 'png' else 'jpg'}"
            edited.save(path, quality=60 if name == "jpeg60" else 90)
            copies.append((i, name, str(path)))
    for model in models:
        originals = common.embed(list(df.path), model=model)
        edited = common.embed([p for _, _, p in copies], model=model)
        sims: dict[str, list[float]] = {}
        for (i, name, _), v in zip(copies, edited):
            sims.setdefault(name, []).append(float(originals[i] @ v))
        s = originals @ originals.T
        np.fill_diagonal(s, -1)
        nearest = s.max(axis=1)
        print(f"\n{model}: median cosine of copy to original "
              + ", ".join(f"{k} {np.median(v):.4f}" for k, v in sims.items()))
        print("| threshold | distinct images with a neighbour >= t (of 5,000) | "
              + " | ".join(sims) + " |")
        print("|---" * (2 + len(sims)) + "|")
        for t in THRESHOLDS:
            shares = " | ".join(f"{np.mean(np.array(v) >= t):.3f}" for v in sims.values())
            print(f"| {t} | {int((nearest >= t).sum())} | {shares} |")


if __name__ == "__main__":
    main()
