"""Speed of the CLR injection probes: all (ratio, repeat) probes as one batched problem against
the same probes trained one after another in a Python loop, in the same run. The default
(corrupted runs warm-started from the uncorrupted probe) is also timed against every probe
started from zero, with the largest difference in held-out accuracy between the two.

Synthetic 10k x 1280 embeddings (projected to 512-d as `dqaudit scan` does), 10 classes, the
default schedule (10 ratios x 20 repeats = 200 probes).

    .venv/bin/python benchmarks/clr_speed.py [--n 10000] [--device cpu] [--loop-probes 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    from dqaudit.estimates.clr import ClrConfig, injection_runs
    from dqaudit.scoring.probes import fit_probes, project

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--loop-probes", type=int, default=20,
                    help="probes timed in the loop (the loop total is extrapolated to 200)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(10, 1280))
    y = rng.integers(0, 10, args.n)
    emb = centers[y] + 3.0 * rng.normal(size=(args.n, 1280))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    x = project(emb.astype(np.float32), seed=0)
    from dataclasses import replace

    config = ClrConfig()
    if args.device.startswith("cuda"):  # CUDA context, cuBLAS and kernels load outside timing
        injection_runs(x[:1000], y[:1000], 10, config=replace(config, repeats=2), seed=1,
                       device=args.device)
    t = time.perf_counter()
    warm = injection_runs(x, y, 10, config=config, seed=0, device=args.device)
    batched = time.perf_counter() - t
    t = time.perf_counter()
    cold = injection_runs(x, y, 10, config=replace(config, warm_start_iter=None), seed=0,
                          device=args.device)
    batched_cold = time.perf_counter() - t
    diff = np.abs(warm["metrics"]["accuracy"] - cold["metrics"]["accuracy"])
    n_train = int(0.8 * args.n)
    targets = np.eye(10, dtype=np.float32)[y[:n_train]]
    t = time.perf_counter()
    for _ in range(args.loop_probes):
        fit_probes(x[:n_train], targets, np.ones((1, n_train), np.float32),
                   config=config.probe, device=args.device)
    loop = (time.perf_counter() - t) * 200 / args.loop_probes
    print(f"{args.n} samples, 200 probes on {args.device}: batched, warm-started (default) "
          f"{batched:.1f}s; batched from zero {batched_cold:.1f}s; one-by-one loop {loop:.1f}s "
          f"(extrapolated from {args.loop_probes}); speed-up {loop / batched:.1f}x; held-out "
          f"accuracy warm vs from zero: max |diff| {diff.max():.4f}, mean {diff.mean():.5f} "
          f"(one held-out sample = {1 / cold['n_heldout']:.4f})")


if __name__ == "__main__":
    main()
