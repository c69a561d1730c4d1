"""Image checks: recall on known corruptions, false flags on untouched images, against
cleanvision on the same images.

Random CIFAR-10N images and the untouched sample_data shapes get known corruptions (blacken,
whiten, brightness x0.3 and x3, Gaussian blur, posterize to two levels, uniform noise, a crop to
an 8:1 strip, grayscale, an exact copy); dqaudit's checks (``dqaudit.imaging.image_checks``, on the
statistics the decode workers measure) and cleanvision's ``Imagelab`` run on the untouched and
the corrupted images. Per corruption: the recall of the issue it should raise; per issue: the
share of untouched images flagged. Also prints the score distributions that set the thresholds.

    python benchmarks/image_issues.py --n 500 [--no-cleanvision] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, cifar10n_table, report  # noqa: E402

from dqaudit.embed.loader import to_rgb  # noqa: E402
from dqaudit.imaging.image_checks import (  # noqa: E402
    THRESHOLDS,
    exact_duplicate_groups,
    image_flags,
    image_scores,
    image_stats,
    stat_column,
)

# corruption -> (the issues that count as found in dqaudit, in cleanvision)
CORRUPTIONS = {
    "blacken": (("blank",), ("dark", "low_information")),
    "whiten": (("blank",), ("light", "low_information")),
    "brightness x0.3": (("dark",), ("dark",)),
    "brightness x3": (("bright",), ("light",)),
    "blur r=1/16 side": (("blurry",), ("blurry",)),
    "blur r=1/8 side": (("blurry",), ("blurry",)),
    "posterize 1 bit, gray": (("low_information", "blank"), ("low_information",)),
    "uniform noise": (("low_information", "blank"), ("low_information",)),
    "strip 8:1": (("odd_size",), ("odd_aspect_ratio",)),
    "grayscale": (("grayscale",), ("grayscale",)),
    "exact copy": (("exact_duplicate",), ("exact_duplicates",)),
}
CORRUPTED_SHARE = 0.1  # each corruption hits 10% of the images: a dataset, not a junk pile


def corrupt(img: Image.Image, name: str, rng) -> Image.Image:
    w, h = img.size
    if name == "blacken":
        return Image.new("RGB", img.size, (0, 0, 0))
    if name == "whiten":
        return Image.new("RGB", img.size, (255, 255, 255))
    if name.startswith("brightness"):
        f = 0.3 if "0.3" in name else 3.0
        return img.point(lambda v: min(255, int(v * f)))
    if name.startswith("blur"):
        return img.filter(ImageFilter.GaussianBlur(max(w, h) / (16 if "16" in name else 8)))
    if name.startswith("posterize"):
        return ImageOps.posterize(ImageOps.grayscale(img), 1).convert("RGB")
    if name == "uniform noise":
        return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    if name == "strip 8:1":
        return img.resize((w * 2, h * 2)).crop((0, h - h // 8, w * 2, h + h // 8))
    if name == "grayscale":
        return ImageOps.grayscale(img).convert("RGB")
    if name == "exact copy":
        return img.copy()
    raise ValueError(name)


def load_images(n: int, seed: int):
    rng = np.random.default_rng(seed)
    df = cifar10n_table()
    cifar = [df["path"].iat[i] for i in rng.choice(len(df), size=n, replace=False)]
    shapes = sorted(str(p) for p in (REPO / "sample_data" / "shapes" / "images").glob("*")
                    if not p.name.startswith(("broken_", "dup_")))
    out = []
    for source, paths in (("cifar10n", cifar), ("shapes", shapes)):
        for p in paths:
            with Image.open(p) as im:
                out.append((source, p, to_rgb(im.copy())))
    return out


def dqaudit_flags(images: list[Image.Image]) -> tuple[dict, float]:
    t = time.perf_counter()
    stats = np.stack([image_stats(im) for im in images])
    seconds = time.perf_counter() - t
    flags = image_flags(image_scores(stats))
    flags["exact_duplicate"] = exact_duplicate_groups(stat_column(stats, "pixel_hash")) >= 0
    return flags, seconds / len(images)


def cleanvision_flags(images: list[Image.Image]) -> dict:
    from cleanvision import Imagelab

    with tempfile.TemporaryDirectory() as tmp:
        for i, im in enumerate(images):
            im.save(Path(tmp) / f"{i:06d}.png")
        lab = Imagelab(data_path=tmp)
        lab.find_issues()
        issues = lab.issues.sort_index()
    names = [c[3:-6] for c in issues.columns if c.startswith("is_") and c.endswith("_issue")]
    return {k: issues[f"is_{k}_issue"].to_numpy(dtype=bool) for k in names}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500, help="CIFAR-10N images (all shapes are used)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-cleanvision", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    base = load_images(args.n, args.seed)
    clean = [im for _, _, im in base]
    corrupted, kinds = [], []
    n_bad = int(round(CORRUPTED_SHARE * len(clean)))
    for name in CORRUPTIONS:
        for i in rng.choice(len(clean), size=n_bad, replace=False):
            corrupted.append(corrupt(clean[i], name, rng))
            kinds.append(name)
    everything = clean + corrupted
    kinds = ["untouched"] * len(clean) + kinds
    # each kind is checked against the untouched images alone (a dataset of the untouched plus
    # one kind of corruption, as the dataset-relative checks, grayscale and size, would see it)
    result = {"n_untouched": len(clean), "thresholds": THRESHOLDS, "dqaudit": {}, "cleanvision": {}}
    for tool in ("dqaudit", "cleanvision"):
        if tool == "cleanvision" and args.no_cleanvision:
            continue
        recall, false_flags, seconds = {}, None, []
        for name in CORRUPTIONS:
            part = clean + [im for im, k in zip(corrupted, kinds[len(clean):]) if k == name]
            if tool == "dqaudit":
                flags, per_image = dqaudit_flags(part)
                seconds.append(per_image)
            else:
                flags = cleanvision_flags(part)
            targets = [flags[t] for t in CORRUPTIONS[name][0 if tool == "dqaudit" else 1]
                       if t in flags]
            recall[name] = float(np.any(targets, axis=0)[len(clean):].mean()) if targets \
                else None
            if false_flags is None:
                # untouched images flagged (an exact copy's original is not a false flag)
                false_flags = {k: float(v[:len(clean)].mean()) for k, v in flags.items()
                               if k not in ("exact_duplicate", "exact_duplicates")}
        result[tool] = {"recall": recall, "false_flags": false_flags}
        if seconds:
            result[tool]["seconds_per_image"] = float(np.mean(seconds))
    # the distributions the thresholds were set from
    stats = np.stack([image_stats(im) for im in everything])
    scores = image_scores(stats)
    kinds = np.array(kinds)
    dist = {}
    for issue, values in scores.items():
        untouched = values[kinds == "untouched"]
        dist[issue] = {"untouched_p99": float(np.nanpercentile(untouched, 99)),
                       "untouched_max": float(np.nanmax(untouched))}
        for name, (targets, _) in CORRUPTIONS.items():
            if issue in targets:
                dist[issue][f"{name}_min"] = float(np.nanmin(values[kinds == name]))
    result["score_distribution"] = dist
    # recall and untouched flag rate by threshold (the sweep the thresholds were read from)
    sweep = {}
    grid = np.round(np.arange(0.5, 1.0, 0.05), 2)
    for issue, values in scores.items():
        untouched = np.nan_to_num(values[kinds == "untouched"])
        mine = [name for name, (t, _) in CORRUPTIONS.items() if issue in t]
        sweep[issue] = {f"{t:.2f}": {"untouched": round(float((untouched >= t).mean()), 4),
                                     **{name: round(float((np.nan_to_num(values[kinds == name])
                                                           >= t).mean()), 4) for name in mine}}
                        for t in grid}
    result["threshold_sweep"] = sweep
    report(result, args.json)


if __name__ == "__main__":
    main()
