"""Decoding and resizing images in DataLoader workers, so the model never waits on PIL.

Workers return uint8 tensors; normalisation happens on the device, batched.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from dqaudit.embed.encoders import Preprocessing
from dqaudit.files import is_dicom_file
from dqaudit.imaging.dicom import DicomRead, DicomSkip, read_dicom
from dqaudit.imaging.image_checks import N_STATS, image_stats

Image.MAX_IMAGE_PIXELS = 400_000_000  # larger: skipped as too large (a decompression bomb)
MAX_ASPECT = 4  # beyond 4:1 the centre square is cut before scaling (memory stays bounded)

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
             "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB: CMYK, palette, grayscale, 16-bit and float; alpha over white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        top = 65535.0 if img.mode.startswith("I;16") else (hi if hi > lo else lo + 1)
        bottom = 0.0 if img.mode.startswith("I;16") else lo
        arr = np.clip((arr - bottom) / max(top - bottom, 1e-12) * 255.0, 0, 255)
        return Image.fromarray(arr.astype(np.uint8), mode="L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_strict(img: Image.Image) -> None:
    """``img.load()`` that fails on a truncated file, which must be listed in skipped.csv,
    never decoded half grey. Other libraries (FiftyOne's among them) switch PIL's global to
    lenient, so it is set for this call only; decoding is single-threaded within a process."""
    lenient = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        img.load()
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = lenient


def open_rgb(path: str, dicom: DicomRead, *, min_side: int | None = None) -> Image.Image:
    """The one way dqaudit opens an image file: a loaded ``RGB`` PIL image.

    DICOM files (by content, ``files.is_dicom_file``) through ``dicom.read_dicom`` with the
    audit's window and frame; every other file through PIL, strictly (a truncated file raises)
    and converted by ``to_rgb``. ``min_side``: a JPEG may be decoded in the DCT domain at the
    smallest scale that keeps its short side at least that long. Raises on unreadable files
    (``describe_failure`` says why)."""
    return _open(path, dicom, min_side)[0]


def _open(path: str, dicom: DicomRead, min_side: int | None) -> tuple[Image.Image, tuple]:
    """``open_rgb`` and the (width, height) of the file's full picture."""
    if is_dicom_file(path):
        img = read_dicom(path, dicom)[0]
        return img, img.size
    with Image.open(path) as img:
        original = img.size
        if min_side and img.format == "JPEG" and min(original) > min_side:
            scale = min_side / min(original)
            img.draft(img.mode, (math.ceil(original[0] * scale), math.ceil(original[1] * scale)))
        load_strict(img)
        turn = orientation(img)
        img = to_rgb(img)
    if turn in TRANSPOSE:  # upright, as a viewer shows it (EXIF Orientation 2-8)
        img = img.transpose(TRANSPOSE[turn])
        if turn >= 5:
            original = original[::-1]
    return img, original


# EXIF Orientation -> the PIL transpose that shows the image upright (what ImageOps.exif_transpose
# does, without copying the EXIF block into the result)
TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
             4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
             6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
             8: Image.Transpose.ROTATE_90}
EXIF_ORIENTATION = 0x0112


def orientation(img: Image.Image) -> int:
    """The EXIF Orientation tag of an opened image (1, upright, when absent or unreadable)."""
    try:
        value = img.getexif().get(EXIF_ORIENTATION, 1)
        return int(value) if value in TRANSPOSE or value == 1 else 1
    except Exception:  # noqa: BLE001 - a damaged EXIF block does not make the image unreadable
        return 1


def decode(path: str, prep: Preprocessing, *, stats: bool = False):
    """Read ``path`` and return a (3, S, S) uint8 array (with ``stats``: and its
    ``image_stats``). Raises on unreadable images."""
    size = prep.image_size
    # decode no larger than needed: a JPEG in the DCT domain at the smallest scale that keeps
    # the short side at least twice the model's input (a 12-MP photo then decodes at 1/8
    # scale); the final resample below is unchanged
    img, original = _open(path, prep.dicom(), 2 * size)
    factor = min(img.size) // (2 * size)
    if factor >= 2:  # other formats (and what draft left): an integer box reduction first
        img = img.reduce(factor)
    measured = image_stats(img, size=original) if stats else None
    if prep.region is not None:
        w, h = img.size
        left, top, right, bottom = prep.region
        img = img.crop((round(left * w), round(top * h), max(round(right * w), round(left * w) + 1),
                        max(round(bottom * h), round(top * h) + 1)))
    resample = _RESAMPLE.get(prep.interpolation, Image.Resampling.BICUBIC)
    w, h = img.size
    if prep.resize_mode == "squash" or w == h:
        img = img.resize((size, size), resample)
    elif max(w, h) > MAX_ASPECT * min(w, h):
        # a strip (20000 x 1): scaling its short side up first would need gigabytes; the centre
        # square, then scaled, is the same crop at bounded memory
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side)).resize((size, size), resample)
    else:
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((nw, nh), resample)
        left, top = (nw - size) // 2, (nh - size) // 2
        img = img.crop((left, top, left + size, top + size))
    arr = np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))
    return (arr, measured) if stats else arr


def describe_failure(exc: BaseException) -> str:
    if isinstance(exc, DicomSkip):
        return str(exc)
    if isinstance(exc, Image.DecompressionBombError):
        return (f"image too large to decode safely (above {Image.MAX_IMAGE_PIXELS:,} pixels, "
                "PIL's decompression-bomb limit)")
    if isinstance(exc, UnidentifiedImageError):
        return "not a decodable image (unknown or corrupt format)"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "truncated" in text.lower():
        return "truncated image data"
    return f"cannot decode image ({text})"


class ImageFolderDataset:
    """torch-style dataset over (index, path); yields (index, array or None, error or '')."""

    def __init__(self, paths: list[str], indices: list[int], prep: Preprocessing):
        self.paths, self.indices, self.prep = paths, indices, prep

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        idx = self.indices[i]
        try:
            arr, stats = decode(self.paths[idx], self.prep, stats=True)
            return idx, arr, stats, ""
        except Exception as exc:  # any decode failure is a per-file problem, never fatal
            return idx, None, None, describe_failure(exc)


def collate(items):
    """Stack decoded images and their statistics; keep failures aside."""
    import torch

    ok = [(i, a, st) for i, a, st, e in items if a is not None]
    failed = [(i, e) for i, a, st, e in items if a is None]
    if ok:
        idx = torch.tensor([i for i, _, _ in ok], dtype=torch.long)
        batch = torch.from_numpy(np.stack([a for _, a, _ in ok]))
        stats = np.stack([st for _, _, st in ok])
    else:
        idx, batch, stats = torch.zeros(0, dtype=torch.long), None, np.zeros((0, N_STATS))
    return idx, batch, stats, failed
