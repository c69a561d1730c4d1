"""Verified noise rate: the stratified verification design against simple random sampling.

For the 8 CIFAR-10N cases of clr_accuracy.py, the person who checks a label is simulated by
the clean label. For each n, `--draws` independent samples are drawn with dqaudit's design
(strata by the calibrated label_error_probability, Neyman allocation with a proportional
share; `dqaudit verify`) and estimated with each estimator, and as many simple random samples
of the same n with a Wilson interval. Per case and n: coverage of the 95% interval, mean
absolute error, median half-width, and the n each design needs for a half-width of 2 points
(from the median half-width at the largest n, scaled as 1 / sqrt(n)).

    .venv/bin/python benchmarks/clr_verified.py [--draws 500] [--json out.json]
"""

from __future__ import annotations

import argparse
import json

import common
import numpy as np
from scipy import stats

from dqaudit.estimates import survey

SIZES = (100, 200, 400, 800)


def wilson(x: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    p = x / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def run_case(q, errors, *, draws: int, sizes=SIZES) -> dict:
    truth = float(errors.mean())
    strata = survey.assign_strata(q, survey.strata_cuts(q))
    h = int(strata.max()) + 1
    n_all = np.bincount(strata, minlength=h)
    sd = survey.stratum_model_sd(q, strata, h)
    q_means = np.bincount(strata, weights=q, minlength=h) / n_all
    y_all = errors.astype(np.int64)
    out = {"truth": truth, "n_strata": h, "by_n": {}}
    for n in sizes:
        alloc = survey.allocate(n_all, sd, n)
        res = {e: {"est": [], "lo": [], "hi": []} for e in (*survey.ESTIMATORS, "srs_wilson")}
        rng = np.random.default_rng(n)
        for d in range(draws):
            s = survey.draw(strata, alloc, seed=d)
            for e in survey.ESTIMATORS:
                r = survey.estimate_rate(y_all[s], strata[s], n_all, estimator=e,
                                         q_sample=q[s], q_means=q_means)
                res[e]["est"].append(r.estimate)
                res[e]["lo"].append(r.ci_low)
                res[e]["hi"].append(r.ci_high)
            pick = rng.choice(len(q), size=n, replace=False)
            x = int(y_all[pick].sum())
            lo, hi = wilson(x, n)
            res["srs_wilson"]["est"].append(x / n)
            res["srs_wilson"]["lo"].append(lo)
            res["srs_wilson"]["hi"].append(hi)
        row = {}
        for e, v in res.items():
            est, lo, hi = (np.array(v[k]) for k in ("est", "lo", "hi"))
            row[e] = {"coverage": round(float(((lo <= truth) & (truth <= hi)).mean()), 3),
                      "mae": round(float(np.abs(est - truth).mean()), 4),
                      "median_half_width": round(float(np.median((hi - lo) / 2)), 4),
                      "mean_upper": round(float(hi.mean()), 4)}
        out["by_n"][n] = row
    big = max(sizes)
    out["n_for_2pt"] = {e: int(np.ceil(big * (out["by_n"][big][e]["median_half_width"] / 0.02)
                                       ** 2)) for e in out["by_n"][big]}
    return out


def zero_error_bound(q, n: int = 150) -> dict:
    """Upper bound from n verified samples with no error found, for the design and SRS."""
    strata = survey.assign_strata(q, survey.strata_cuts(q))
    h = int(strata.max()) + 1
    sizes = np.bincount(strata, minlength=h)
    alloc = survey.allocate(sizes, survey.stratum_model_sd(q, strata, h), n)
    return {"design": round(survey.zero_error_upper_bound(sizes, alloc), 4),
            "srs_exact": round(float(1 - 0.05 ** (1 / n)), 4),
            "srs_clopper_pearson_two_sided": round(float(stats.beta.ppf(0.975, 1, n)), 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    results = {}
    for name, case in common.scored_cases().items():
        q = case["label_error_probability"]
        r = run_case(q, case["errors"], draws=args.draws)
        r["zero_error_bound_150"] = zero_error_bound(q)
        results[name] = r
        print(f"## {name}: truth {100 * r['truth']:.1f}%, {r['n_strata']} strata, "
              f"n for +-2 points: " + ", ".join(f"{k} {v}" for k, v in r["n_for_2pt"].items()))
        print("| n | estimator | coverage | MAE (pt) | median half-width (pt) |")
        print("|---|---|---|---|---|")
        for n, row in r["by_n"].items():
            for e, m in row.items():
                print(f"| {n} | {e} | {m['coverage']:.3f} | {100 * m['mae']:.2f} | "
                      f"{100 * m['median_half_width']:.2f} |")
        print(f"zero errors in 150: {r['zero_error_bound_150']}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
