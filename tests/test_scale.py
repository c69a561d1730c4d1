"""Scale paths on CPU: faiss approximate kNN, projection and probes on row subsets, Ray embed."""


import numpy as np
import pytest

from dqaudit.errors import DqauditError
from dqaudit.scoring import neighbors
from dqaudit.scoring.neighbors import duplicate_groups, exact_knn, knn
from dqaudit.scoring.posteriors import linear_posteriors, stratified_folds
from dqaudit.scoring.probes import ProbeConfig, project


def clustered(n=4000, d=48, n_classes=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, d))
    y = rng.integers(0, n_classes, n)
    x = centres[y] + 0.7 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y


def recall(found, truth):
    return (found[:, :, None] == truth[:, None, :]).any(axis=2).mean()


@pytest.mark.parametrize("method", ["ivf", "hnsw"])
def test_approximate_knn_reaches_its_recall_and_matches_exact_layout(method):
    x, _ = clustered()
    exact = knn(x, k=10, method="exact", seed=0)
    approx = knn(x, k=10, method=method, target_recall=0.95, seed=0)
    assert approx.indices.shape == (len(x), 10) and approx.indices.dtype == np.int64
    assert approx.info["method"] == method and approx.info["recall_at_k"] >= 0.95
    # the tuned recall, measured on a sample of queries, holds on every row
    assert recall(approx.indices, exact.indices) >= 0.93
    assert not (approx.indices == np.arange(len(x))[:, None]).any()  # never oneself
    assert (np.diff(approx.similarities, axis=1) <= 1e-6).all()  # most similar first
    # similarities are the true cosines of the neighbours found (up to 8-bit quantisation)
    true_sims = np.einsum("nd,nkd->nk", x, x[approx.indices])
    assert np.abs(true_sims - approx.similarities).max() < 0.05


def test_ivf_tries_the_cheap_reranking_first_then_the_wider_one():
    x, _ = clustered()
    easy = knn(x, k=10, method="ivf", target_recall=0.5, seed=0)
    assert (easy.info["nprobe"], easy.info["k_factor_rf"]) == (8, neighbors.REFINE_FACTORS[0])
    assert easy.info["recall_at_k"] >= 0.5
    # an unreachable target walks every setting and ends on the widest one
    hard = knn(x, k=10, method="ivf", target_recall=1.01, seed=0)
    assert hard.info["k_factor_rf"] == neighbors.REFINE_FACTORS[1]
    # 4,000 rows: nlist = min(2 sqrt(N), N / 39) = 102, so the largest nprobe tried is 96
    assert hard.info["nlist"] == 102 and hard.info["nprobe"] == 96
    assert hard.info["recall_at_k"] >= easy.info["recall_at_k"]


def test_auto_is_exact_up_to_the_threshold_then_ivf(monkeypatch):
    x, _ = clustered(n=1500)
    assert knn(x, k=5, seed=0).info["method"] == "exact"
    monkeypatch.setattr(neighbors, "EXACT_MAX", 1000)
    assert knn(x, k=5, seed=0).info["method"] == "ivf"
    with pytest.raises(DqauditError, match="valid: auto, exact, ivf, hnsw"):
        knn(x, method="annoy", seed=0)


def test_auto_on_cuda_searches_exactly_while_it_fits_in_gpu_memory(monkeypatch):
    """The decision only (CI has no GPU): exact on a CUDA device up to EXACT_MAX_CUDA rows when
    rows + two chunks of similarities fit in half the free memory; never on CPU."""
    import torch

    x = np.zeros((30_000, 64), dtype=np.float32)
    need = 4 * (30_000 * 64 + 2 * 2048 * 30_000)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2 * need, 4 * need))
    assert neighbors._exact_fits_gpu(x, 2048, "cuda")
    assert neighbors._exact_fits_gpu(x, 2048, "cuda:1")
    assert not neighbors._exact_fits_gpu(x, 2048, "cpu")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2 * need - 8, 4 * need))
    assert not neighbors._exact_fits_gpu(x, 2048, "cuda")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (100 * need, 100 * need))
    monkeypatch.setattr(neighbors, "EXACT_MAX_CUDA", 20_000)
    assert not neighbors._exact_fits_gpu(x, 2048, "cuda")


def test_exact_knn_on_a_subset_of_queries_matches_the_full_graph():
    x, _ = clustered(n=500)
    full = exact_knn(x, k=7)
    rows = np.array([3, 17, 250, 499])
    part = exact_knn(x, k=7, queries=rows, chunk=3)
    np.testing.assert_array_equal(part.indices, full.indices[rows])
    # the base streamed in chunks that split the query rows
    streamed = exact_knn(x, k=7, queries=rows, chunk=64).indices
    for a, b in zip(streamed, full.indices[rows]):
        assert set(a.tolist()) == set(b.tolist())


def test_duplicate_groups_through_the_approximate_graph():
    x, _ = clustered(n=3000)
    x[100] = x[7]
    x[2999] = x[7]
    x[5] = x[6]
    groups = duplicate_groups(knn(x, k=5, method="ivf", seed=0), threshold=0.999)
    assert groups[7] == groups[100] == groups[2999] == 1  # numbered by smallest member
    assert groups[5] == groups[6] == 0
    assert (groups >= 0).sum() == 5


def test_projection_fitted_on_a_subset_of_a_memory_mapped_array(tmp_path):
    x, _ = clustered(n=3000, d=64)
    path = tmp_path / "emb.npy"
    np.save(path, x)
    mapped = np.load(path, mmap_mode="r")
    full = project(x, dim=7, seed=0)  # the 8 centres span 7 directions: a stable subspace
    sub = project(mapped, dim=7, fit_samples=1000, seed=0)
    assert sub.shape == full.shape == (3000, 7) and sub.dtype == np.float32
    assert abs(sub.std() - 1) < 0.05
    # same subspace: each column of one is explained by the other's columns
    coef, *_ = np.linalg.lstsq(full, sub, rcond=None)
    residual = ((sub - full @ coef) ** 2).sum() / (sub ** 2).sum()
    assert residual < 0.02


def test_probes_fitted_on_a_row_subset_still_find_the_flipped_labels():
    x, y = clustered(n=3000, d=32, n_classes=4)
    rng = np.random.default_rng(1)
    noisy = y.copy()
    flip = rng.choice(len(y), 150, replace=False)
    noisy[flip] = (y[flip] + 1) % 4
    folds = stratified_folds(noisy, n_folds=5, seed=0)
    probs = linear_posteriors(project(x, seed=0), np.eye(4)[noisy], folds, correction_rounds=1,
                              config=ProbeConfig(max_fit_samples=800), seed=0)
    assert probs.shape == (3000, 4)
    assert (probs.argmax(axis=1) == y).mean() > 0.95
    worst = np.argsort(probs[np.arange(3000), noisy])[:150]
    assert len(set(worst) & set(flip)) > 120
