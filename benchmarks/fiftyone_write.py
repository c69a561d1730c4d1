"""Time of writing audit results into FiftyOne for N samples (bulk set_values, saved views).

Synthetic: N samples with fake file paths in a fresh dataset, synthetic scores; the dataset is
deleted afterwards. Embeddings of --dim dimensions are written too unless --dim 0.

    .venv/bin/python benchmarks/fiftyone_write.py [--n 100000] [--dim 0]
"""

from __future__ import annotations

import argparse
import time
import uuid

import numpy as np
import pandas as pd


def main() -> None:
    from dqaudit.api import Audit
    from dqaudit.dataset import LabeledImages
    from dqaudit.io.fiftyone_io import import_fiftyone
    from dqaudit.io.fiftyone_results import write_results

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=0)
    args = ap.parse_args()
    fo = import_fiftyone()
    rng = np.random.default_rng(0)
    n, classes = args.n, ["a", "b", "c"]
    name = f"dqaudit-bench-{uuid.uuid4().hex[:6]}"
    ds = fo.Dataset(name)
    t = time.perf_counter()
    ds.add_samples([fo.Sample(filepath=f"/data/img_{i:07d}.jpg",
                              ground_truth=fo.Classification(label=classes[i % 3]))
                    for i in range(n)], progress=False)
    created = time.perf_counter() - t
    labels = np.arange(n) % 3
    data = LabeledImages(paths=ds.values("filepath"), labels=labels, classes=classes,
                         label_counts=np.eye(3, dtype=np.float32)[labels],
                         splits=np.array([""] * n, dtype=object), ids=ds.values("id"),
                         source={"kind": "fiftyone", "location": name,
                                 "label_field": "ground_truth"})
    issues = [["label_error"] if i % 50 == 0 else [] for i in range(n)]
    samples = pd.DataFrame({
        "noisiness": rng.random(n), "ambiguity": rng.random(n), "priority": rng.random(n),
        "importance": rng.random(n), "outlier_score": rng.random(n),
        "dup_group": np.full(n, -1), "issues": issues,
        "flagged": [bool(v) for v in issues], "suggested_label": [classes[i % 3] for i in range(n)],
        "suggested_confidence": rng.random(n)})
    summary = {"dqaudit_version": "bench", "created_at": "", "command": "", "model": "",
               "seed": 0, "n_samples": n, "label_error_count": 0, "confident_joint_rate": 0,
               "flagged_count": 0, "clr": None}
    emb = rng.normal(size=(n, args.dim)).astype(np.float32) if args.dim else np.zeros((n, 0))
    res = Audit(dataset=data, embeddings=emb, samples=samples, summary=summary, probs=None)
    t = time.perf_counter()
    write_results(res, name, embeddings=bool(args.dim))
    wrote = time.perf_counter() - t
    print(f"{n} samples: creating the dataset {created:.1f}s; writing dq_* fields"
          f"{' and ' + str(args.dim) + '-d embeddings' if args.dim else ''} + saved views "
          f"{wrote:.1f}s")
    ds.delete()


if __name__ == "__main__":
    main()
