"""Cross-fitted fine-tuning on the benchmark data: out-of-fold posteriors saved for evaluation.

Computes `scoring.finetune.finetune_posteriors` (the default encoder, the audit's fold split:
`posteriors.stratified_folds(labels, seed=0)`) for each CIFAR-10N noise set, for the initial
labels of CIFAR-10H cleaning-simulation seeds (`simulation.initial_labels`), and for stratified
subsets of CIFAR-10N aggre (where fine-tuning starts to pay), and writes each as an .npz
(`probs`, `rows`, `info`). The scores, flags and cleanlab comparisons are computed from these
files on any machine by `detect_quality.py --finetuned DIR` and `cleaning_efficiency.py
--finetuned DIR`; this script is the part that wants a GPU.

    python benchmarks/finetune_posteriors.py --out DIR [--device cuda] [--train auto]
        [--sets aggre worst random1 random2 random3] [--cifar10h-seeds 0] [--subsets 1000 2500]
        [--deadline SECONDS]

Steps run in the order given and stop starting new ones after --deadline seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import common
import numpy as np


def main() -> None:
    from dqaudit.dataset import one_hot
    from dqaudit.devices import resolve_device
    from dqaudit.embed.encoders import DEFAULT_ENCODER, SMALL_IMAGE_INPUT
    from dqaudit.scoring.finetune import FinetuneConfig, finetune_posteriors
    from dqaudit.scoring.finetune_net import decode_images
    from dqaudit.scoring.posteriors import stratified_folds
    from dqaudit.workflows.simulation import initial_labels

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--train", default="auto")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--sets", nargs="*", default=common.NOISE_SETS)
    ap.add_argument("--cifar10h-seeds", type=int, nargs="*", default=[0])
    ap.add_argument("--subsets", type=int, nargs="*", default=[])
    ap.add_argument("--limit", type=int, default=None, help="first N images only (smoke test)")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--deadline", type=float, default=1e9)
    ap.add_argument("--checkpoints", default=None, metavar="DIR",
                    help="keep each finished fold here (a killed run resumes; partial runs "
                         "can be scored fold by fold)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    config = FinetuneConfig(train=args.train, **({"epochs": args.epochs} if args.epochs else {}))
    size = SMALL_IMAGE_INPUT  # CIFAR's 32 px images: the scan's input size for them
    log = {"device": device, "config": config.__dict__, "steps": []}

    def run(name, images, labels, rows, *, counts=None):
        if time.perf_counter() - t_start > args.deadline:
            print(f"skip {name}: past the deadline", flush=True)
            return
        t = time.perf_counter()
        counts = one_hot(labels, 10) if counts is None else counts
        folds = stratified_folds(labels, n_folds=5, seed=0)
        res = finetune_posteriors(images, counts, folds, encoder=DEFAULT_ENCODER, config=config,
                                  device=device, seed=0, progress=True,
                                  checkpoint_dir=args.checkpoints)
        seconds = time.perf_counter() - t
        res.info["wall_seconds"] = round(seconds, 1)
        np.savez(out / f"{name}.npz", probs=res.probs.astype(np.float32), rows=rows,
                 info=json.dumps(res.info))
        acc = float((res.probs.argmax(1) == labels).mean())
        print(f"{name}: {seconds:.0f}s, agreement with given labels {acc:.3f}, epochs "
              f"{res.info['epochs_chosen']}", flush=True)
        log["steps"].append({"name": name, "seconds": round(seconds, 1), "agreement": acc})
        (out / "finetune_log.json").write_text(json.dumps(log, indent=1))

    df = common.cifar10n_table()
    if args.limit:
        df = df.iloc[:args.limit]
    t = time.perf_counter()
    images = decode_images(list(df["path"]), image_size=size, num_workers=args.workers)
    log["decode_seconds"] = round(time.perf_counter() - t, 1)
    print(f"decoded {len(images)} CIFAR-10N images in {log['decode_seconds']}s", flush=True)
    index = {c: i for i, c in enumerate(common.CLASSES)}
    all_rows = np.arange(len(df))
    for ns in args.sets:
        run(f"cifar10n_{ns}", images, np.array([index[v] for v in df[ns]]), all_rows)
    if args.cifar10h_seeds:
        dh = common.cifar10h_table()
        if args.limit:
            dh = dh.iloc[:args.limit]
        images_h = decode_images(list(dh["path"]), image_size=size, num_workers=args.workers)
        dist = dh[[f"n_{c}" for c in common.CLASSES]].to_numpy(dtype=np.float64)
        for seed in args.cifar10h_seeds:
            initial = initial_labels(dist / dist.sum(1, keepdims=True), noise_rate=0.15,
                                     seed=seed)
            run(f"cifar10h_seed{seed}", images_h, initial, np.arange(len(dh)))
    for n_sub in args.subsets:
        labels = np.array([index[v] for v in df["aggre"]])
        rng = np.random.default_rng(n_sub)
        rows = np.sort(np.concatenate([
            rng.choice(np.flatnonzero(labels == c), size=n_sub // 10, replace=False)
            for c in range(10)]))
        run(f"subset{n_sub}_aggre", images[rows], labels[rows], rows)
    log["total_seconds"] = round(time.perf_counter() - t_start, 1)
    (out / "finetune_log.json").write_text(json.dumps(log, indent=1))


if __name__ == "__main__":
    main()
