"""Region features for label sets: a class is present when some part of the image shows it.

Shapes: ``views`` (N, J, d) features of J views of each image (the whole image first, then its
regions, ``embed.REGIONS``), projected together; ``sets`` (N, C) bool, the given sets. Each view
is read as showing one thing: one of the C classes or none of them (a softmax over C + 1
outputs, ``W`` (d, C + 1), ``b`` (C + 1,)), and a class is present as far as its best view
shows it (a multiple-instance model, max pooling):

    p_ijc = softmax_c(W^T v_ij + b),        P(c present | image i) = max_j p_ijc

fitted as maximum-a-posteriori (the sum of the binary cross-entropies of the C answers plus
``weight_decay / 2 * ||W||^2``, a Gaussian prior of that precision on unit-variance features),
K-fold cross-fitted so that no sample's set reaches the model that scores it, and averaged over
the fold splits of ``posteriors.fold_splits`` as the one-vs-rest probes are. A small object
fills one region and wins its softmax there while the whole-image view shares itself among
what it shows; the classes compete inside a view, as one region's object is one class.

With ``correction_rounds`` each fold's model is trained on targets in which the suspected wrong
answers of its training part (found by an inner cross-validation inside that part, with the
audit's own pair flag, ``suspects``) are replaced by their inner posteriors, as the single-label
probes' correction rounds do (``posteriors.linear_posteriors``): the held-out fold's sets never
reach its model. On CIFAR-10N composites the softmax, the max and the correction each raised
the flag's F1 (benchmarks/RESULTS.md, "Multi-label audits").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dqaudit.scoring.posteriors import fold_splits, stratified_folds
from dqaudit.scoring.probes import project


@dataclass(frozen=True)
class RegionProbe:
    """Hyper-parameters of the region model (benchmarks/multilabel.py, RESULTS.md)."""

    weight_decay: float = 100.0  # prior precision of the weights
    dim: int = 256  # principal components the views are projected on
    max_iter: int = 300  # L-BFGS iterations per fit
    n_folds: int = 5
    correction_rounds: int = 1  # rounds of replacing the training part's suspected answers
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


def present_probs(views, weights, bias):
    """(M, C) P(class present): the max over the J views of each view's softmax probability
    of the class among the C classes and "none" (the last output); torch tensors ``views``
    (M, J, d), ``weights`` (d, C + 1), ``bias`` (C + 1,)."""
    import torch

    return torch.softmax(views @ weights + bias, dim=2)[..., :-1].max(dim=1).values


def region_posteriors(views: np.ndarray, sets: np.ndarray, *, config: RegionProbe, seed: int,
                      device: str, suspects: Callable[[np.ndarray, np.ndarray], np.ndarray]
                      ) -> np.ndarray:
    """(N, C) out-of-fold P(class present) of the region model (module docstring) on the
    projected ``views`` (N, J, d); ``seed`` draws the fold splits and any row subsets;
    ``suspects(sets, probs)`` -> (M, C) bool: the answers a correction round replaces."""
    import torch

    sets = np.asarray(sets, dtype=bool)
    n, c = sets.shape
    v = torch.as_tensor(np.ascontiguousarray(views), dtype=torch.float32, device=device)
    rng = np.random.default_rng(seed)
    out = np.zeros((n, c))
    repeats = fold_splits(n)
    for r in range(repeats):
        folds = set_folds(sets, n_folds=config.n_folds, seed=seed + r)
        for f in range(config.n_folds):
            train = np.flatnonzero(folds != f)
            if len(train) > config.max_fit_samples:
                train = np.sort(rng.choice(train, size=config.max_fit_samples, replace=False))
            held = np.flatnonzero(folds == f)
            targets = _corrected(v[train], sets[train], folds[train], config=config,
                                 suspects=suspects)
            w, b = _fit(v[train], targets, config)
            with torch.no_grad():
                out[held] += present_probs(v[held], w, b).double().cpu().numpy()
    return out / repeats


def _corrected(v, sets: np.ndarray, folds: np.ndarray, *, config: RegionProbe, suspects):
    """(M, C) float targets for a model fitted on the views ``v`` (M, J, d) of a training part
    with given ``sets`` (M, C): the sets, with each correction round's suspects (found on the
    inner out-of-fold posteriors over the part's own ``folds``) replaced by those posteriors."""
    import torch

    given = torch.as_tensor(sets, dtype=torch.float32, device=v.device)
    targets = given
    for _ in range(config.correction_rounds):
        inner = torch.zeros_like(given)
        for g in np.unique(folds):
            fit, held = np.flatnonzero(folds != g), np.flatnonzero(folds == g)
            w, b = _fit(v[fit], targets[fit], config)
            with torch.no_grad():
                inner[held] = present_probs(v[held], w, b)
        flags = torch.as_tensor(suspects(sets, inner.double().cpu().numpy()), device=v.device)
        targets = torch.where(flags, inner, given)
    return targets


def _fit(v, y, config: RegionProbe):
    """MAP weights (d, C + 1) and bias (C + 1,) of the model on views ``v`` (M, J, d) and
    targets ``y`` (M, C) in [0, 1], by L-BFGS from zero (every view and every output alike)."""
    import torch

    w = torch.zeros(v.shape[2], y.shape[1] + 1, device=v.device, requires_grad=True)
    b = torch.zeros(y.shape[1] + 1, device=v.device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=config.max_iter, line_search_fn="strong_wolfe")
    eps = 1e-6

    def closure():
        opt.zero_grad()
        p = present_probs(v, w, b).clamp(eps, 1.0 - eps)
        loss = (torch.nn.functional.binary_cross_entropy(p, y, reduction="sum")
                + config.weight_decay / 2 * (w ** 2).sum()) / y.numel()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()
