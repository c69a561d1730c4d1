"""JPEG decoding on the GPU for the embed stage on CUDA (nvjpeg, through torchvision).

The decode workers only read the files' bytes for JPEGs (``RawJpegDataset``); the main process
decodes each batch on the GPU with one batched ``torchvision.io.decode_jpeg`` call and resizes
there as ``loader.decode`` does on the CPU: the shorter side to the input size (bicubic,
antialiased), then the centre square; a strip beyond ``MAX_ASPECT``:1 is cut to its centre
square first. Other formats are decoded by the workers on the CPU as before; a batch nvjpeg
cannot decode (a CMYK or corrupt JPEG) is decoded file by file on the CPU, so a file that fails
there too is listed in skipped.csv with the CPU decoder's reason.

The image checks' statistics are measured by the workers, which are idle otherwise: each JPEG
is also decoded on the CPU in the DCT domain at the smallest scale that keeps its long side at
least ``2 * STATS_SIDE`` (an eighth of a 2-MP photo), and ``image_checks.image_stats`` measures
that. Computed instead in the main process from the GPU's pixels (0.9 ms an image on this
project's CPU, not parallel under the GIL), they held the whole decode step to 535 images/s of
2-MP JPEGs on an H200 (benchmarks/RESULTS.md, "GPU JPEG decode"). The
embeddings differ from the CPU decoder's in resampling detail, so the embedding cache keeps
them apart (``Encoder.decoder``).
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from dqaudit.embed.encoders import Preprocessing
from dqaudit.embed.loader import (
    MAX_ASPECT,
    ImageFolderDataset,
    decode,
    describe_failure,
    load_strict,
    orientation,
    to_rgb,
)
from dqaudit.errors import DqauditError
from dqaudit.imaging.image_checks import N_STATS, STATS_SIDE, image_stats

JPEG_MAGIC = b"\xff\xd8\xff"
DECODERS = ("auto", "cpu", "nvjpeg")


def nvjpeg_available(device: str) -> bool:
    """Whether torchvision can decode JPEGs on ``device`` (a CUDA device)."""
    if not device.startswith("cuda"):
        return False
    try:
        import torch
        from torchvision.io import decode_jpeg  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def resolve_decoder(name: str, device: str) -> str:
    """``auto``: nvjpeg on a CUDA device where torchvision has it, else the CPU workers."""
    if name not in DECODERS:
        raise DqauditError(f"unknown decoder {name!r}; valid: {', '.join(DECODERS)}")
    if name == "nvjpeg" and not nvjpeg_available(device):
        raise DqauditError(f"--decode nvjpeg needs a CUDA device (not {device}) and "
                           "torchvision; use --decode cpu")
    if name == "auto":
        return "nvjpeg" if nvjpeg_available(device) else "cpu"
    return name


class RawJpegDataset(ImageFolderDataset):
    """Yields ``(index, kind, payload, stats, error)``: JPEGs as their raw bytes (``kind``
    ``jpeg``, payload a uint8 array, decoded later on the GPU), other files decoded here on the
    CPU (``pixels``, payload (3, S, S) uint8 and its statistics), failures with their reason."""

    def __getitem__(self, i: int):
        idx = self.indices[i]
        path = self.paths[idx]
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            if data[:3] == JPEG_MAGIC:
                stats = upright_jpeg_stats(data)
                if stats is not None:
                    return idx, "jpeg", np.frombuffer(data, dtype=np.uint8), stats, ""
            arr, stats = decode(path, self.prep, stats=True)
            return idx, "pixels", arr, stats, ""
        except Exception as exc:  # any read or decode failure is a per-file problem
            return idx, "failed", None, None, describe_failure(exc)


def upright_jpeg_stats(data: bytes) -> np.ndarray | None:
    """``image_stats`` of a JPEG's bytes, decoded in the DCT domain no larger than needed (long
    side at least ``2 * STATS_SIDE``); None for a JPEG stored rotated (EXIF Orientation), which
    the CPU decoder turns upright (nvjpeg decodes the stored pixels as they are). Raises on
    undecodable or truncated data."""
    with Image.open(io.BytesIO(data)) as img:
        if orientation(img) != 1:
            return None
        size = img.size
        scale = min(1.0, 2 * STATS_SIDE / max(size))
        img.draft("RGB", (math.ceil(size[0] * scale), math.ceil(size[1] * scale)))
        load_strict(img)
        return image_stats(to_rgb(img), size=size)


def collate_raw(items):
    """A batch of ``RawJpegDataset`` items, kept apart by kind (decoded on the GPU later)."""
    return list(items)


def decode_batch(items, paths: list[str], prep: Preprocessing, device: str):
    """One ``collate_raw`` batch -> ``(idx (B,) int64, images (B, 3, S, S) uint8 on the device,
    stats (B, N_STATS), failed [(index, reason)])``; JPEGs on the GPU, the rest as the
    workers decoded them."""
    import torch

    failed = [(i, err) for i, kind, _, _, err in items if kind == "failed"]
    jpegs = [(i, raw, st) for i, kind, raw, st, _ in items if kind == "jpeg"]
    done = [(i, torch.from_numpy(arr).to(device), st)
            for i, kind, arr, st, _ in items if kind == "pixels"]
    if jpegs:
        done.extend(_gpu_jpegs(jpegs, paths, prep, device, failed))
    if not done:
        return np.zeros(0, dtype=np.int64), None, np.zeros((0, N_STATS)), failed
    idx = np.array([i for i, _, _ in done], dtype=np.int64)
    images = torch.stack([im for _, im, _ in done])
    stats = np.stack([st for _, _, st in done])
    return idx, images, stats, failed


def _gpu_jpegs(jpegs, paths, prep, device, failed):
    """Decode ``jpegs`` [(index, bytes, stats)] with nvjpeg in one call; a batch that fails is
    decoded file by file on the CPU (its failures appended to ``failed``)."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        decoded = decode_jpeg([torch.from_numpy(raw.copy()) for _, raw, _ in jpegs],
                              mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        out = []
        for i, _, _ in jpegs:
            try:
                arr, st = decode(paths[i], prep, stats=True)
                out.append((i, torch.from_numpy(arr).to(device), st))
            except Exception as exc:  # noqa: BLE001 - a per-file problem
                failed.append((i, describe_failure(exc)))
        return out
    return [(i, resize_on_device(img, prep), st) for (i, _, st), img in zip(jpegs, decoded)]


def resize_on_device(img, prep: Preprocessing):
    """(3, H, W) uint8 on the device -> (3, S, S) uint8 model input."""
    import torch
    import torch.nn.functional as F

    size = prep.image_size
    _, h, w = img.shape
    x = img.unsqueeze(0).float()
    mode = "bicubic" if prep.interpolation in ("bicubic", "lanczos") else (
        "bilinear" if prep.interpolation == "bilinear" else "nearest")
    aa = {"antialias": True} if mode != "nearest" else {}
    if prep.resize_mode == "squash" or w == h:
        out = F.interpolate(x, size=(size, size), mode=mode, **aa)
    else:
        if max(w, h) > MAX_ASPECT * min(w, h):
            side = min(w, h)
            top, left = (h - side) // 2, (w - side) // 2
            x = x[:, :, top:top + side, left:left + side]
            out = F.interpolate(x, size=(size, size), mode=mode, **aa)
        else:
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            out = F.interpolate(x, size=(nh, nw), mode=mode, **aa)
            top, left = (nh - size) // 2, (nw - size) // 2
            out = out[:, :, top:top + size, left:left + size]
    return out.round().clamp_(0, 255).to(torch.uint8)[0]
