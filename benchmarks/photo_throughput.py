"""Speed and fidelity on photo-sized images: decode at the size the encoder needs.

Makes its own inputs in a temporary folder from CIFAR-10N images (bicubic upscaled, so the
pixel counts and codecs are real): 12-MP (4000x3000) and 2-MP (1600x1200) JPEGs at quality 90,
and 2048x2048 16-bit grayscale PNGs. For each set: decode + resize images/s on one core with
the loader before (full decode, then resample) and now (JPEG draft / box reduction first); the
cosine between the embeddings of the two paths; for the 2-MP set, the 5-fold linear-probe
accuracy on CIFAR-10N clean labels with either path; and the whole embed stage against the raw
forward rate on this machine.

    python benchmarks/photo_throughput.py [--n-probe 1000] [--n 40]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cifar10n_table, probe_accuracy, report  # noqa: E402

from dqaudit.embed import embed_images, encode_batch, load_encoder  # noqa: E402
from dqaudit.embed.loader import decode, to_rgb  # noqa: E402

SETS = {"12MP jpeg": ((4000, 3000), "JPEG"), "2MP jpeg": ((1600, 1200), "JPEG"),
        "2048px 16-bit png": ((2048, 2048), "PNG16")}


def old_decode(path: str, prep) -> np.ndarray:
    """The loader before this change: full decode, then the resample and centre crop."""
    with Image.open(path) as img:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        img.load()
        img = to_rgb(img)
    size = prep.image_size
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    img = img.crop((left, top, left + size, top + size))
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))


def make(paths: list[str], folder: Path, size, kind) -> list[str]:
    out = []
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            big = im.convert("RGB").resize(size, Image.Resampling.BICUBIC)
        if kind == "JPEG":
            target = folder / f"{i:05d}.jpg"
            big.save(target, quality=90)
        else:
            arr = (np.asarray(big.convert("L"), dtype=np.uint16) * 257)
            target = folder / f"{i:05d}.png"
            Image.fromarray(arr).save(target)
        out.append(str(target))
    return out


def rate(fn, paths, prep) -> tuple[float, list[np.ndarray]]:
    t = time.perf_counter()
    arrays = [fn(p, prep) for p in paths]
    return len(paths) / (time.perf_counter() - t), arrays


def embed_arrays(encoder, arrays, batch=32) -> np.ndarray:
    out = [encode_batch(encoder, np.stack(arrays[i:i + batch]), "cpu")
           for i in range(0, len(arrays), batch)]
    return np.concatenate(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40, help="images per set for speed and cosine")
    ap.add_argument("--n-probe", type=int, default=1000, help="2-MP images for the probe")
    ap.add_argument("--model", default="lite0+lite2")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    df = cifar10n_table().sample(n=max(args.n, args.n_probe), random_state=0)
    encoder = load_encoder(args.model, image_size=224)
    prep = encoder.preprocessing
    result = {"model": args.model, "image_size": prep.image_size, "sets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (size, kind) in SETS.items():
            folder = Path(tmp) / name.replace(" ", "_")
            folder.mkdir()
            paths = make(list(df["path"][:args.n]), folder, size, kind)
            before, old = rate(old_decode, paths, prep)
            after, new = rate(lambda p, q: decode(p, q), paths, prep)
            e_old, e_new = embed_arrays(encoder, old), embed_arrays(encoder, new)
            cos = (e_old * e_new).sum(axis=1)
            t = time.perf_counter()
            embed_images(paths, model=encoder, device="cpu", use_cache=False, num_workers=1,
                         progress=False)
            stage = len(paths) / (time.perf_counter() - t)
            result["sets"][name] = {
                "decode_per_core_before": round(before, 2), "decode_per_core_after":
                round(after, 2), "speedup": round(after / before, 2),
                "cosine_min": round(float(cos.min()), 5),
                "cosine_median": round(float(np.median(cos)), 5),
                "embed_stage_images_per_s": round(stage, 1)}
            print(name, result["sets"][name], flush=True)
        x = torch.randint(0, 255, (32, 3, prep.image_size, prep.image_size), dtype=torch.uint8)
        encode_batch(encoder, x.numpy(), "cpu")
        t = time.perf_counter()
        for _ in range(3):
            encode_batch(encoder, x.numpy(), "cpu")
        result["raw_forward_images_per_s"] = round(96 / (time.perf_counter() - t), 1)
        # does the fast path move what the embeddings are for? a probe on the clean labels
        folder = Path(tmp) / "probe"
        folder.mkdir()
        paths = make(list(df["path"][:args.n_probe]), folder, (1600, 1200), "JPEG")
        y = df["clean"].to_numpy()[:args.n_probe]
        accs = {}
        for label, fn in (("before", old_decode), ("after", lambda p, q: decode(p, q))):
            arrays = [fn(p, prep) for p in paths]
            accs[label] = round(probe_accuracy(embed_arrays(encoder, arrays), y), 4)
        result["probe_accuracy_2mp"] = accs
    report(result, args.json)


if __name__ == "__main__":
    main()
