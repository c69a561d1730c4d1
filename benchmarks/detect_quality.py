"""Detection quality on CIFAR-10N's real human label noise, against cleanlab on the same embeddings.

For each noise set (aggre, random1, random2, random3, worst) of ../shared/data/cifar10n:
AUROC and AUPRC of each ranking for "label != clean", precision / recall / F1 of the
`label_error` flag, the estimated against the true number of errors, and the enrichment of
label errors among the 10% most important samples. cleanlab runs on the out-of-fold
probabilities of a plain logistic regression on the same embeddings
(`find_label_issues` for the flag, `get_label_quality_scores` self-confidence for the ranking).

    .venv/bin/python benchmarks/detect_quality.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import common
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, precision_recall_fscore_support, roc_auc_score
from sklearn.model_selection import cross_val_predict


def flag_metrics(err, flags):
    p, r, f, _ = precision_recall_fscore_support(err, flags, average="binary", zero_division=0)
    return {"precision": round(p, 3), "recall": round(r, 3), "f1": round(f, 3),
            "n_flagged": int(flags.sum())}


def evaluate(data, clean, emb, *, method, pred_probs=None, cleanlab_probs=None):
    """One row of the table: our scores and flag (posteriors ``method``, or ``pred_probs``
    made by fine-tuning) and cleanlab's on ``cleanlab_probs`` (default: a plain logistic
    regression's out-of-fold probabilities on the same embeddings)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    from dqaudit.scoring.table import score_dataset

    err = data.labels != clean
    t = time.perf_counter()
    scored = score_dataset(data, emb, method=method, pred_probs=pred_probs,
                           probs_source="finetune", seed=0)
    seconds = time.perf_counter() - t
    tab = scored.table
    ours_flag = tab["issues"].map(lambda v: "label_error" in v).to_numpy()
    if cleanlab_probs is None:
        cleanlab_probs = cross_val_predict(LogisticRegression(max_iter=1000), emb, data.labels,
                                           cv=5, method="predict_proba")
    cl_flag = find_label_issues(data.labels, cleanlab_probs)
    cl_rank = -get_label_quality_scores(data.labels, cleanlab_probs)
    top = tab["importance"].to_numpy() >= np.quantile(tab["importance"], 0.9)
    return {
        "noise_rate": round(float(err.mean()), 4),
        "true_errors": int(err.sum()),
        "estimated_errors": scored.stats["estimated_label_errors"],
        # accuracy of the posteriors' argmax against the clean labels
        "accuracy_vs_clean": round(float((scored.probs.argmax(1) == clean).mean()), 4),
        "auroc": {"noisiness": round(roc_auc_score(err, tab["noisiness"]), 3),
                  "priority": round(roc_auc_score(err, tab["priority"]), 3),
                  "cleanlab": round(roc_auc_score(err, cl_rank), 3)},
        "auprc": {"noisiness": round(average_precision_score(err, tab["noisiness"]), 3),
                  "priority": round(average_precision_score(err, tab["priority"]), 3),
                  "cleanlab": round(average_precision_score(err, cl_rank), 3)},
        "flag": {"dqaudit": flag_metrics(err, ours_flag),
                 "cleanlab": flag_metrics(err, cl_flag)},
        "importance_top10_error_rate": round(float(err[top].mean()), 3),
        "score_seconds": round(seconds, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    ap.add_argument("--model", default=None, help="encoder [default: dqaudit's default]")
    ap.add_argument("--method", default="linear")
    ap.add_argument("--finetuned", default=None, metavar="DIR",
                    help="also score the fine-tuned posteriors in DIR/cifar10n_<set>.npz "
                         "(benchmarks/finetune_posteriors.py), cleanlab on the same ones")
    ap.add_argument("--sets", nargs="*", default=common.NOISE_SETS)
    args = ap.parse_args()
    df = common.cifar10n_table()
    t = time.perf_counter()
    emb = common.embed(list(df["path"]), model=args.model)
    print(f"embeddings: {emb.shape} in {time.perf_counter() - t:.0f}s (cached after first run)")
    clean = np.array([common.CLASSES.index(c) for c in df["clean"]])
    results = {}
    for ns in args.sets:
        data = common.labeled_images(df["path"], df[ns])
        rows = {args.method: evaluate(data, clean, emb, method=args.method)}
        if args.finetuned:
            path = Path(args.finetuned) / f"cifar10n_{ns}.npz"
            if path.exists():
                with np.load(path) as z:
                    probs = z["probs"].astype(np.float64)
                    info = json.loads(str(z["info"]))
                rows["finetune"] = evaluate(data, clean, emb, method=args.method,
                                            pred_probs=probs, cleanlab_probs=probs)
                rows["finetune"]["finetune_seconds"] = info.get("seconds")
                rows["finetune"]["finetune_device"] = info.get("device")
                rows["finetune"]["finetune_train"] = info.get("train")
            else:
                print(f"{ns}: no {path}")
        results[ns] = rows
        for name, row in rows.items():
            print(f"{ns:8s} {name:8s} noise={row['noise_rate']:.3f} true={row['true_errors']} "
                  f"est={row['estimated_errors']} acc={row['accuracy_vs_clean']:.3f} | AUROC "
                  f"noi={row['auroc']['noisiness']:.3f} cl={row['auroc']['cleanlab']:.3f} | "
                  f"AUPRC noi={row['auprc']['noisiness']:.3f} cl={row['auprc']['cleanlab']:.3f}"
                  f" | F1 ours={row['flag']['dqaudit']['f1']:.3f} "
                  f"cl={row['flag']['cleanlab']['f1']:.3f} | {row['score_seconds']:.1f}s",
                  flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
