"""The embed stage on photo-sized JPEGs on a CUDA device: CPU decode workers against nvjpeg.

Makes its inputs in a temporary folder from CIFAR-10N images (bicubic upscaled, re-encoded at
quality 90, so pixel counts and codec are real): 2-MP (1600x1200) and 12-MP (4000x3000) JPEGs.
For each set and decoder (`cpu`: the DataLoader workers, JPEG draft + PIL resample; `nvjpeg`:
batched torchvision decode_jpeg on the GPU + resize there): the whole embed stage's images/s
(no cache, default encoder, flip TTA), and the raw forward rate of the encoder on the device.
Saves both decoders' 2-MP embeddings (float16) and labels, so `--probe DIR` can compare their
5-fold linear-probe accuracy on the clean labels and their per-image cosine on any machine.

    python benchmarks/gpu_decode.py --out DIR [--n 2000] [--n-12mp 300] [--workers 4 8 15]
    python benchmarks/gpu_decode.py --probe DIR
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import common
import numpy as np
from PIL import Image

SIZES = {"2mp": (1600, 1200), "12mp": (4000, 3000)}


def _make_one(args):
    src, dst, size = args
    with Image.open(src) as im:
        im.convert("RGB").resize(size, Image.Resampling.BICUBIC).save(dst, quality=90)
    return dst


def make(paths, folder: Path, size) -> list[str]:
    jobs = [(p, str(folder / f"{i:05d}.jpg"), size) for i, p in enumerate(paths)]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        return list(pool.map(_make_one, jobs, chunksize=16))


def raw_forward_rate(encoder, device: str, batch: int = 256, reps: int = 8) -> float:
    import torch

    from dqaudit.embed import encode_batch

    size = encoder.preprocessing.image_size
    x = torch.randint(0, 255, (batch, 3, size, size), dtype=torch.uint8, device=device)
    encoder.module.to(device).to(memory_format=torch.channels_last)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    encode_batch(encoder, x, device)
    sync()
    t = time.perf_counter()
    for _ in range(reps):
        encode_batch(encoder, x, device)
    sync()
    return batch * reps / (time.perf_counter() - t)


def measure(args) -> None:
    from dqaudit.embed import embed_images, load_encoder

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    df = common.cifar10n_table()
    result = {"sets": {}}
    encoder = load_encoder(args.model, flip_tta=True)
    result["raw_forward_images_per_s"] = round(raw_forward_rate(encoder, args.device,
                                                                 batch=args.batch), 1)
    print(f"raw forward {result['raw_forward_images_per_s']} img/s", flush=True)
    for name, n in (("2mp", args.n), ("12mp", args.n_12mp)):
        if not n:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            paths = make(list(df["path"][:n]), Path(tmp), SIZES[name])
            made = time.perf_counter() - t
            rows = {"n": n, "make_seconds": round(made, 1)}
            for decoder in ("cpu", "nvjpeg"):
                for workers in args.workers:
                    emb_run = embed_images(paths, model=encoder, device=args.device,
                                           use_cache=False, progress=False, decoder=decoder,
                                           num_workers=workers)
                    info = emb_run.info
                    key = f"{decoder}_w{workers}"
                    rows[key] = {k: info[k] for k in ("images_per_second", "embed_seconds",
                                                      "forward_seconds", "gpu_decode_seconds",
                                                      "n_failed")}
                    print(f"{name} {key}: {info['images_per_second']} img/s", flush=True)
                    if name == "2mp" and workers == args.workers[-1]:
                        np.save(out / f"emb_{decoder}.npy", emb_run.embeddings.astype(
                            np.float16))
            result["sets"][name] = rows
            (out / "gpu_decode.json").write_text(json.dumps(result, indent=1))
    np.save(out / "labels_clean.npy", np.array([common.CLASSES.index(c)
                                                for c in df["clean"][:args.n]]))


def probe(folder: str) -> None:
    out = Path(folder)
    y = np.load(out / "labels_clean.npy")
    a = np.load(out / "emb_cpu.npy").astype(np.float32)
    b = np.load(out / "emb_nvjpeg.npy").astype(np.float32)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    res = {"cosine_mean": round(float(cos.mean()), 5), "cosine_min": round(float(cos.min()), 5),
           "probe_accuracy_cpu": round(common.probe_accuracy(a, y), 4),
           "probe_accuracy_nvjpeg": round(common.probe_accuracy(b, y), 4)}
    common.report(res, str(out / "probe.json"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    ap.add_argument("--probe", default=None, metavar="DIR")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--n-12mp", type=int, default=300)
    ap.add_argument("--workers", type=int, nargs="*", default=[8, 15])
    ap.add_argument("--model", default="lite0+lite2")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    if args.probe:
        probe(args.probe)
    else:
        measure(args)


if __name__ == "__main__":
    main()
