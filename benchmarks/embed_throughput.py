"""Throughput of the embed stage against the model's raw forward rate, in the same run.

Stage: `embed_images` on real JPEGs of ../shared/data/cifar10n (decode + resize in DataLoader
workers, normalise, forward with flip TTA, L2-normalise), cache off. Raw: the same forward
passes on synthetic tensors already in memory. Ratio = stage / raw: how close decoding comes
to never making the model wait. Also the raw rate of cheaper variants (layout, precision,
threads, resolution), with the linear-probe accuracy they give where it can change.

    .venv/bin/python benchmarks/embed_throughput.py [--n 1000] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import time

import common
import torch


def raw_rate(encoder, *, size: int, batch: int, n_batches: int, device: str,
             channels_last: bool = True, dtype="stage", flip: bool = True) -> float:
    """Forward passes per second on an in-memory batch. ``dtype="stage"``: what the embed
    stage uses (fp16 autocast on CUDA, fp32 elsewhere); None: fp32."""
    if dtype == "stage":
        dtype = torch.float16 if device.startswith("cuda") else None
    module = encoder.module.to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    module = module.to(memory_format=torch.channels_last if channels_last
                       else torch.contiguous_format)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        def step():
            with torch.autocast(device.split(":")[0], dtype=dtype or torch.float32,
                                enabled=dtype is not None):
                encoder.forward(x)
                if flip:
                    encoder.forward(torch.flip(x, dims=[3]))
        step()  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(n_batches):
            step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return batch * n_batches / (time.perf_counter() - t)


def main() -> None:
    from dqaudit.embed import (
        DEFAULT_ENCODER,
        auto_image_size,
        default_batch_size,
        embed_images,
        load_encoder,
    )
    from dqaudit.io.ingest import median_image_side

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000, help="images for the stage measurement")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default=None, help="encoder [default: dqaudit's default]")
    ap.add_argument("--repeat", type=int, default=1,
                    help="embed the --n images this many times (cache off): longer stage runs")
    ap.add_argument("--workers", type=int, nargs="*", default=None,
                    help="decode worker counts to time the stage with [default: by device]")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    paths = list(common.cifar10n_table()["path"])[: args.n] * args.repeat
    batch = default_batch_size(args.device)
    args.model = args.model or DEFAULT_ENCODER
    # as `dqaudit scan` picks it
    size = auto_image_size(args.model, median_image_side(paths, seed=0))
    enc = load_encoder(args.model, image_size=size)
    size = enc.preprocessing.image_size
    n_batches = max(30 if args.device.startswith("cuda") else 3, args.n // batch // 2)
    out = {"device": args.device, "model": args.model, "image_size": size, "batch_size": batch,
           "threads": torch.get_num_threads()}
    if args.device.startswith("cuda"):  # CUDA context and cuDNN's kernels load outside timing
        embed_images(paths[:1024], model=enc, device=args.device, use_cache=False,
                     progress=False)
    stage = {}
    for workers in args.workers or [None]:
        res = embed_images(paths, model=enc, device=args.device, use_cache=False,
                           progress=False, num_workers=workers)
        stage[res.info["num_workers"]] = res.info["images_per_second"]
        print(f"stage, {len(paths)} images, {res.info['num_workers']} decode workers: "
              f"{res.info['images_per_second']} img/s", flush=True)
    out["stage_by_workers"] = stage
    out["stage_images_per_second"] = max(stage.values())
    out["raw_images_per_second"] = round(raw_rate(enc, size=size, batch=batch,
                                                  n_batches=n_batches, device=args.device), 1)
    out["stage_over_raw"] = round(out["stage_images_per_second"] / out["raw_images_per_second"],
                                  3)
    print(f"stage {out['stage_images_per_second']} img/s, raw forward "
          f"{out['raw_images_per_second']} img/s, ratio {out['stage_over_raw']}", flush=True)
    variants = {}
    for name, kw in {
        "contiguous (NCHW)": dict(channels_last=False),
        "channels_last (default)": dict(),
        "no flip TTA": dict(flip=False),
        **({"fp32 (no autocast)": dict(dtype=None)} if args.device.startswith("cuda") else {}),
        "bf16 autocast": dict(dtype=torch.bfloat16),
        f"{size}px -> 224px": dict(size=224),
    }.items():
        kw.setdefault("size", size)
        variants[name] = round(raw_rate(enc, batch=batch, n_batches=n_batches,
                                        device=args.device, **kw), 1)
        print(f"  raw {name:26s} {variants[name]:8.1f} img/s", flush=True)
    if args.device == "cpu":
        torch.set_num_threads(1)
        variants["1 thread"] = round(raw_rate(enc, size=size, batch=batch, n_batches=n_batches,
                                              device=args.device), 1)
        print(f"  raw {'1 thread':26s} {variants['1 thread']:8.1f} img/s")
    out["raw_variants"] = variants
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
