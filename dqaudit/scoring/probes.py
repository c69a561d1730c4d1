"""Cheap probes on embeddings, many trained at once as one batched tensor problem.

A probe is a multinomial logistic regression on (projected) embeddings, trained with the
noise-robust recipe of "Active label cleaning" (Bernhardt et al., Nat. Commun. 2022):

    loss_m = sum_n w_mn * CE(smooth(t_mn), softmax(a * tanh(z_mn / a))) / sum_n w_mn
             + weight_decay * ||W_m||^2,         z_mn = x_n W_m + b_m

``a`` bounds the logits (a penalised, saturating logit keeps a few wrong labels from pulling
the weights far), ``smooth`` is label smoothing. M probes share the inputs X (N, D) and differ
in their targets t (M, N, C) and sample weights w (M, N): K cross-validation folds, or the R x G
runs of CLR injection. Their losses are independent, so one optimiser on the stacked weights
(M, D, C) fits them all together (ARCHITECTURE rule 5). Each objective is strictly convex, so
every probe converges to its own optimum; the shared L-BFGS line search only couples the paths
there (measured: a probe's outputs move by at most 2e-5 when another probe's labels change).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ProbeConfig:
    """Hyper-parameters of the robust linear probe (defaults chosen on the benchmark)."""

    weight_decay: float = 0.03
    logit_bound: float = 4.0  # a in a * tanh(z / a); 0 turns the bound off
    label_smoothing: float = 0.1
    max_iter: int = 100
    pca_dim: int = 512
    # Above this many samples a probe is fitted on a seeded random subset of them (and still
    # predicts every sample): a linear probe on a few hundred dimensions has long saturated
    # there, and the fit's cost is linear in the rows (see benchmarks/scale.py).
    max_fit_samples: int = 50_000


def project(embeddings: np.ndarray, *, dim: int = 512, seed: int,
            fit_samples: int = 20_000) -> np.ndarray:
    """Centre, project onto the top ``dim`` principal components and scale to unit variance.

    Unsupervised (labels never enter), so using all samples leaks no label into any fold.
    Above ``fit_samples`` rows, mean, components and scale are fitted on a seeded random
    subset and applied in float32 chunks, so memory stays O(N * dim) (``embeddings`` may be a
    memory-mapped array); a full fit would hold float64 copies of all N x D values (2 GB at
    100k x 1,280-d) for directions that a 20,000-row sample already settles.
    Returns (N, min(dim, D, N)) float32.
    """
    if embeddings.shape[0] > fit_samples:
        return _project_large(embeddings, dim=dim, seed=seed, fit_samples=fit_samples)
    x = embeddings.astype(np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    k = min(dim, x.shape[1], x.shape[0])
    if k < x.shape[1]:
        from sklearn.decomposition import PCA

        x = PCA(n_components=k, svd_solver="randomized" if x.shape[0] > 2000 else "full",
                random_state=seed).fit_transform(x)
    scale = x.std() or 1.0
    return (x / scale).astype(np.float32)


def _project_large(embeddings, *, dim: int, seed: int, fit_samples: int,
                   chunk: int = 16384) -> np.ndarray:
    n, d = embeddings.shape
    rng = np.random.default_rng(seed)
    fit = np.asarray(embeddings[np.sort(rng.choice(n, size=fit_samples, replace=False))],
                     dtype=np.float64)
    mean = fit.mean(axis=0)
    k = min(dim, d)
    components = None
    fit = fit - mean
    if k < d:
        from sklearn.decomposition import PCA

        components = PCA(n_components=k, svd_solver="randomized",
                         random_state=seed).fit(fit).components_
        fit = fit @ components.T
    scale = fit.std() or 1.0
    out = np.empty((n, k), dtype=np.float32)
    mean32 = mean.astype(np.float32)
    proj = None if components is None else (components.T / scale).astype(np.float32)
    for s in range(0, n, chunk):
        block = np.asarray(embeddings[s:s + chunk], dtype=np.float32) - mean32
        out[s:s + chunk] = block @ proj if proj is not None else block / scale
    return out


def fit_probes(
    x: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray,
    *,
    config: ProbeConfig = ProbeConfig(),
    device: str = "cpu",
    init=None,
    max_iter: int | None = None,
):
    """Fit M probes at once.

    Args:
        x: (N, D) float32 inputs (already projected).
        targets: (M, N, C) or (N, C) target distributions (rows sum to 1).
        weights: (M, N) non-negative sample weights (0 = not in this probe's training set).
        init: optional (W, b) to start from, shapes (M or 1, D, C) and (M or 1, 1, C); a probe
            whose labels differ from an already fitted one in a few rows starts next to its
            optimum and needs far fewer iterations (each objective is strictly convex, so the
            optimum does not depend on the start).
        max_iter: L-BFGS iterations, ``config.max_iter`` unless given.
    Returns:
        (W, b): torch tensors (M, D, C) and (M, 1, C) on ``device``.
    """
    import torch

    m, n = weights.shape
    c = targets.shape[-1]
    xt = torch.as_tensor(x, dtype=torch.float32, device=device)
    tt = torch.as_tensor(targets, dtype=torch.float32, device=device)
    if tt.dim() == 2:
        tt = tt.unsqueeze(0).expand(m, n, c)
    eps = config.label_smoothing
    tt = tt * (1 - eps) + eps / c
    wt = torch.as_tensor(weights, dtype=torch.float32, device=device)
    wt = wt / wt.sum(dim=1, keepdim=True).clamp_min(1e-12)
    d = xt.shape[1]
    if init is None:
        w_param = torch.zeros(m, d, c, device=device, requires_grad=True)
        b_param = torch.zeros(m, 1, c, device=device, requires_grad=True)
    else:
        w0, b0 = (torch.as_tensor(v, dtype=torch.float32, device=device) for v in init)
        w_param = w0.expand(m, d, c).clone().requires_grad_(True)
        b_param = b0.expand(m, 1, c).clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w_param, b_param], lr=1.0,
                            max_iter=config.max_iter if max_iter is None else max_iter,
                            history_size=10, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure():
        opt.zero_grad()
        logits = bounded_logits(torch.einsum("nd,mdc->mnc", xt, w_param) + b_param,
                                config.logit_bound)
        ce = -(tt * torch.log_softmax(logits, dim=-1)).sum(-1)  # (M, N)
        loss = (ce * wt).sum() + config.weight_decay * (w_param ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w_param.detach(), b_param.detach()


def bounded_logits(z, bound: float):
    import torch

    return bound * torch.tanh(z / bound) if bound and bound > 0 else z


def predict_proba(x: np.ndarray, w, b, *, config: ProbeConfig = ProbeConfig(),
                  device: str = "cpu", chunk: int = 16384) -> np.ndarray:
    """(M, N, C) probabilities of M probes on x (N, D)."""
    import torch

    out = []
    with torch.no_grad():
        for s in range(0, x.shape[0], chunk):
            xt = torch.as_tensor(x[s:s + chunk], dtype=torch.float32, device=device)
            logits = bounded_logits(torch.einsum("nd,mdc->mnc", xt, w) + b, config.logit_bound)
            out.append(torch.softmax(logits, dim=-1).cpu().numpy())
    return np.concatenate(out, axis=1)
