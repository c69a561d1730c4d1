"""A stronger, domain-adapted encoder for the CLR benchmark (run by hand, on a GPU).

Issue #4's estimator reads noise with a count whose floor on clean labels is the encoder's
own confident mistakes; that floor fell with every stronger encoder measured, and stronger
pretrained weights (open_clip) cannot be downloaded on the machines this project is built on.
As a proxy for such an encoder this script fine-tunes the packaged ImageNet EfficientNet-Lite2
on the 5,000 CIFAR-10H images (CIFAR-10 *test* images with their true labels: disjoint from
the CIFAR-10N training images that the benchmark audits, whose labels it never sees), and
writes the CIFAR-10N embeddings (head features, flip TTA, L2-normalised, float16, rows in
labels.csv order) after several epochs, so that the benchmark can be re-run on encoders of
increasing strength:

    .venv/bin/python benchmarks/domain_encoder.py --pack --data cifar.npz   # here: the images
    PYTHONPATH=. python3 benchmarks/domain_encoder.py --data cifar.npz --out DIR   # on a GPU
    .venv/bin/python benchmarks/clr_accuracy.py --embeddings DIR/emb_e20.npy

``cifar.npz`` holds ``xn`` (CIFAR-10N images, labels.csv order), ``xh`` and ``yh`` (CIFAR-10H
images and true labels), uint8 (N, 32, 32, 3). The log's ``val_accuracy`` is the fine-tuned
classifier head's on 500 held-out CIFAR-10H images (no flip TTA); the embeddings' linear-probe
accuracy is measured on the CPU side (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def pack(path: str) -> None:
    """Write the images of ../shared/data into one npz (to carry to the GPU machine)."""
    import common
    from PIL import Image

    n, h = common.cifar10n_table(), common.cifar10h_table()

    def load(paths):
        return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])

    np.savez_compressed(path, xn=load(n["path"]), xh=load(h["path"]),
                        yh=np.array([common.CLASSES.index(c) for c in h["true"]]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="npz of images (see --pack)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--pack", action="store_true", help="write --data from ../shared/data")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--save-at", type=int, nargs="+", default=[0, 2, 6, 20])
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--val", type=int, default=500, help="CIFAR-10H images held out")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--limit", type=int, default=None,
                    help="first N images of each set (smoke test)")
    args = ap.parse_args()
    if args.pack:
        pack(args.data)
        return

    import torch
    import torch.nn.functional as F

    from dqaudit.embed.encoders import build_lite

    torch.manual_seed(0)
    dev = args.device
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    d = np.load(args.data)
    to_t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).contiguous().to(dev)  # noqa: E731
    lim = slice(0, args.limit)
    xn, xh = to_t(d["xn"][lim]), to_t(d["xh"][lim])
    yh = torch.from_numpy(d["yh"][lim]).to(dev)
    perm = torch.randperm(len(xh), generator=torch.Generator().manual_seed(0)).to(dev)
    val, tr = perm[: args.val], perm[args.val:]

    enc = build_lite(2, "head")  # the packaged ImageNet weights, as dqaudit loads them
    backbone = enc.module.to(dev).to(memory_format=torch.channels_last)
    head = torch.nn.Linear(backbone.num_features, 10).to(dev)

    def prep(x):  # uint8 (B, 3, 32, 32) -> normalised (B, 3, size, size), as the encoder expects
        x = F.interpolate(x.float() / 255.0, size=args.size, mode="bicubic", align_corners=False)
        return ((x - 0.5) / 0.5).contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def features(x):
        backbone.eval()
        rows = []
        for i in range(0, len(x), 500):
            b = prep(x[i:i + 500])
            with torch.autocast(dev, dtype=torch.bfloat16):
                f = backbone(b).float() + backbone(torch.flip(b, dims=[3])).float()
            rows.append(F.normalize(f, dim=1))
        return torch.cat(rows)

    @torch.no_grad()
    def val_accuracy():
        backbone.eval()
        with torch.autocast(dev, dtype=torch.bfloat16):
            logits = head(backbone(prep(xh[val])).float())
        return float((logits.argmax(1) == yh[val]).float().mean())

    def augment(x):  # random 4-px shifted crop (reflect padding) and horizontal flip
        b = x.shape[0]
        pad = F.pad(x.float(), (4, 4, 4, 4), mode="reflect")
        ox, oy = torch.randint(0, 9, (2,))
        x = pad[:, :, oy:oy + 32, ox:ox + 32]
        flip = torch.rand(b, device=x.device) < 0.5
        return torch.where(flip[:, None, None, None], torch.flip(x, dims=[3]), x)

    params = list(backbone.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = args.epochs * (len(tr) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=max(steps, 1),
                                                pct_start=0.15)
    log = {"size": args.size, "lr": args.lr, "batch": args.batch, "epochs": {}}

    def save(epoch):
        emb = features(xn).cpu().numpy().astype(np.float16)
        np.save(out / f"emb_e{epoch}.npy", emb)
        log["epochs"][epoch] = {"val_accuracy": val_accuracy() if epoch else None,
                                "seconds": round(time.perf_counter() - t0, 1)}
        print(f"epoch {epoch}: {log['epochs'][epoch]}", flush=True)

    t0 = time.perf_counter()
    if 0 in args.save_at:
        save(0)
    for epoch in range(1, args.epochs + 1):
        backbone.train()
        order = tr[torch.randperm(len(tr), device=dev)]
        for i in range(0, len(order) - args.batch + 1, args.batch):
            idx = order[i:i + args.batch]
            with torch.autocast(dev, dtype=torch.bfloat16):
                logits = head(backbone(prep(augment(xh[idx]))).float())
            loss = F.cross_entropy(logits, yh[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if epoch in args.save_at:
            save(epoch)
    (out / "log.json").write_text(json.dumps(log, indent=2))


if __name__ == "__main__":
    main()
