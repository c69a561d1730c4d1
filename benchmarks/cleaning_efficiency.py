"""Cleaning efficiency on CIFAR-10H: dqaudit's selectors against random and oracle review.

Builds a manifest with the n_<class> count columns of ../shared/data/cifar10h and runs the same
code as `dqaudit simulate` (15% initial noise, 5 seeds, refit every 100 re-annotations).

    .venv/bin/python benchmarks/cleaning_efficiency.py [--seeds 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import common


def main() -> None:
    from dqaudit.workflows.simulation import DEFAULT_SELECTORS, simulate_manifest

    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--noise-rate", type=float, default=0.15)
    ap.add_argument("--refit-every", type=int, default=100)
    ap.add_argument("--selectors", nargs="+", default=None,
                    help="selectors to run [default: all]; keep random and oracle for the AUC")
    ap.add_argument("--out", default=None)
    ap.add_argument("--model", default=None, help="encoder [default: dqaudit's default]")
    args = ap.parse_args()
    h = common.cifar10h_table()
    cols = [c for c in h.columns if c.startswith("n_")]
    out = Path(args.out or tempfile.mkdtemp(prefix="dq-sim-"))
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "cifar10h.csv"
    h[["path", *cols]].to_csv(manifest, index=False)
    t = time.perf_counter()
    res = simulate_manifest(manifest, out, noise_rate=args.noise_rate, seeds=args.seeds,
                            refit_every=args.refit_every, device="cpu", progress=print,
                            **({"model": args.model} if args.model else {}),
                            selectors=args.selectors or DEFAULT_SELECTORS)
    print(f"\n{args.seeds} seeds in {time.perf_counter() - t:.0f}s; initial correct "
          f"{res['initial_correct']:.3f}; results in {out}")
    rnd = res["selectors"]["random"]["reannotations_to_90"]
    print("| selector | re-annotations to 90% | to 95% | vs random (90%) | normalised AUC |")
    print("|---|---|---|---|---|")
    for name, e in res["selectors"].items():
        ratio = (f"{rnd / e['reannotations_to_90']:.2f}x fewer"
                 if rnd and e["reannotations_to_90"] else "n/a")
        print(f"| {name} | {e['reannotations_to_90']} | {e['reannotations_to_95']} | {ratio} | "
              f"{e['auc_normalized']} |")


if __name__ == "__main__":
    main()
