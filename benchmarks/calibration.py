"""Calibration of label_error_probability against label != clean, before and after.

For the 8 CIFAR-10N cases (clr_accuracy.py): ECE (10 equal-width bins) and the column's mean
against the true share wrong, for the raw score (given_label_disagreement, what the column was
before 2026-12), the shipped gold-free calibration (power) and the alternative measured
(prior_shift); then the verified re-fit on simulated verification samples of 200 and 400
drawn with dqaudit's design (mean and 90th percentile over --draws): weighted isotonic
regression (shipped) beside a weighted Platt fit shrunk towards the gold-free map (a ridge
worth 20 weighted observations). Detection AUROC / AUPRC of the gold-free column are those of
the raw score (a monotone map). Writes a reliability diagram (SVG).

    .venv/bin/python benchmarks/calibration.py [--draws 40] [--svg calibration.svg]
"""

from __future__ import annotations

import argparse
import json

import common
import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from dqaudit.estimates import survey
from dqaudit.scoring import calibration as cal


def reliability_svg(curves: dict, path: str, bins: int = 10) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), sharey=True)
    for ax, key in zip(axes, ("raw", "power")):
        ax.plot([0, 1], [0, 1], color="#999", lw=1, ls="--")
        for name, (q, y) in curves[key].items():
            idx = np.clip((q * bins).astype(int), 0, bins - 1)
            xs, ys = [], []
            for b in range(bins):
                m = idx == b
                if m.sum() >= 20:
                    xs.append(q[m].mean())
                    ys.append(y[m].mean())
            ax.plot(xs, ys, marker="o", ms=3, lw=1.2, label=name)
        ax.set_title({"raw": "before: 1 - p(given label)", "power": "after: calibrated"}[key])
        ax.set_xlabel("predicted P(label wrong)")
    axes[0].set_ylabel("observed share wrong (label != clean)")
    axes[1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, format="svg")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws", type=int, default=40)
    ap.add_argument("--svg", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows, curves = {}, {"raw": {}, "power": {}}
    print("| case | truth | mean raw / calibrated | ECE raw | ECE calibrated (power) | "
          "ECE prior shift | AUROC | AUPRC | ECE verified 200, isotonic (mean / p90) | "
          "verified 400 | Platt 200 | Platt 400 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, c in common.scored_cases().items():
        y = c["errors"].astype(float)
        raw, q = c["given_label_disagreement"], c["label_error_probability"]
        n_err = int(c["estimated_label_errors"])
        shift = cal.prior_shift(raw, n_err)
        r = {"truth": float(y.mean()), "mean_raw": float(raw.mean()), "mean": float(q.mean()),
             "ece_raw": cal.expected_calibration_error(raw, y),
             "ece": cal.expected_calibration_error(q, y),
             "ece_prior_shift": cal.expected_calibration_error(shift, y)}
        if 0 < y.mean():
            r["auroc"] = {"raw": roc_auc_score(y, raw), "calibrated": roc_auc_score(y, q)}
            r["auprc"] = {"raw": average_precision_score(y, raw),
                          "calibrated": average_precision_score(y, q)}
        strata = survey.assign_strata(q, survey.strata_cuts(q))
        h = int(strata.max()) + 1
        sizes = np.bincount(strata, minlength=h)
        sd = survey.stratum_model_sd(q, strata, h)
        for n in (200, 400):
            alloc = survey.allocate(sizes, sd, n)
            pi = (alloc / sizes)[strata]
            platt, iso = [], []
            for d in range(args.draws):
                s = survey.draw(strata, alloc, seed=d)
                a, b = cal.fit_platt(q[s], y[s], 1 / pi[s], ridge=20.0)
                platt.append(cal.expected_calibration_error(cal.apply_platt(q, a, b), y))
                fit = cal.fit_isotonic(q[s], y[s], 1 / pi[s])
                iso.append(cal.expected_calibration_error(cal.refit(q, fit), y))
            r[f"ece_verified_{n}"] = {"mean": float(np.mean(iso)),
                                      "p90": float(np.percentile(iso, 90))}
            r[f"ece_platt_{n}"] = {"mean": float(np.mean(platt)),
                                   "p90": float(np.percentile(platt, 90))}
        rows[name] = r
        curves["raw"][name], curves["power"][name] = (raw, y), (q, y)
        au = r.get("auroc", {}).get("calibrated")
        ap_ = r.get("auprc", {}).get("calibrated")
        print(f"| {name} | {100 * r['truth']:.1f}% | {100 * r['mean_raw']:.1f}% / "
              f"{100 * r['mean']:.1f}% | {r['ece_raw']:.3f} | {r['ece']:.3f} | "
              f"{r['ece_prior_shift']:.3f} | {'-' if au is None else f'{au:.4f}'} | "
              f"{'-' if ap_ is None else f'{ap_:.4f}'} | "
              f"{r['ece_verified_200']['mean']:.3f} / {r['ece_verified_200']['p90']:.3f} | "
              f"{r['ece_verified_400']['mean']:.3f} / {r['ece_verified_400']['p90']:.3f} | "
              f"{r['ece_platt_200']['mean']:.3f} | {r['ece_platt_400']['mean']:.3f} |",
              flush=True)
    if args.svg:
        reliability_svg(curves, args.svg)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
