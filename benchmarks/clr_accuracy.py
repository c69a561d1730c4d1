"""CLR estimation error on CIFAR-10N: 8 cases with known truth, beside cleanlab's count.

The gold-free bracket (`bracket_low`, `bracket_high`, dqaudit/clr.py `bracket`) is reported
beside it: whether it contains the truth, and its width.

Cases: clean labels, clean + 5% and + 20% uniform flips, aggre, random1, random2, random3,
worst. dqaudit's estimate and 95% interval come from the default protocol (uniform injection,
10 ratios x 20 repeats); cleanlab's `num_label_issues` runs on the out-of-fold probabilities of
a logistic regression on the same embeddings.

    .venv/bin/python benchmarks/clr_accuracy.py [--repeats 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json

import common
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict


def cases(df, clean, seed=5):
    rng = np.random.default_rng(seed)
    out = {"clean": clean.copy()}
    for rate in (0.05, 0.20):
        y = clean.copy()
        flip = rng.choice(len(y), int(rate * len(y)), replace=False)
        y[flip] = (y[flip] + rng.integers(1, 10, len(flip))) % 10
        out[f"clean+{int(rate * 100)}% uniform"] = y
    for ns in common.NOISE_SETS:
        out[ns] = np.array([common.CLASSES.index(c) for c in df[ns]])
    return out


def main() -> None:
    from cleanlab.count import num_label_issues

    from dqaudit.estimates.clr import ClrConfig, estimate_clr
    from dqaudit.scoring.probes import project

    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", default=None)
    ap.add_argument("--model", default=None, help="encoder [default: dqaudit's default]")
    ap.add_argument("--embeddings", default=None,
                    help=".npy of CIFAR-10N embeddings in labels.csv order (instead of --model), "
                         "e.g. from domain_encoder.py")
    ap.add_argument("--cases", nargs="+", default=None, help="only these cases")
    args = ap.parse_args()
    df = common.cifar10n_table()
    if args.embeddings:
        emb = np.load(args.embeddings).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        assert len(emb) == len(df), (emb.shape, len(df))
    else:
        emb = common.embed(list(df["path"]), model=args.model)
    x = project(emb, seed=0)
    clean = np.array([common.CLASSES.index(c) for c in df["clean"]])
    scored = common.scored_cases()
    rows = {}
    print("| case | truth | dqaudit estimate [95% CI] | error | covered | bracket | in bracket "
          "| width | cleanlab count | error | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, y in cases(df, clean).items():
        if args.cases and name not in args.cases:
            continue
        truth = float((y != clean).mean())
        # the posteriors the scan hands to CLR (they draw the bracket's posterior-mode flips)
        probs = scored[name]["probs"]
        res = estimate_clr(x, y, 10, config=ClrConfig(repeats=args.repeats), seed=0,
                           device="cpu", probs=probs)
        lr = cross_val_predict(LogisticRegression(max_iter=1000), emb, y, cv=5,
                               method="predict_proba")
        cl = num_label_issues(y, lr) / len(y)
        covered = res["ci_low"] <= truth <= res["ci_high"]
        in_bracket = res["bracket_low"] <= truth <= res["bracket_high"]
        rows[name] = {"truth": truth, "estimate": res["estimate"], "ci_low": res["ci_low"],
                      "ci_high": res["ci_high"], "covered": covered, "cleanlab": cl,
                      "bracket_low": res["bracket_low"], "bracket_high": res["bracket_high"],
                      "in_bracket": in_bracket, "seconds": res["seconds"]["total"]}
        print(f"| {name} | {100 * truth:.1f}% | {100 * res['estimate']:.1f}% "
              f"[{100 * res['ci_low']:.1f}, {100 * res['ci_high']:.1f}] | "
              f"{100 * (res['estimate'] - truth):+.1f} pt | {'yes' if covered else 'no'} | "
              f"{100 * res['bracket_low']:.1f}-{100 * res['bracket_high']:.1f}% | "
              f"{'yes' if in_bracket else 'no'} | "
              f"{100 * (res['bracket_high'] - res['bracket_low']):.1f} pt | "
              f"{100 * cl:.1f}% | {100 * (cl - truth):+.1f} pt | {res['seconds']['total']:.0f} |",
              flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
