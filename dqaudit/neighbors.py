"""Nearest neighbours on L2-normalised embeddings: kNN graph, near-duplicates, outliers.

Exact search in row chunks (torch matmul), so memory stays O(N * k) plus one chunk of
similarities, whatever N.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class KnnGraph:
    """k nearest neighbours of every sample (itself excluded), most similar first.

    indices: (N, k) int64; similarities: (N, k) float32 cosine similarities.
    """

    indices: np.ndarray
    similarities: np.ndarray

    @property
    def k(self) -> int:
        return self.indices.shape[1]


def knn(embeddings: np.ndarray, *, k: int = 10, chunk: int = 2048,
        device: str = "cpu") -> KnnGraph:
    """Exact cosine kNN of (N, D) L2-normalised rows; ``k`` is capped at N - 1."""
    import torch

    n = embeddings.shape[0]
    k = max(1, min(k, n - 1))
    x = torch.as_tensor(np.ascontiguousarray(embeddings, dtype=np.float32), device=device)
    idx = np.empty((n, k), dtype=np.int64)
    sim = np.empty((n, k), dtype=np.float32)
    with torch.no_grad():
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            block = x[s:e] @ x.T
            rows = torch.arange(e - s, device=device)
            block[rows, rows + s] = -float("inf")  # never one's own neighbour
            vals, inds = torch.topk(block, k, dim=1)
            idx[s:e] = inds.cpu().numpy()
            sim[s:e] = vals.cpu().numpy()
    return KnnGraph(indices=idx, similarities=sim)


def knn_disagreement(labels: np.ndarray, graph: KnnGraph) -> np.ndarray:
    """(N,) share of each sample's k neighbours whose label differs from its own."""
    return (labels[graph.indices] != labels[:, None]).mean(axis=1)


def outlier_scores(graph: KnnGraph) -> np.ndarray:
    """(N,) mean cosine distance to the k nearest neighbours (kNN-distance outlier score)."""
    return 1.0 - graph.similarities.astype(np.float64).mean(axis=1)


def outlier_flags(scores: np.ndarray, *, n_mads: float = 4.0) -> np.ndarray:
    """Robust threshold: above median + n_mads * 1.4826 * MAD of the scores."""
    med = np.median(scores)
    mad = 1.4826 * np.median(np.abs(scores - med))
    if mad == 0:
        return scores > med
    return scores > med + n_mads * mad


def duplicate_groups(graph: KnnGraph, *, threshold: float = 0.97) -> np.ndarray:
    """(N,) group id for samples in a near-duplicate group (cosine >= threshold), else -1.

    Groups are the connected components of the thresholded kNN graph, numbered by their
    smallest member index, so the numbering is stable for a given input.
    """
    n = graph.indices.shape[0]
    parent = np.arange(n)

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    rows, cols = np.nonzero(graph.similarities >= threshold)
    for i, j in zip(rows, graph.indices[rows, cols]):
        ri, rj = find(int(i)), find(int(j))
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    roots = np.array([find(i) for i in range(n)])
    sizes = np.bincount(roots, minlength=n)
    in_group = sizes[roots] > 1
    out = np.full(n, -1, dtype=np.int64)
    ordered = np.unique(roots[in_group])
    out[in_group] = np.searchsorted(ordered, roots[in_group])
    return out


def group_flags(groups: np.ndarray, values: np.ndarray, *, ignore_empty: bool = False
                ) -> np.ndarray:
    """(N,) True for members of groups whose members carry more than one distinct value."""
    flags = np.zeros(len(groups), dtype=bool)
    grouped = groups >= 0
    if not grouped.any():
        return flags
    import pandas as pd

    df = pd.DataFrame({"g": groups[grouped], "v": np.asarray(values, dtype=object)[grouped]})
    if ignore_empty:
        df = df[df["v"] != ""]
    distinct = df.groupby("g")["v"].nunique()
    bad = set(distinct.index[distinct > 1])
    flags[grouped] = np.isin(groups[grouped], list(bad))
    return flags
