"""Out-of-sample posteriors p(y|x): no sample's probabilities come from a model that saw its label.

Methods (registry ``POSTERIOR_METHODS``):
    ``linear``    K-fold robust linear probe (``scoring.probes``), the recipe of "Active label
                  cleaning" (Bernhardt et al., Nat. Commun. 2022): bounded logits a*tanh(z/a),
                  label smoothing, weight decay.
    ``graph``     K-fold kNN-graph label spreading (same paper, Eq. 5; Zhou et al. 2004):
                  F = (1 - mu) (I - mu S)^-1 Y with S = D^-1/2 W D^-1/2, W_ij = (1 + cos_ij) / 2
                  on the k nearest neighbours, solved by power iteration; the held-out fold's
                  rows of Y are zero, so its labels never enter.
    ``ensemble``  the mean of the two.
The linear method repeats its K-fold cross-validation on ``LINEAR_REPEATS`` differently seeded
fold splits and averages the out-of-fold probabilities (repeated K-fold: every model still never
sees the labels of the samples it predicts): averaging removes fold-split variance from the
ranking (benchmarks/RESULTS.md, "repeated K-fold linear posteriors"); above
``REPEAT_MAX_SAMPLES`` samples one split is used, as the variance a repeat removes shrinks
with N while its cost grows.
Targets are the normalised label counts, so several annotators per sample are first-class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dqaudit.dataset import label_distribution, majority_labels
from dqaudit.errors import DqauditError
from dqaudit.scoring.neighbors import KnnGraph
from dqaudit.scoring.probes import ProbeConfig, fit_probes, predict_proba
from dqaudit.scoring.scores import find_label_errors

DEFAULT_METHOD = "linear"
LINEAR_REPEATS = 3
REPEAT_MAX_SAMPLES = 50_000


def fold_splits(n: int) -> int:
    """How many differently seeded fold splits a cross-fitted linear model of ``n`` samples
    averages over: ``LINEAR_REPEATS``, or one above ``REPEAT_MAX_SAMPLES`` (module docstring)."""
    return LINEAR_REPEATS if n <= REPEAT_MAX_SAMPLES else 1

# L-BFGS iterations of a correction round's probes after the first, which start from the last
# round's weights: the same flags as 100 in less time (benchmarks/RESULTS.md, "correction
# rounds in the flag's order")
WARM_ITER = 30


@dataclass(frozen=True)
class GraphConfig:
    mu: float = 0.9  # weight of the neighbours against the sample's own (given) label
    iterations: int = 30
    prior: float = 1e-3  # mass of the class prior mixed in, for samples the graph cannot reach


def stratified_folds(labels: np.ndarray, *, n_folds: int = 5, seed: int) -> np.ndarray:
    """(N,) fold index per sample, stratified by label, seeded."""
    rng = np.random.default_rng(seed)
    folds = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        rng.shuffle(members)
        # continue the round-robin across classes so small classes do not pile into fold 0
        start = int(rng.integers(n_folds))
        folds[members] = (np.arange(len(members)) + start) % n_folds
    return folds


def _fold_models(x, targets, train_masks, config, device, seed, init=None, max_iter=None):
    """Fit one probe per row of ``train_masks`` (M, N) with per-model ``targets`` (M, N, C);
    return their (M, N, C) probabilities on every sample and their weights (W, b). Above
    ``config.max_fit_samples`` rows the probes are fitted on one seeded random subset of rows
    (each on its own training rows within it). ``init``: weights to start from (see
    ``fit_probes``)."""
    n = x.shape[0]
    if n > config.max_fit_samples:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=config.max_fit_samples,
                                                          replace=False))
        w, b = fit_probes(x[rows], targets[:, rows], train_masks[:, rows].astype(np.float32),
                          config=config, device=device, init=init, max_iter=max_iter)
    else:
        w, b = fit_probes(x, targets, train_masks.astype(np.float32), config=config,
                          device=device, init=init, max_iter=max_iter)
    return predict_proba(x, w, b, config=config, device=device), (w, b)


def linear_posteriors(x: np.ndarray, label_counts: np.ndarray, folds: np.ndarray, *,
                      config: ProbeConfig = ProbeConfig(), correction_rounds: int = 2,
                      device: str = "cpu", labels: np.ndarray | None = None,
                      seed: int) -> np.ndarray:
    """(N, C) out-of-fold probabilities of the robust linear probe; x is projected (N, D).
    ``seed``: the subset of rows each probe is fitted on above ``config.max_fit_samples``.

    With ``correction_rounds`` > 0 the probe of each outer fold f is trained on targets in which
    the suspected label errors of its training part are replaced by their posteriors (soft
    pseudo-labels). The suspects are found by an inner cross-validation inside the training
    part alone, so the held-out fold's labels never reach its model, not even through another
    sample's corrected target, and chosen as the audit chooses its flag
    (``scores.find_label_errors``): the suspects' own noisy labels stop pulling the fit towards
    them (benchmarks/RESULTS.md, "correction rounds in the flag's order").
    """
    n, c = label_counts.shape
    k = int(folds.max()) + 1
    dist = label_distribution(label_counts)
    # the given labels (None: by the one tie rule, ``dataset.majority_labels``)
    labels = majority_labels(label_counts) if labels is None else labels
    # targets[f]: the training targets that outer fold f's probe will use
    targets = np.repeat(dist[None], k, axis=0)
    pairs = [(f, g) for f in range(k) for g in range(k) if g != f]
    masks = np.stack([(folds != f) & (folds != g) for f, g in pairs])
    weights = None
    for _ in range(correction_rounds):
        if weights is None:
            # the first round's targets are the labels for every f, so probes (f, g) and (g, f)
            # are the same fit (same rows, same targets): fit each unordered pair once
            once = [m for m, (f, g) in enumerate(pairs) if f < g]
            which = [once.index(pairs.index((min(f, g), max(f, g)))) for f, g in pairs]
            probs, weights = _fold_models(x, targets[:1].repeat(len(once), axis=0),
                                          masks[once], config, device, seed)
            probs, weights = probs[which], tuple(v[which] for v in weights)
        else:
            # a later round's probes differ from the last round's in the targets of a few
            # suspects: started from those weights, they reach the same (convex) optimum
            probs, weights = _fold_models(x, targets[[f for f, _ in pairs]], masks, config,
                                          device, seed, init=weights, max_iter=WARM_ITER)
        inner = np.zeros((k, n, c))
        for m, (f, g) in enumerate(pairs):
            inner[f, folds == g] = probs[m, folds == g]
        for f in range(k):
            train = folds != f
            p = inner[f, train]
            flags = find_label_errors(labels[train], dist[train], p).flags
            corrected = dist.copy()
            corrected[np.flatnonzero(train)[flags]] = p[flags]
            targets[f] = corrected
    # fitted from zero to convergence: a start from the inner probes' weights saved seconds but
    # left the outer probes where the shared line search had nudged them, so a sample's own
    # label moved its out-of-fold posterior by 1e-4 (tests/test_scores.py)
    outer, _ = _fold_models(x, targets, np.stack([folds != f for f in range(k)]), config, device,
                            seed)
    return outer[folds, np.arange(n)]


def graph_posteriors(graph: KnnGraph, label_counts: np.ndarray, folds: np.ndarray, *,
                     config: GraphConfig = GraphConfig()) -> np.ndarray:
    """(N, C) out-of-fold label-spreading probabilities on the kNN graph."""
    from scipy import sparse

    n, c = label_counts.shape
    n_folds = int(folds.max()) + 1
    rows = np.repeat(np.arange(n), graph.k)
    w = sparse.csr_matrix(((1.0 + graph.similarities.ravel()) / 2.0,
                           (rows, graph.indices.ravel())), shape=(n, n))
    w = w.maximum(w.T)  # symmetric kNN graph
    deg = np.asarray(w.sum(axis=1)).ravel()
    inv_sqrt = 1.0 / np.sqrt(np.maximum(deg, 1e-12))
    s = sparse.diags(inv_sqrt) @ w @ sparse.diags(inv_sqrt)
    dist = label_distribution(label_counts)
    y = np.zeros((n, n_folds * c))
    for f in range(n_folds):
        train = folds != f
        y[train, f * c:(f + 1) * c] = dist[train]
    f_mat = y.copy()
    for _ in range(config.iterations):
        f_mat = config.mu * (s @ f_mat) + (1 - config.mu) * y
    out = f_mat.reshape(n, n_folds, c)[np.arange(n), folds]
    prior = dist.mean(axis=0)
    out = np.maximum(out, 0) + config.prior * prior
    return out / out.sum(axis=1, keepdims=True)


def review_posteriors(method: str, x: np.ndarray, graph: KnnGraph, label_counts: np.ndarray,
                      folds: np.ndarray, *, device: str = "cpu",
                      graph_probs: np.ndarray | None = None,
                      labels: np.ndarray | None = None, seed: int) -> np.ndarray:
    """(N, C) the posteriors the review order ranks by: ``method``'s out-of-fold posteriors on
    one fold split, the linear probe without its label-correction rounds.

    These are the posteriors of the cleaning simulation's selectors (``dqaudit simulate``), so
    the review queue is the order that was measured; the correction rounds sharpen the flag
    but not the review order (benchmarks/RESULTS.md, "Cleaning efficiency ..., review order").

    ``graph_probs``: the graph posteriors on these folds when already computed (the audit's
    ``Posteriors.by_method["graph"]``), so they are not computed again.
    """
    _require_method(method)
    if method != "linear" and graph_probs is None:
        graph_probs = graph_posteriors(graph, label_counts, folds)
    if method == "graph":
        return graph_probs
    lin = linear_posteriors(x, label_counts, folds, correction_rounds=0, device=device,
                            labels=labels, seed=seed)
    if method == "ensemble":
        return (lin + graph_probs) / 2.0
    return lin


@dataclass
class Posteriors:
    """Out-of-fold probabilities (N, C) of every method that ran, and the chosen one."""

    method: str
    probs: np.ndarray
    by_method: dict
    fold_sets: list  # the (N,) K-fold splits the linear probe averaged over (graph: the first)

    @property
    def fold_splits(self) -> int:
        return len(self.fold_sets)


def _linear(ctx) -> np.ndarray:
    return np.mean([linear_posteriors(ctx["x"], ctx["counts"], folds, device=ctx["device"],
                                      labels=ctx["labels"], seed=ctx["seed"])
                    for folds in ctx["fold_sets"]], axis=0)


def _graph(ctx) -> np.ndarray:
    return graph_posteriors(ctx["graph"], ctx["counts"], ctx["fold_sets"][0])


def _ensemble(ctx) -> np.ndarray:
    return (ctx.setdefault_result("linear") + ctx.setdefault_result("graph")) / 2.0


POSTERIOR_METHODS: dict[str, Callable] = {"linear": _linear, "graph": _graph,
                                          "ensemble": _ensemble}


class _Context(dict):
    """Arguments of the methods, plus a memo so the ensemble reuses its parts."""

    def setdefault_result(self, name: str) -> np.ndarray:
        memo = self.setdefault("results", {})
        if name not in memo:
            memo[name] = POSTERIOR_METHODS[name](self)
        return memo[name]


def _require_method(method: str) -> None:
    if method not in POSTERIOR_METHODS:
        raise DqauditError(f"unknown posterior method {method!r}; valid: "
                           f"{', '.join(POSTERIOR_METHODS)}")


def compute_posteriors(
    x: np.ndarray,
    graph: KnnGraph,
    label_counts: np.ndarray,
    labels: np.ndarray,
    *,
    method: str = DEFAULT_METHOD,
    n_folds: int = 5,
    seed: int,
    device: str = "cpu",
    repeats: int | None = None,
) -> Posteriors:
    """Out-of-sample posteriors with ``method`` (one of ``POSTERIOR_METHODS``).

    ``repeats``: fold splits the linear probe averages over (seeds ``seed``, ``seed + 1``...;
    the graph uses the first); None: ``LINEAR_REPEATS`` up to ``REPEAT_MAX_SAMPLES`` samples,
    one above, and one for the graph method alone."""
    _require_method(method)
    n_folds = max(2, min(n_folds, len(labels)))
    if repeats is None:
        # only the linear probe averages over splits; the graph uses one
        repeats = fold_splits(len(labels)) if method != "graph" else 1
    if repeats < 1:
        raise DqauditError(f"repeats must be at least 1, not {repeats}")
    fold_sets = [stratified_folds(labels, n_folds=n_folds, seed=seed + r) for r in range(repeats)]
    ctx = _Context(x=x, graph=graph, counts=label_counts, labels=labels, device=device,
                   fold_sets=fold_sets, seed=seed)
    probs = ctx.setdefault_result(method)
    return Posteriors(method=method, probs=probs.astype(np.float64),
                      by_method=dict(ctx["results"]), fold_sets=fold_sets)
