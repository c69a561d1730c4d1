"""Region features for label sets: a class is present when some part of the image shows it.

Shapes: ``views`` (N, J, D) features of J views of each image (the whole image first, then its
regions, ``embed.REGIONS``), projected together; ``sets`` (N, C) bool, the given sets. Per
class c every view gets a linear score and the views are pooled by a smooth maximum
(log-mean-exp, a multiple-instance model):

    z_ic = log( (1/J) sum_j exp(w_c . v_ij + b_c) ),     P(c present | image i) = sigmoid(z_ic)

fitted as maximum-a-posteriori logistic regression (sum of the binary cross-entropies plus
``weight_decay / 2 * ||w_c||^2``, a Gaussian prior of that precision on unit-variance
features), K-fold cross-fitted so that no sample's set reaches the model that scores it, and
averaged over ``LINEAR_REPEATS`` fold splits as the one-vs-rest probes are. A small object
fills one region and scores high there while the whole-image view dilutes it; a class the
whole image shows scores in every view. The pooled logit equals the linear probe's when all
views agree, so one view (J = 1) is plain logistic regression.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dqaudit.scoring.posteriors import LINEAR_REPEATS, REPEAT_MAX_SAMPLES, stratified_folds
from dqaudit.scoring.probes import project


@dataclass(frozen=True)
class RegionProbe:
    """Hyper-parameters of the region model (benchmarks/multilabel.py, RESULTS.md)."""

    weight_decay: float = 100.0  # prior precision of each class's weights
    dim: int = 256  # principal components the views are projected on
    max_iter: int = 300  # L-BFGS iterations per fold
    n_folds: int = 5
    # above this many samples each fold's model is fitted on a seeded random subset of its
    # training rows (it still scores every held-out sample), as the linear probes are
    max_fit_samples: int = 50_000


# the settings of a multi-label audit with --regions
SET_REGIONS = RegionProbe()


def project_views(whole: np.ndarray, regions: np.ndarray, *, dim: int, seed: int
                  ) -> np.ndarray:
    """(N, 1 + R, d) float32: the whole-image embeddings ``whole`` (N, D) and the region
    embeddings ``regions`` (N, R, D), centred, projected on the top ``dim`` principal
    components of all N (1 + R) views together and scaled to unit variance (``probes.project``;
    unsupervised, so no label leaks into a fold)."""
    n, r, d = regions.shape
    views = np.concatenate([np.asarray(whole, np.float32)[:, None],
                            np.asarray(regions, np.float32)], axis=1)
    return project(views.reshape(n * (r + 1), d), dim=dim, seed=seed).reshape(n, r + 1, -1)


def set_folds(sets: np.ndarray, *, n_folds: int, seed: int) -> np.ndarray:
    """(N,) fold per sample, stratified by each set's rarest class (the empty set a stratum
    of its own), so every fold holds samples of every class that has enough of them."""
    sets = np.asarray(sets, dtype=bool)
    rarity = np.where(sets, sets.sum(axis=0)[None, :], np.iinfo(np.int64).max)
    key = np.where(sets.any(axis=1), rarity.argmin(axis=1), sets.shape[1])
    return stratified_folds(key, n_folds=n_folds, seed=seed)


def pooled_logits(views, weights, bias):
    """(M, C) log-mean-exp over the J views of the per-view logits; torch tensors ``views``
    (M, J, d), ``weights`` (d, C), ``bias`` (C,)."""
    import torch

    scores = views @ weights + bias  # (M, J, C)
    return torch.logsumexp(scores, dim=1) - float(np.log(views.shape[1]))


def region_posteriors(views: np.ndarray, sets: np.ndarray, *, config: RegionProbe, seed: int,
                      device: str) -> np.ndarray:
    """(N, C) out-of-fold P(class present) of the region model (module docstring) on the
    projected ``views`` (N, J, d); ``seed`` draws the fold splits and any row subsets."""
    import torch

    sets = np.asarray(sets, dtype=bool)
    n, c = sets.shape
    v = torch.as_tensor(np.ascontiguousarray(views), dtype=torch.float32, device=device)
    y = torch.as_tensor(sets, dtype=torch.float32, device=device)
    repeats = LINEAR_REPEATS if n <= REPEAT_MAX_SAMPLES else 1
    rng = np.random.default_rng(seed)
    out = np.zeros((n, c))
    for r in range(repeats):
        folds = set_folds(sets, n_folds=config.n_folds, seed=seed + r)
        for f in range(config.n_folds):
            train = np.flatnonzero(folds != f)
            if len(train) > config.max_fit_samples:
                train = np.sort(rng.choice(train, size=config.max_fit_samples, replace=False))
            held = np.flatnonzero(folds == f)
            w, b = _fit(v[train], y[train], config)
            with torch.no_grad():
                out[held] += torch.sigmoid(pooled_logits(v[held], w, b)).double().cpu().numpy()
    return out / repeats


def _fit(v, y, config: RegionProbe):
    """MAP weights (d, C) and bias (C,) of the pooled model on views ``v`` (M, J, d) and
    sets ``y`` (M, C), by L-BFGS from zero (where every view scores alike: the linear probe of
    the mean view)."""
    import torch

    w = torch.zeros(v.shape[2], y.shape[1], device=v.device, requires_grad=True)
    b = torch.zeros(y.shape[1], device=v.device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=config.max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(
            pooled_logits(v, w, b), y, reduction="sum")
            + config.weight_decay / 2 * (w ** 2).sum()) / y.numel()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()
