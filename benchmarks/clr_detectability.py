"""How visible each CIFAR-10N label set's errors are to the CLR estimator's count.

Per case and encoder: the share of wrong labels (TP) and of correct labels (FP) that are
members of the confident joint off its diagonal (posterior of another class at or above that
class's threshold, the mean self-confidence of its samples, as ``scores.confident_joint``
counts them), from 3-fold out-of-fold posteriors of the CLR estimator's probe. Rows for the
default encoder's two networks alone, the default, an optional extra embedding file (e.g. from
``domain_encoder.py``) and for samples flagged by two encoders at once.

    .venv/bin/python benchmarks/clr_detectability.py [--extra emb_e20.npy]
"""

from __future__ import annotations

import argparse

import clr_accuracy
import common
import numpy as np

CASES = ["clean", "clean+20% uniform", "aggre", "random1", "worst"]
LITE0_DIM = 624  # the default lite0+lite2 embedding: lite0's stage features first


def members(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(N,) True where some other class's posterior reaches that class's threshold."""
    n, c = probs.shape
    thresholds = (np.bincount(labels, weights=probs[np.arange(n), labels], minlength=c)
                  / np.maximum(np.bincount(labels, minlength=c), 1))
    above = probs >= thresholds[None]
    above[np.arange(n), labels] = False
    return above.any(axis=1)


def main() -> None:
    from dqaudit.estimates.clr import ClrConfig, _oof_posteriors
    from dqaudit.scoring.probes import project

    ap = argparse.ArgumentParser()
    ap.add_argument("--extra", default=None, help=".npy of CIFAR-10N embeddings (labels.csv order)")
    args = ap.parse_args()
    df = common.cifar10n_table()
    clean = np.array([common.CLASSES.index(c) for c in df["clean"]])
    emb = common.embed(list(df["path"]))
    feats = {"lite0": emb[:, :LITE0_DIM], "lite2": emb[:, LITE0_DIM:], "lite0+lite2": emb}
    if args.extra:
        feats["extra"] = np.load(args.extra).astype(np.float32)
    cases = clr_accuracy.cases(df, clean)
    runs = np.stack([cases[name] for name in CASES])
    flagged = {}
    for name, e in feats.items():
        x = project(e / np.linalg.norm(e, axis=1, keepdims=True), seed=0)
        oof = _oof_posteriors(x, runs, 10, folds=3, config=ClrConfig().probe, seed=0,
                              device="cpu")
        flagged[name] = np.stack([members(runs[q], oof[q]) for q in range(len(CASES))])
    flagged["lite0 and lite2"] = flagged["lite0"] & flagged["lite2"]
    if args.extra:
        flagged["default and extra"] = flagged["lite0+lite2"] & flagged["extra"]
    print("| features | " + " | ".join(f"{c}: TP / FP" for c in CASES) + " |")
    print("|---|" + "---|" * len(CASES))
    for name, m in flagged.items():
        cells = []
        for q in range(len(CASES)):
            wrong = runs[q] != clean
            tp = f"{100 * m[q][wrong].mean():.1f}%" if wrong.any() else "-"
            cells.append(f"{tp} / {100 * m[q][~wrong].mean():.1f}%")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
