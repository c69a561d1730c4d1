"""Image checks: the decode workers' statistics -> per-sample image-issue scores and flags.

The statistics are ``image_stats``, measured by the decode workers (``embed.loader``) from the
pixels they already hold (no second pass over the files) and cached with the embeddings; S is
``N_STATS``. Every score is in [0, 1], higher is worse, and an issue is flagged at
``score >= THRESHOLDS[issue]``; the thresholds were chosen in ``benchmarks/image_issues.py``
(known corruptions of CIFAR-10N and sample_data images; RESULTS.md, "Image checks"):

    blank            1 - std(L) / 8                near-constant image (L: luminance 0-255)
    dark             1 - p99(L) / 255              no bright pixel at all
    bright           mean(L) / 255                 washed out
    low_information  1 - H(L) / 8                  histogram entropy H in bits (8: uniform)
    blurry           1 - sharpness / 1.5           std(Laplacian L) / std(L), scale-free
    grayscale        1 - colourfulness / 4         mean |R-G|, |G-B| (only in a colour dataset)
    odd_size         max(aspect, smallness)        aspect: (long/short - 1) / 9, 1 at 10:1;
                                                   smallness: (median short/short - 1) / 3,
                                                   1 at a quarter of the median short side

``blank`` and ``low_information`` images are junk: they get no label-error flag and no
suggested label (a suggestion on a black square misleads the reviewer). ``exact_duplicate``
groups samples whose decoded pixels are identical (the pixel hash).
"""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

# what the decode workers measure of every image, from the pixels they already hold (the image
# checks of dqaudit.imaging.image_checks turn these into scores); one float64 row per image
STAT_NAMES = ("width", "height", "lum_mean", "lum_p99", "lum_std", "entropy_bits", "sharpness",
              "colourfulness", "pixel_hash")
N_STATS = len(STAT_NAMES)
STATS_SIDE = 128  # the statistics are taken on the image shrunk to at most this side


def image_stats(img: Image.Image, *, size: tuple[int, int] | None = None) -> np.ndarray:
    """(N_STATS,) float64 of an RGB image: its size; the mean, 99th percentile, standard
    deviation and histogram entropy (bits) of its luminance; sharpness, the standard deviation
    of the Laplacian of the luminance (less 8-bit rounding noise) divided by the luminance's
    own (scale-free, 0 for a flat image); colourfulness, the mean absolute difference between
    channels; and a 52-bit hash of the decoded pixels (exact duplicates share it; exactly
    representable in a float64), taken after an integer box reduction to under
    2 x ``STATS_SIDE`` for large images. The rest is measured on the image shrunk to
    ``STATS_SIDE``. ``size``: the file's own (width, height) when ``img`` was decoded smaller
    (JPEG draft, box reduction)."""
    w, h = size if size is not None else img.size
    # an integer box reduction first (cheap in PIL): a 12-megapixel photo costs about 11 ms
    # here, against 134 ms to hash its full-size pixels
    factor = max(1, max(img.size) // (2 * STATS_SIDE))
    base = img.reduce(factor) if factor > 1 else img
    digest = hashlib.blake2b(base.tobytes(), digest_size=8, person=b"dqpixels")
    digest.update(f"{w}x{h}".encode())
    pixel_hash = float(int.from_bytes(digest.digest(), "little") >> 12)
    bw, bh = base.size
    shrink = STATS_SIDE / max(bw, bh)
    small = base if shrink >= 1 else base.resize(
        (max(1, round(bw * shrink)), max(1, round(bh * shrink))), Image.Resampling.BOX)
    rgb = np.asarray(small, dtype=np.float64)
    lum = rgb @ np.array([0.299, 0.587, 0.114])
    p99 = np.percentile(lum, 99)
    hist = np.bincount(np.clip(lum, 0, 255).astype(np.int64).ravel(), minlength=256)
    prob = hist[hist > 0] / hist.sum()
    entropy = float(-(prob * np.log2(prob)).sum())
    std = float(lum.std())
    if lum.shape[0] >= 3 and lum.shape[1] >= 3:
        lap = (lum[1:-1, :-2] + lum[1:-1, 2:] + lum[:-2, 1:-1] + lum[2:, 1:-1]
               - 4 * lum[1:-1, 1:-1])
        # the Laplacian's variance less that of 8-bit rounding (taps 1,1,1,1,-4: 20/12), so a
        # smooth low-contrast image does not read as sharp from its rounding noise
        sharpness = float(np.sqrt(max(lap.var() - 20 / 12, 0.0)) / std) if std > 1e-6 else 0.0
    else:
        sharpness = 0.0
    colour = float(np.abs(rgb[..., 0] - rgb[..., 1]).mean() + np.abs(rgb[..., 1] - rgb[..., 2]
                                                                      ).mean()) / 2
    return np.array([w, h, lum.mean(), p99, std, entropy, sharpness, colour, pixel_hash])


IMAGE_ISSUES = ("blank", "dark", "bright", "blurry", "low_information", "grayscale", "odd_size")
JUNK_ISSUES = ("blank", "low_information")
# flag at score >= threshold: chosen by benchmarks/image_issues.py (see the module docstring)
THRESHOLDS = {"blank": 0.9, "dark": 0.7, "bright": 0.85, "blurry": 0.85,
              "low_information": 0.75, "grayscale": 0.95, "odd_size": 0.75}
BLANK_STD = 8  # grey levels of luminance spread at which the blank score reaches 0
IMAGE_ISSUE_TEXT = {  # what each check measures, for the report (numbers from THRESHOLDS)
    "blank": "near-constant: luminance standard deviation under "
             f"{BLANK_STD * (1 - THRESHOLDS['blank']):.1f} grey levels (junk)",
    "dark": "no bright pixel: the brightest 1% of pixels below "
            f"{100 * (1 - THRESHOLDS['dark']):.0f}% grey",
    "bright": f"washed out: mean luminance above {100 * THRESHOLDS['bright']:.0f}% of white",
    "blurry": "edges too weak for the image's contrast (Laplacian / luminance spread)",
    "low_information": "a histogram of very few grey levels (junk)",
    "grayscale": "no colour in a dataset of colour images",
    "odd_size": "an aspect ratio beyond about 8:1, or a short side under a third of the "
                "dataset's median",
}
# a dataset is "colour" when most of its images are: then an image without colour stands out
COLOUR_DATASET_SHARE = 0.5


def stat_column(stats: np.ndarray, name: str) -> np.ndarray:
    """(N,) one named statistic of (N, S) ``image_stats`` rows."""
    return stats[:, STAT_NAMES.index(name)]


def image_scores(stats: np.ndarray) -> dict[str, np.ndarray]:
    """(N, S) statistics -> ``{issue: (N,) score in [0, 1]}`` (NaN rows: NaN scores)."""
    stats = np.asarray(stats, dtype=np.float64)
    w, h = stat_column(stats, "width"), stat_column(stats, "height")
    short, long_ = np.minimum(w, h), np.maximum(w, h)
    median_short = np.nanmedian(short) if np.isfinite(short).any() else np.nan
    aspect = np.clip((long_ / np.maximum(short, 1) - 1) / 9, 0, 1)
    smallness = np.clip((median_short / np.maximum(short, 1) - 1) / 3, 0, 1)
    return {
        "blank": np.clip(1 - stat_column(stats, "lum_std") / BLANK_STD, 0, 1),
        "dark": np.clip(1 - stat_column(stats, "lum_p99") / 255, 0, 1),
        "bright": np.clip(stat_column(stats, "lum_mean") / 255, 0, 1),
        "blurry": np.clip(1 - stat_column(stats, "sharpness") / 1.5, 0, 1),
        "low_information": np.clip(1 - stat_column(stats, "entropy_bits") / 8, 0, 1),
        "grayscale": np.clip(1 - stat_column(stats, "colourfulness") / 4, 0, 1),
        "odd_size": np.maximum(aspect, smallness),
    }


def image_flags(scores: dict[str, np.ndarray], *, thresholds: dict | None = None
                ) -> dict[str, np.ndarray]:
    """``{issue: (N,) bool}``. ``grayscale`` only counts in a colour dataset (most images
    colourful); a blank image is not also called dark, bright, blurry or low-information."""
    thresholds = {**THRESHOLDS, **(thresholds or {})}
    flags = {k: np.nan_to_num(v, nan=0.0) >= thresholds[k] for k, v in scores.items()}
    colourful = ~flags["grayscale"]
    if colourful.mean() < COLOUR_DATASET_SHARE:
        flags["grayscale"] = np.zeros_like(flags["grayscale"])
    for name in ("dark", "bright", "blurry", "low_information", "grayscale"):
        flags[name] &= ~flags["blank"]
    return flags


def exact_duplicate_groups(pixel_hash: np.ndarray) -> np.ndarray:
    """(N,) int64 group id of samples sharing their decoded pixels (``pixel_hash``), -1 for a
    sample with no exact copy (and for NaN hashes); groups numbered in order of first row."""
    h = np.asarray(pixel_hash, dtype=np.float64)
    out = np.full(len(h), -1, dtype=np.int64)
    finite = np.flatnonzero(np.isfinite(h))
    values, first, inverse, counts = np.unique(h[finite], return_index=True,
                                               return_inverse=True, return_counts=True)
    shared = counts > 1
    order = np.argsort(first[shared])  # number groups by first appearance: deterministic
    ids = np.full(len(values), -1, dtype=np.int64)
    ids[np.flatnonzero(shared)[order]] = np.arange(int(shared.sum()))
    out[finite] = ids[inverse]
    return out
