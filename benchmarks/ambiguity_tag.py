"""The `ambiguous` tag against human disagreement (CIFAR-10H: about 51 annotators per image).

A sample is *humanly ambiguous* when the annotators' most chosen class has less than
`--agree` of their votes (default 0.8): one look by one person is then unlikely to settle its
label. The audit is run as `dqaudit scan` runs it (linear posteriors on the default encoder)
with each image's majority label as the given label. For each rule, the share of samples it
tags and its precision and recall for humanly ambiguous images:

- the current rule: normalised posterior entropy >= 0.5 (`scoring.AMBIGUITY_THRESHOLD`);
- the same entropy at other thresholds;
- the posterior's top-two margin (p1 - p2) below a threshold.

    .venv/bin/python benchmarks/ambiguity_tag.py [--agree 0.8] [--json out.json]
"""

from __future__ import annotations

import argparse

import common
import numpy as np


def main() -> None:
    from dqaudit.scoring import scores
    from dqaudit.scoring.table import score_dataset

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agree", type=float, default=0.8)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    h = common.cifar10h_table()
    cols = [f"n_{c}" for c in common.CLASSES]
    votes = h[cols].to_numpy(dtype=np.float64)
    share = votes / votes.sum(axis=1, keepdims=True)
    ambiguous = share.max(axis=1) < args.agree
    majority = share.argmax(axis=1)
    emb = common.embed(list(h["path"]))
    data = common.labeled_images(h["path"], [common.CLASSES[i] for i in majority])
    scored = score_dataset(data, emb, method="linear", seed=0)
    p = scored.probs
    c = p.shape[1]
    entropy = -(p * np.log(np.clip(p, 1e-12, 1))).sum(axis=1) / np.log(c)
    margin = scores.top_two_margin(p)  # the shipped rule's own measure
    rules = {f"entropy >= {t}": entropy >= t for t in (0.3, 0.4, 0.5, 0.6)}
    rules.update({f"margin < {t}": margin < t for t in (0.1, 0.2, 0.3, 0.5)})
    result = {"n": len(h), "agree": args.agree, "humanly_ambiguous": float(ambiguous.mean()),
              "rules": {}}
    for name, tag in rules.items():
        tp = float((tag & ambiguous).sum())
        result["rules"][name] = {
            "tagged": round(float(tag.mean()), 4),
            "precision": round(tp / max(tag.sum(), 1), 4),
            "recall": round(tp / max(ambiguous.sum(), 1), 4)}
        r = result["rules"][name]
        print(f"{name:16s} tags {100 * r['tagged']:5.1f}%  precision {r['precision']:.3f}  "
              f"recall {r['recall']:.3f}")
    print(f"humanly ambiguous (top class < {args.agree:.0%} of votes): "
          f"{100 * ambiguous.mean():.1f}%")
    common.report(result, args.json)


if __name__ == "__main__":
    main()
