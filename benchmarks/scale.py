"""Scale benchmark: kNN graph and the whole scoring stage on synthetic embeddings.

For each N: time and peak RAM (each measurement in its own process, ru_maxrss) of
  score  the whole scoring stage on embeddings memory-mapped from an .npy file: first the kNN
         graph (``scoring.neighbors.knn``, method auto: exact up to 20k, faiss IVF above; its
         time and the peak RSS up to its end are reported on their own), then
         ``dqaudit.scoring.table.score_dataset`` on that graph (projection, K-fold robust linear
         posteriors with two correction rounds, every score, duplicates, outliers, importance)
and, at --recall-n samples, recall@10 of the approximate graph against exact search on all of
them.

Synthetic embeddings: C class centres in a 32-d latent space, samples = centre + Gaussian
latent noise, mapped to D dims by a random linear map plus isotropic noise of the same norm as
the signal, L2-normalised; 10% of labels flipped uniformly (so the scores have work to do).
Isotropic noise makes neighbours harder to find than in real image embeddings: a pessimistic
case for approximate search.

    python benchmarks/scale.py --sizes 100000 1000000 --json benchmarks/scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LATENT = 32


def make_embeddings(path: Path, n: int, d: int, n_classes: int, seed: int = 0,
                    chunk: int = 100_000) -> np.ndarray:
    """Write (n, d) float32 synthetic embeddings to ``path`` (.npy); return the labels."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, LATENT)).astype(np.float32)
    mapping = (rng.standard_normal((LATENT, d)) / np.sqrt(LATENT)).astype(np.float32)
    labels = rng.integers(0, n_classes, size=n)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for s in range(0, n, chunk):
        y = labels[s:s + chunk]
        z = centres[y] + 0.8 * rng.standard_normal((len(y), LATENT)).astype(np.float32)
        x = z @ mapping + 0.3 * rng.standard_normal((len(y), d)).astype(np.float32)
        out[s:s + chunk] = x / np.linalg.norm(x, axis=1, keepdims=True)
    out.flush()
    del out
    return labels


def noisy(labels: np.ndarray, n_classes: int, rate: float = 0.10, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    flip = rng.random(len(labels)) < rate
    out = labels.copy()
    out[flip] = (labels[flip] + rng.integers(1, n_classes, size=flip.sum())) % n_classes
    return out


def run_stage(stage: str, emb_path: str, labels_path: str, n_classes: int) -> dict:
    """One measurement, in this (fresh) process."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    device = os.environ.get("SCALE_DEVICE", "cpu")
    emb = np.load(emb_path, mmap_mode="r")
    labels = np.load(labels_path)
    t = time.perf_counter()
    out: dict = {}
    if stage == "knn":
        from dqaudit.scoring.neighbors import knn

        graph = knn(emb, k=10, method="auto", device=device, seed=0)
        out["knn"] = graph.info
    elif stage == "exact":
        from dqaudit.scoring.neighbors import knn

        graph = knn(emb, k=10, method="exact", device=device, seed=0)
        np.save(emb_path + ".exact.npy", graph.indices)
    elif stage == "recall":
        from dqaudit.scoring.neighbors import knn

        graph = knn(emb, k=10, method=os.environ.get("SCALE_KNN_METHOD", "ivf"), seed=0)
        exact = np.load(emb_path + ".exact.npy")
        hits = (graph.indices[:, :, None] == exact[:, None, :]).any(axis=2).sum()
        out["recall_at_10_all"] = round(float(hits / exact.size), 4)
        out["knn"] = graph.info
    elif stage == "score":
        from dqaudit.dataset import LabeledImages
        from dqaudit.scoring.neighbors import knn
        from dqaudit.scoring.table import score_dataset

        graph = knn(emb, k=10, method="auto", device=device, seed=0)
        out["knn_seconds"] = round(time.perf_counter() - t, 1)
        out["knn_peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                       / 2**20, 2)
        out["knn"] = graph.info

        n = len(labels)
        data = LabeledImages(
            paths=[""] * n, labels=labels, classes=[f"c{i:03d}" for i in range(n_classes)],
            label_counts=np.eye(n_classes, dtype=np.float32)[labels],
            splits=np.full(n, "", dtype=object), ids=[""] * n)
        scored = score_dataset(data, emb, method="linear", seed=0, graph=graph,
                               device=device)
        truth = np.load(labels_path.replace("labels", "truth"))
        flagged = scored.table["issues"].map(lambda v: "label_error" in v).to_numpy()
        wrong = labels != truth
        tp = int((flagged & wrong).sum())
        out["label_errors"] = int(wrong.sum())
        out["flagged"] = int(flagged.sum())
        out["precision"] = round(tp / max(flagged.sum(), 1), 4)
        out["recall"] = round(tp / max(wrong.sum(), 1), 4)
    out["seconds"] = round(time.perf_counter() - t, 1)
    return out


_WRAPPER = ("import json,resource,subprocess,sys;"
            "p=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
            "sys.stderr.write(p.stderr[-3000:]);"
            "r=json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode==0 else sys.exit(1);"
            "r['peak_rss_gb']=round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss"
            "/2**20,2);print(json.dumps(r))")


def measure(stage: str, emb_path: Path, labels_path: Path, n_classes: int) -> dict:
    """Run ``stage`` in a fresh grandchild process; its peak resident memory is the
    intermediate child's ru_maxrss of its children (that one process alone)."""
    cmd = [sys.executable, "-c", _WRAPPER, sys.executable, __file__, "--child", stage,
           str(emb_path), str(labels_path), str(n_classes)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.exit(f"{stage} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--recall-n", type=int, default=100_000)
    ap.add_argument("--stages", nargs="+", default=["score"])
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--device", default="cpu",
                    help="torch device of the kNN search and the probes (cpu, cuda)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        stage, emb_path, labels_path, n_classes = args.child
        print(json.dumps(run_stage(stage, emb_path, labels_path, int(n_classes))))
        return

    os.environ["SCALE_DEVICE"] = args.device  # the stage processes inherit it
    work = Path(args.workdir or tempfile.mkdtemp(prefix="dqaudit-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    sizes = sorted(set(args.sizes) | ({args.recall_n} if args.recall_n else set()))
    for n in sizes:
        emb_path = work / f"emb-{n}.npy"
        labels_path = work / f"labels-{n}.npy"
        truth = make_embeddings(emb_path, n, args.dim, args.classes)
        np.save(work / f"truth-{n}.npy", truth)
        np.save(labels_path, noisy(truth, args.classes))
        row = {"n": n, "dim": args.dim, "classes": args.classes, "device": args.device}
        # each stage in a fresh process, so ru_maxrss of RUSAGE_CHILDREN is that stage's peak
        stages = list(args.stages) if n in args.sizes else []
        if n == args.recall_n:
            stages += ["exact", "recall"]
        for stage in stages:
            result = measure(stage, emb_path, labels_path, args.classes)
            row[stage] = result
            print(f"N={n:>9,} {stage:6s} {json.dumps(result)}", flush=True)
        rows.append(row)
        emb_path.unlink()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
