"""The review order: errors found per review, `review_score` against `noisiness`.

On the 8 CIFAR-10N cases of clr_accuracy.py (one given label per image; a reviewer who looks at
an image gives its right label, so one review fixes one wrong label), scored as `dqaudit scan`
scores them (common.scored_cases): the true errors among the first k samples of each order, for
k = 100, 300, 10% of N and the number of true errors.

    .venv/bin/python benchmarks/review_order.py [--json out.json]
"""

from __future__ import annotations

import argparse

import common
import numpy as np

ORDERS = ("review_score", "noisiness", "label_error_probability")


def found(score: np.ndarray, errors: np.ndarray, k: int) -> int:
    top = np.argsort(-score, kind="stable")[:k]
    return int(errors[top].sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    cases = common.scored_cases()
    result = {}
    for name, case in cases.items():
        errors = case["errors"].astype(bool)
        n = len(errors)
        ks = {"100": 100, "300": 300, "10%": n // 10, "n_errors": int(errors.sum())}
        result[name] = {"n_errors": int(errors.sum()), **{
            order: {label: found(case[order], errors, k) for label, k in ks.items() if k > 0}
            for order in ORDERS}}
        row = "  ".join(f"{o}: " + " / ".join(str(v) for v in result[name][o].values())
                        for o in ORDERS)
        print(f"{name:22s} errors {errors.sum():5d}  {row}")
    common.report(result, args.json)


if __name__ == "__main__":
    main()
