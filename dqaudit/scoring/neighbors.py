"""Nearest neighbours on L2-normalised embeddings: kNN graph, near-duplicates, outliers.

The kNN graph is built once per audit and reused by the posteriors (label spreading), the
scores (kNN disagreement, duplicates, outliers) and the report. Methods (``KNN_METHODS``):

    ``exact``  all-pairs cosine in row chunks (torch matmul): memory O(N * k) plus one chunk of
               similarities, time O(N^2 D). The default up to ``EXACT_MAX`` samples.
    ``ivf``    faiss inverted-file index, nlist = 2 sqrt(N) lists, 4-bit fast-scan product
               quantisation re-ranked by exact inner products (``IVF{nlist},PQ{D/2}x4fs,RFlat``;
               IVF-SQ8 for odd D); the number of lists probed and the re-ranking depth are tuned
               on the data itself until recall@k against exact search on a sample of queries
               reaches ``target_recall``.
               Memory: the float32 vectors once more (the re-ranking keeps them) plus
               D / 4 bytes of codes per sample, and O(N * k) for the graph.
    ``hnsw``   faiss HNSW graph (M = 32), efSearch tuned the same way.
    ``auto``   ``exact`` up to ``EXACT_MAX`` samples, else ``ivf`` (faster than HNSW to build
               and search for the all-points query on CPU; see benchmarks/RESULTS.md). On a
               CUDA device, ``exact`` up to ``EXACT_MAX_CUDA`` samples when the embeddings and
               one chunk of similarities fit in half the free GPU memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dqaudit.errors import DqauditError

EXACT_MAX = 20_000
EXACT_MAX_CUDA = 2_000_000
TARGET_RECALL = 0.95
# Near-duplicates: cosine of the default encoder's features at or above this. Measured
# (benchmarks/RESULTS.md): re-saved files score 1.0; among 5,000 distinct CIFAR-10 images none
# has a neighbour this close, nor among the distinct drawings of sample_data/shapes (max 0.980
# with lite0+lite2, 0.984 with lite0).
DUPLICATE_THRESHOLD = 0.985


@dataclass
class KnnGraph:
    """k nearest neighbours of every sample (itself excluded), most similar first.

    indices: (N, k) int64; similarities: (N, k) float32 cosine similarities; info: how the
    graph was built (method, parameters, measured recall for approximate methods).
    """

    indices: np.ndarray
    similarities: np.ndarray
    info: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return self.indices.shape[1]


def knn(embeddings: np.ndarray, *, k: int = 10, method: str = "auto", chunk: int = 2048,
        device: str = "cpu", target_recall: float = TARGET_RECALL, seed: int) -> KnnGraph:
    """Cosine kNN graph of (N, D) L2-normalised rows; ``k`` is capped at N - 1."""
    if method not in KNN_METHODS:
        raise DqauditError(f"unknown kNN method {method!r}; valid: {', '.join(KNN_METHODS)}")
    n = embeddings.shape[0]
    k = max(1, min(k, n - 1))
    if method == "auto":
        method = "exact" if n <= EXACT_MAX or _exact_fits_gpu(embeddings, chunk, device) else "ivf"
    if method == "exact":
        return exact_knn(embeddings, k=k, chunk=chunk, device=device)
    return KNN_METHODS[method](embeddings, k=k, target_recall=target_recall, seed=seed)


def _exact_fits_gpu(embeddings: np.ndarray, chunk: int, device: str) -> bool:
    """Whether exact search on ``device`` is the better choice: a CUDA device, at most
    ``EXACT_MAX_CUDA`` rows, and the float32 rows plus one chunk of similarities (twice, for
    top-k's workspace) in half of the free GPU memory."""
    if not device.startswith("cuda") or embeddings.shape[0] > EXACT_MAX_CUDA:
        return False
    import torch

    free, _total = torch.cuda.mem_get_info(torch.device(device))
    n, d = embeddings.shape
    return 4 * (n * d + 2 * chunk * n) <= free // 2


def exact_knn(embeddings: np.ndarray, *, k: int = 10, chunk: int = 2048, device: str = "cpu",
              queries: np.ndarray | None = None) -> KnnGraph:
    """Exact cosine kNN by chunked matmul, ``chunk`` query rows at a time.

    ``queries`` (row indices) restricts the rows (the recall check of the approximate search):
    then the base is streamed instead, ``chunk`` rows at a time on the CPU, so neither a float32
    copy of all embeddings nor a queries x N similarity matrix is held."""
    import torch

    if queries is not None:
        return _exact_rows(embeddings, np.asarray(queries), k, chunk)
    n = embeddings.shape[0]
    arr = np.ascontiguousarray(embeddings, dtype=np.float32)
    if not arr.flags.writeable:  # a read-only memory map: torch wants its own copy
        arr = arr.copy()
    x = torch.as_tensor(arr, device=device)
    idx = np.empty((n, k), dtype=np.int64)
    sim = np.empty((n, k), dtype=np.float32)
    with torch.no_grad():
        for s in range(0, n, chunk):
            q = torch.arange(s, min(s + chunk, n), device=device)
            block = x[q] @ x.T
            block[torch.arange(len(q), device=device), q] = -float("inf")  # never oneself
            vals, inds = torch.topk(block, k, dim=1)
            idx[s:s + len(q)] = inds.cpu().numpy()
            sim[s:s + len(q)] = vals.cpu().numpy()
    return KnnGraph(indices=idx, similarities=sim, info={"method": "exact", "device": device})


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - a hard dependency
        raise DqauditError("approximate kNN needs faiss; run: pip install faiss-cpu") from exc
    return faiss


def _search_all(index, x: np.ndarray, k: int, chunk: int = 8192):
    """k + 1 neighbours of every row (the first is usually the row itself), in chunks.

    The fast-scan lookup tables grow with the rows searched at once: at 100k x 1280-d, chunks
    of 65,536 rows peaked at 5.4 GB, chunks of 8,192 at 2.5 GB in the same time."""
    n = x.shape[0]
    sims = np.empty((n, k + 1), dtype=np.float32)
    inds = np.empty((n, k + 1), dtype=np.int64)
    for s in range(0, n, chunk):
        sims[s:s + chunk], inds[s:s + chunk] = index.search(
            np.ascontiguousarray(x[s:s + chunk], dtype=np.float32), k + 1)
    return sims, inds


def _drop_self(sims: np.ndarray, inds: np.ndarray, rows: np.ndarray, k: int):
    """Remove each row's own index from its k + 1 results (or the last one when absent)."""
    is_self = inds == rows[:, None]
    # keep the first k entries that are not the row itself; -1 (not found) sinks to the end
    order = np.argsort(is_self | (inds < 0), axis=1, kind="stable")[:, :k]
    return (np.take_along_axis(sims, order, axis=1),
            np.take_along_axis(inds, order, axis=1))


def _exact_rows(x: np.ndarray, rows: np.ndarray, k: int, chunk: int) -> KnnGraph:
    """``exact_knn`` of a few ``rows``: the base streamed ``chunk`` rows at a time, a running
    top-k merged per chunk, neighbours sorted by similarity as the full graph has them."""
    q = np.ascontiguousarray(x[rows], dtype=np.float32)
    best_s = np.full((len(rows), k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(rows), k), dtype=np.int64)
    for s in range(0, x.shape[0], chunk):
        block = q @ np.asarray(x[s:s + chunk], dtype=np.float32).T
        own = (rows >= s) & (rows < s + block.shape[1])
        block[np.flatnonzero(own), rows[own] - s] = -np.inf  # never oneself
        sims = np.concatenate([best_s, block], axis=1)
        inds = np.concatenate([best_i, np.broadcast_to(np.arange(s, s + block.shape[1]),
                                                       block.shape)], axis=1)
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        best_s = np.take_along_axis(sims, top, axis=1)
        best_i = np.take_along_axis(inds, top, axis=1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return KnnGraph(indices=np.take_along_axis(best_i, order, axis=1),
                    similarities=np.take_along_axis(best_s, order, axis=1),
                    info={"method": "exact", "device": "cpu"})


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth)]))


def _tuned_search(index, x, k, settings, target_recall: float, seed: int,
                  n_check: int = 1000):
    """Try the search ``settings`` (dicts of faiss parameters, cheapest first) until recall@k
    on a sample of queries, measured against exact search, reaches ``target_recall``; then
    search every row with the first setting that did (or the last one)."""
    faiss = _faiss()
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    check = np.sort(rng.choice(n, size=min(n_check, n), replace=False))
    truth = exact_knn(x, k=k, queries=check, chunk=16384).indices
    params = faiss.ParameterSpace()
    recall, setting = 0.0, settings[0]
    for setting in settings:
        for knob, value in setting.items():
            params.set_index_parameter(index, knob, value)
        sims, inds = index.search(np.ascontiguousarray(x[check], dtype=np.float32), k + 1)
        recall = _recall(_drop_self(sims, inds, check, k)[1], truth)
        if recall >= target_recall:
            break
    sims, inds = _search_all(index, x, k)
    sims, inds = _drop_self(sims, inds, np.arange(n), k)
    return KnnGraph(indices=inds, similarities=sims,
                    info={**setting, "recall_at_k": round(recall, 4), "recall_queries":
                          len(check), "target_recall": target_recall})


def ivf_knn(embeddings: np.ndarray, *, k: int = 10, target_recall: float = TARGET_RECALL,
            seed: int) -> KnnGraph:
    """Approximate kNN with a faiss IVF index (see module docstring)."""
    faiss = _faiss()
    n, d = embeddings.shape
    nlist = int(max(1, min(round(NLIST_PER_SQRT_N * np.sqrt(n)), n // 39)))
    spec = _ivf_spec(nlist, d)
    index = faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
    faiss.extract_index_ivf(index).cp.niter = KMEANS_ITERATIONS
    rng = np.random.default_rng(seed)
    train = np.sort(rng.choice(n, size=min(n, TRAIN_PER_LIST * nlist), replace=False))
    index.train(np.ascontiguousarray(embeddings[train], dtype=np.float32))
    for s in range(0, n, 262144):
        index.add(np.ascontiguousarray(embeddings[s:s + 262144], dtype=np.float32))
    probes = [p for p in (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
              if p <= nlist] or [nlist]
    if spec.endswith("RFlat"):
        # the cheaper re-ranking first, up to a moderate nprobe; then the wider one
        settings = [{"nprobe": p, "k_factor_rf": REFINE_FACTORS[0]} for p in probes
                    if p <= 64] + [{"nprobe": p, "k_factor_rf": REFINE_FACTORS[1]}
                                   for p in probes]
    else:
        settings = [{"nprobe": p} for p in probes]
    graph = _tuned_search(index, embeddings, k, settings, target_recall, seed)
    graph.info.update(method="ivf", index=spec, nlist=nlist)
    return graph


# Candidates from 4-bit fast-scan product-quantised codes (2 dimensions per code), re-ranked
# by exact inner products over k * factor candidates: the fastest route to the target recall
# at 100k and 1M (benchmarks/scale.py; benchmarks/RESULTS.md, "Scale" sections); 16 is tried
# first, 32 when 16 cannot reach the recall.
REFINE_FACTORS = (16, 32)
# Index size and training. The k-means of the coarse quantiser costs nlist x points x D per
# iteration (points = TRAIN_PER_LIST x nlist, so it grows as nlist^2); the all-points search
# scans about N x nprobe x N / nlist codes either way; these values more than halved the
# graph's time at 100k x 1280-d at no loss of recall (benchmarks/RESULTS.md, "Scale at
# 1,280-d and 1M").
NLIST_PER_SQRT_N = 2
TRAIN_PER_LIST = 16
KMEANS_ITERATIONS = 10


def _ivf_spec(nlist: int, d: int) -> str:
    if d % 2 == 0 and (d // 2) % 2 == 0:
        return f"IVF{nlist},PQ{d // 2}x4fs,RFlat"
    return f"IVF{nlist},SQ8"


def hnsw_knn(embeddings: np.ndarray, *, k: int = 10, target_recall: float = TARGET_RECALL,
             seed: int) -> KnnGraph:
    """Approximate kNN with a faiss HNSW32 graph (see module docstring)."""
    faiss = _faiss()
    n, d = embeddings.shape
    index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 40
    for s in range(0, n, 262144):
        index.add(np.ascontiguousarray(embeddings[s:s + 262144], dtype=np.float32))
    graph = _tuned_search(index, embeddings, k,
                          [{"efSearch": v} for v in (32, 48, 64, 96, 128, 256, 512)],
                          target_recall, seed)
    graph.info.update(method="hnsw", index="HNSW32")
    return graph


KNN_METHODS = {"auto": None, "exact": exact_knn, "ivf": ivf_knn, "hnsw": hnsw_knn}


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


def duplicate_groups(graph: KnnGraph, *, threshold: float = DUPLICATE_THRESHOLD) -> np.ndarray:
    """(N,) group id for samples in a near-duplicate group (cosine >= threshold), else -1.

    Groups are the connected components of the thresholded kNN graph, numbered in the order
    of their smallest member index, so the numbering is stable for a given input.
    """
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components

    n = graph.indices.shape[0]
    rows, cols = np.nonzero(graph.similarities >= threshold)
    out = np.full(n, -1, dtype=np.int64)
    if len(rows) == 0:
        return out
    adjacency = sparse.csr_matrix((np.ones(len(rows)), (rows, graph.indices[rows, cols])),
                                  shape=(n, n))
    _, component = connected_components(adjacency, directed=True, connection="weak")
    sizes = np.bincount(component)
    in_group = sizes[component] > 1
    # renumber components by their smallest member
    first = np.full(len(sizes), n, dtype=np.int64)
    np.minimum.at(first, component, np.arange(n))
    grouped = np.flatnonzero(sizes > 1)
    rank = np.empty(len(sizes), dtype=np.int64)
    rank[grouped[np.argsort(first[grouped], kind="stable")]] = np.arange(len(grouped))
    out[in_group] = rank[component[in_group]]
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
