"""`dqaudit evaluate`: models' accuracy under label noise, against models whose truth is known.

CIFAR-10N (5,000 images) with one annotator's labels (random1/2/3: 17.6-19.0% wrong), split at
random into 4,000 train and 1,000 test, audited as `dqaudit scan` audits it (Audit.from_arrays
on the cached embeddings, the default config: probes, calibration, CLR range). Simulated models
predict the test split, their true accuracy known from the clean labels:

- ``indep80``: right with probability 0.80, else a uniformly chosen wrong class;
- ``shares77``: repeats the annotator's wrong label on 70% of the wrongly labelled images (a
  model trained on the same annotators' labels), right on the rest at the rate that makes its
  true accuracy 0.77: 3 points worse than ``indep80``, but it reads better on the given labels;
- ``confused85``: right with probability 0.85, its errors in the class the annotators confuse
  most with the true one (cat/dog, truck/automobile).

Measured: ``observed_accuracy`` against the exact agreement; whether the gold-free range holds
the true accuracy; then for ``--draws`` verification samples of ``--n`` labels drawn inside the
test split (`dqaudit verify --split test`, the person simulated by the clean label), the 95%
interval's coverage and half-width per estimator, against simple random sampling of the same n
(Wilson interval; with the finite-population correction its half-width is about 3.8 points at
300 of 1,000), and whether the corrected paired difference ranks indep80 above shares77.

    .venv/bin/python benchmarks/evaluate_accuracy.py [--noise random1 random2 random3]
        [--draws 200] [--n 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import common
import numpy as np
import pandas as pd

from dqaudit.api import Audit
from dqaudit.config import AuditConfig, ReportConfig
from dqaudit.io import outputs
from dqaudit.workflows import evaluate as ev
from dqaudit.workflows import verify


def models(clean: np.ndarray, noisy: np.ndarray, *, seed: int) -> dict[str, np.ndarray]:
    """Predictions with exactly the stated true accuracies (counts, not coin flips, so two
    models are exactly 3 points apart)."""
    rng = np.random.default_rng(seed)
    n, c = len(clean), len(common.CLASSES)

    def exactly(share: float, among: np.ndarray) -> np.ndarray:
        """A mask of round(share * n) samples drawn from ``among``."""
        pick = np.zeros(n, dtype=bool)
        pick[rng.choice(np.flatnonzero(among), size=int(round(share * n)), replace=False)] = True
        return pick

    def wrong_class(true):
        return (true + rng.integers(1, c, size=len(true))) % c

    out = {}
    right = exactly(0.80, np.ones(n, dtype=bool))
    out["indep80"] = np.where(right, clean, wrong_class(clean))
    wrong_label = noisy != clean
    copy = np.zeros(n, dtype=bool)
    copy[rng.choice(np.flatnonzero(wrong_label), size=int(round(0.7 * wrong_label.sum())),
                    replace=False)] = True
    right = exactly(0.77, ~copy)
    out["shares77"] = np.where(copy, noisy, np.where(right, clean, wrong_class(clean)))
    confusion = np.zeros((c, c))
    np.add.at(confusion, (clean[wrong_label], noisy[wrong_label]), 1)
    np.fill_diagonal(confusion, -1)
    most = confusion.argmax(axis=1)
    right = exactly(0.85, np.ones(n, dtype=bool))
    out["confused85"] = np.where(right, clean, most[clean])
    return out


def wilson_half(p: float, n: int, N: int, z: float = 1.959964) -> float:
    fpc = 1 - n / N
    return z * np.sqrt(p * (1 - p) / n * fpc)


def run(noise: str, *, draws: int, n: int, seed: int, work: Path) -> dict:
    df = common.cifar10n_table()
    emb = common.embed(list(df["path"]))
    clean = np.array([common.CLASSES.index(v) for v in df["clean"]])
    noisy = np.array([common.CLASSES.index(v) for v in df[noise]])
    rng = np.random.default_rng(seed)
    test = np.zeros(len(df), dtype=bool)
    test[rng.choice(len(df), size=1000, replace=False)] = True
    ids = [f"{i:05d}" for i in range(len(df))]
    out = work / f"audit-{noise}-{seed}"
    if not (out / outputs.SUMMARY_JSON).exists():
        Audit.from_arrays([common.CLASSES[i] for i in noisy], embeddings=emb,
                          classes=common.CLASSES, ids=ids, paths=list(df["path"]),
                          splits=np.where(test, "test", "train"), out_dir=out,
                          config=AuditConfig(report=ReportConfig(enabled=False)))
    preds = models(clean[test], noisy[test], seed=seed)
    test_ids = np.array(ids)[test]
    tables = {m: pd.DataFrame({"id": test_ids, "predicted": [common.CLASSES[i] for i in p]})
              for m, p in preds.items()}
    true_acc = {m: float((p == clean[test]).mean()) for m, p in preds.items()}
    exact_obs = {m: float((p == noisy[test]).mean()) for m, p in preds.items()}
    audit = Audit.load(out)  # its values; the draws below change only the verification files
    values = {"samples": audit.samples, "summary": audit.summary, "probs": audit.probs,
              "changelog": audit.changelog}
    base = ev.evaluate(tables, split="test", frame=None, sample=None, **values)
    gold = {m["name"]: m["gold_free"] for m in base["models"]}
    observed = {m["name"]: m["observed_accuracy"] for m in base["models"]}
    result = {"noise": noise, "seed": seed, "true_noise_rate_test": float(
        (noisy[test] != clean[test]).mean()), "true_accuracy": true_acc,
        "observed_accuracy": observed,
        "observed_exact": all(abs(observed[m] - exact_obs[m]) < 1e-4 for m in preds),
        "gold_free": gold,
        "gold_free_contains_truth": {m: gold[m]["low"] <= true_acc[m] <= gold[m]["high"]
                                     for m in preds},
        "gold_free_error": {m: round(gold[m]["estimate"] - true_acc[m], 4) for m in preds},
        "srs_half_width": {m: round(wilson_half(true_acc[m], n, 1000), 4) for m in preds}}
    truth_by_id = dict(zip(ids, [common.CLASSES[i] for i in clean]))
    per_est = {}
    for estimator in ("stratified", "difference", "regression"):
        per_est[estimator] = {m: {"cover": [], "half": [], "err": []} for m in preds}
        per_est[estimator]["pair"] = {"right_order": [], "sure": [], "cover": [],
                                      "half": []}
    for d in range(draws):
        summary = {k: v for k, v in audit.summary.items() if k != "verification"}
        drawn = verify.draw_sample(samples=audit.samples, summary=summary, probs=audit.probs,
                                   frame=None, sample=None, size=n, seed=1000 * seed + d,
                                   uniform_share=audit.config.verify.uniform_share,
                                   split="test", half_width=None)
        sample = drawn["sample"]
        sample["verified_label"] = [truth_by_id[i] for i in sample["id"]]
        summary["verification"] = drawn["design"]
        for estimator in per_est:
            ev.ESTIMATOR = estimator
            block = ev.evaluate(tables, split="test", frame=drawn["frame"], sample=sample,
                                **{**values, "summary": summary})
            for m in block["models"]:
                a = m["accuracy"]
                r = per_est[estimator][m["name"]]
                r["cover"].append(a["ci_low"] <= true_acc[m["name"]] <= a["ci_high"])
                r["half"].append((a["ci_high"] - a["ci_low"]) / 2)
                r["err"].append(a["estimate"] - true_acc[m["name"]])
            pair = next(p for p in block["pairs"] if {p["a"], p["b"]} == {"indep80", "shares77"})
            sign = 1 if pair["a"] == "indep80" else -1
            true_diff = true_acc["indep80"] - true_acc["shares77"]
            r = per_est[estimator]["pair"]
            r["right_order"].append(sign * pair["difference"] > 0)
            r["sure"].append(pair["ci_low"] > 0 if sign > 0 else pair["ci_high"] < 0)
            r["cover"].append(pair["ci_low"] <= sign * true_diff <= pair["ci_high"])
            r["half"].append((pair["ci_high"] - pair["ci_low"]) / 2)
    ev.ESTIMATOR = "difference"
    result["verified"] = {
        e: {m: ({"coverage": round(float(np.mean(r["cover"])), 3),
                 "median_half_width": round(float(np.median(r["half"])), 4),
                 "mean_abs_error": round(float(np.mean(np.abs(r["err"]))), 4)}
                if m != "pair" else
                {"ranks_right": round(float(np.mean(r["right_order"])), 3),
                 "ranks_right_and_sure": round(float(np.mean(r["sure"])), 3),
                 "coverage": round(float(np.mean(r["cover"])), 3),
                 "median_half_width": round(float(np.median(r["half"])), 4)})
            for m, r in per.items()}
        for e, per in per_est.items()}
    result["given_labels_rank_wrongly"] = observed["shares77"] > observed["indep80"]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--noise", nargs="+", default=["random1", "random2", "random3"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    # the audits (probes, calibration, CLR: minutes each) are kept between runs
    work = Path(os.environ.get("DQAUDIT_BENCH_CACHE", Path.home() / ".cache" / "dqaudit" /
                               "bench")) / "evaluate"
    results = [run(noise, draws=args.draws, n=args.n, seed=s, work=work)
               for noise in args.noise for s in args.seeds]
    common.report({"n": args.n, "draws": args.draws, "cases": results}, args.json)


if __name__ == "__main__":
    main()
