"""Controlled corrupted-label-ratio (CLR) injection (after Czwalinna 2022, "The Effect of Corrupt
Labels on Computer Vision Performance").

Protocol: a stratified, seeded train / held-out split; known extra fractions of the train labels
are corrupted (nested: within a repeat, a higher ratio keeps every flip of the lower ones); for
every (ratio, repeat) a probe is trained on the embeddings and scored on the held-out part. All
probes train together as one batched tensor problem (weights of shape (R x G, D, C)).

Estimator (``calibrated_count``): the dataset's own noise is read by the confident-joint count
of out-of-fold posteriors, S. Injection calibrates how that count responds to added noise:
with total noise eta(r) = eta0 + r (1 - k eta0), k = C / (C - 1), and S(r) = beta eta(r), a line
S(r) = c0 + c1 r fitted over the injected ratios gives eta0 = c0 / (c1 + k c0). It corrects the
count's sensitivity (beta, often below 1 when errors are hard to see) but assumes the count reads
zero on clean labels; where the model's own mistakes look like label errors it over-reads.
The interval comes from a bootstrap over repeats and samples. See docs/clr.md and
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from dqaudit.errors import DqauditError
from dqaudit.scoring.posteriors import stratified_folds
from dqaudit.scoring.probes import ProbeConfig, fit_probes, predict_proba
from dqaudit.scoring.scores import label_error_fraction

DEFAULT_GRID = (0.0, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.10)
MODES = ("uniform", "posterior")


@dataclass(frozen=True)
class ClrConfig:
    grid: tuple[float, ...] = DEFAULT_GRID
    repeats: int = 20
    mode: str = "uniform"
    heldout_fraction: float = 0.2
    drop_outliers: bool = True  # drop runs with |z| > 3 within a ratio, as the study did
    calibration_grid: tuple[float, ...] = (0.0, 0.05, 0.10)
    calibration_repeats: int = 3
    calibration_folds: int = 3
    bootstrap: int = 500  # resamples of repeats and samples for the interval
    # Above this many samples the protocol runs on a stratified, seeded subsample of this size:
    # a rate is measured (the interval says how well), while the batched probes' memory grows
    # as runs x samples x classes (200 x 800k x 10 floats, several times over, at 1M samples).
    max_samples: int | None = 20_000
    probe: ProbeConfig = field(default_factory=lambda: ProbeConfig(max_iter=60))
    # Injected runs start from the uncorrupted probe's weights and take this many L-BFGS
    # iterations (None: every probe from zero with probe.max_iter); see injection_runs.
    warm_start_iter: int | None = 20


def stratified_split(labels: np.ndarray, *, heldout_fraction: float, seed: int) -> np.ndarray:
    """(N,) bool, True for the train part; each class split in the same proportion."""
    rng = np.random.default_rng(seed)
    train = np.ones(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_held = int(round(heldout_fraction * len(members)))
        if len(members) - n_held < 1:
            n_held = len(members) - 1
        train[members[:n_held]] = False
    return train


def subsample(labels: np.ndarray, max_samples: int | None, *, seed: int) -> np.ndarray | None:
    """Row indices of a stratified, seeded subsample of ``max_samples`` rows, or None when
    there are not more rows than that (or ``max_samples`` is 0 or None)."""
    n = len(labels)
    if not max_samples or n <= max_samples:
        return None
    return np.flatnonzero(stratified_split(labels, heldout_fraction=1 - max_samples / n,
                                           seed=seed + 1))


def take_subsample(x: np.ndarray, labels: np.ndarray, probs: np.ndarray | None,
                   max_samples: int | None, *, seed: int):
    """(x, labels, probs) restricted to ``subsample``'s rows (unchanged when it keeps all)."""
    keep = subsample(labels, max_samples, seed=seed)
    if keep is None:
        return x, labels, probs
    return x[keep], labels[keep], None if probs is None else probs[keep]


def nested_corruptions(labels: np.ndarray, n_classes: int, *, grid, repeats: int, mode: str,
                       seed: int, probs: np.ndarray | None = None) -> np.ndarray:
    """(repeats, len(grid), N) corrupted copies of ``labels``.

    Within a repeat one random order of the samples and one replacement label per sample are
    drawn; ratio g flips the first round(g N) samples of that order, so every higher ratio keeps
    the lower ones' flips. ``uniform``: the new label is a uniformly random other class;
    ``posterior``: drawn from ``probs`` (out-of-fold posteriors) over the other classes, so flips
    follow the dataset's own confusions.
    """
    if mode not in MODES:
        raise DqauditError(f"unknown corruption mode {mode!r}; valid: {', '.join(MODES)}")
    if mode == "posterior" and probs is None:
        raise DqauditError("corruption mode 'posterior' needs out-of-fold posteriors")
    n = len(labels)
    out = np.repeat(labels[None, None, :], repeats, axis=0).repeat(len(grid), axis=1)
    for r in range(repeats):
        rng = np.random.default_rng([seed, r])
        order = rng.permutation(n)
        if mode == "uniform":
            shift = rng.integers(1, n_classes, size=n)
            new = (labels + shift) % n_classes
        else:
            p = probs.copy()
            p[np.arange(n), labels] = 0
            p = np.where(p.sum(1, keepdims=True) > 0, p, 1.0)
            p[np.arange(n), labels] = 0
            p /= p.sum(axis=1, keepdims=True)
            cum = p.cumsum(axis=1)
            new = (rng.random((n, 1)) > cum).sum(axis=1).clip(max=n_classes - 1)
        for g, ratio in enumerate(grid):
            k = int(round(ratio * n))
            flip = order[:k]
            out[r, g, flip] = new[flip]
    return out


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict:
    """Accuracy and support-weighted precision, recall and F1 of M prediction rows (M, N)."""
    m = y_pred.shape[0]
    conf = np.zeros((m, n_classes, n_classes))
    for i in range(m):
        np.add.at(conf[i], (y_true, y_pred[i]), 1)
    tp = np.diagonal(conf, axis1=1, axis2=2)
    support = conf.sum(axis=2)
    predicted = conf.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall,
                   out=np.zeros_like(tp), where=(precision + recall) > 0)
    w = support / support.sum(axis=1, keepdims=True)
    return {"accuracy": tp.sum(1) / support.sum(1), "precision": (w * precision).sum(1),
            "recall": (w * recall).sum(1), "f1": (w * f1).sum(1)}


def _one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    return np.eye(n_classes, dtype=np.float32)[labels]


def injection_runs(x: np.ndarray, labels: np.ndarray, n_classes: int, *, config: ClrConfig,
                   seed: int, device: str = "cpu", probs: np.ndarray | None = None) -> dict:
    """Train one probe per (repeat, ratio) on the corrupted train part; score on held-out."""
    train = stratified_split(labels, heldout_fraction=config.heldout_fraction, seed=seed)
    tr, ho = np.flatnonzero(train), np.flatnonzero(~train)
    corrupted = nested_corruptions(labels[tr], n_classes, grid=config.grid,
                                   repeats=config.repeats, mode=config.mode, seed=seed,
                                   probs=None if probs is None else probs[tr])
    r, g, n_tr = corrupted.shape
    pred = _train_and_predict(x[tr], x[ho], labels[tr], corrupted.reshape(r * g, n_tr),
                              n_classes, config=config, device=device)
    metrics = classification_metrics(labels[ho], pred, n_classes)
    actual = (corrupted != labels[tr][None, None, :]).mean(axis=2)
    return {"metrics": {k: v.reshape(r, g) for k, v in metrics.items()},
            "actual_ratio": actual, "n_train": int(n_tr), "n_heldout": int(len(ho))}


def _train_and_predict(x_tr, x_ho, clean, runs, n_classes, *, config: ClrConfig,
                       device: str) -> np.ndarray:
    """Held-out predictions (M, N_ho) of one probe per row of ``runs`` (M, N_tr) labels.

    Identical label rows (ratio 0 in every repeat) are fitted once. With
    ``config.warm_start_iter``, the probe on the uncorrupted labels is fitted first and every
    corrupted run starts from its weights: a run differs from it in at most a tenth of the
    labels, so its (strictly convex) optimum is near, and a few iterations reach it.
    """
    unique, inverse = np.unique(runs, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    ones = np.ones((len(unique), len(clean)), np.float32)
    if config.warm_start_iter is None:
        w, b = fit_probes(x_tr, _one_hot(unique, n_classes), ones, config=config.probe,
                          device=device)
    else:
        import torch

        w0, b0 = fit_probes(x_tr, _one_hot(clean, n_classes), ones[:1], config=config.probe,
                            device=device)
        is_clean = (unique == clean[None, :]).all(axis=1)
        w = w0.expand(len(unique), *w0.shape[1:]).clone()
        b = b0.expand(len(unique), *b0.shape[1:]).clone()
        rest = np.flatnonzero(~is_clean)
        if len(rest):
            wr, br = fit_probes(x_tr, _one_hot(unique[rest], n_classes), ones[rest],
                                config=config.probe, device=device, init=(w0, b0),
                                max_iter=config.warm_start_iter)
            idx = torch.as_tensor(rest, device=w.device)
            w[idx], b[idx] = wr, br
    pred = predict_proba(x_ho, w, b, config=config.probe, device=device).argmax(axis=2)
    return pred[inverse]


def curves(runs: dict, grid, *, drop_outliers: bool) -> dict:
    """Mean and std per ratio of each metric (|z| > 3 runs dropped), delta to the 0% mean."""
    out = {"ratios": list(map(float, grid))}
    for name, values in runs["metrics"].items():
        means, stds, kept = [], [], []
        for g in range(values.shape[1]):
            v = values[:, g]
            if drop_outliers and v.std() > 0:
                v = v[np.abs((v - v.mean()) / v.std()) <= 3]
            means.append(float(v.mean()))
            stds.append(float(v.std()))
            kept.append(int(len(v)))
        out[name] = {"mean": np.round(means, 5).tolist(), "std": np.round(stds, 5).tolist(),
                     "delta": np.round(np.array(means) - means[0], 5).tolist(), "n_runs": kept}
    return out


def regression(values: np.ndarray, grid, *, seed: int, test_fraction: float = 0.25) -> dict:
    """Linear regression of a metric on CLR over all runs (repeats x ratios): Pearson r and
    p-value on all runs; slope, intercept and RMSE fitted on a train split of the runs and
    evaluated on the rest (the study's Table 3)."""
    from scipy import stats

    r_, g_ = values.shape
    x = np.tile(np.asarray(grid, dtype=float), r_)
    y = values.reshape(-1)
    pearson = stats.pearsonr(x, y) if np.ptp(y) > 0 else (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    test = rng.random(len(y)) < test_fraction
    slope, intercept = np.polyfit(x[~test], y[~test], 1)
    rmse = float(np.sqrt(np.mean((slope * x[test] + intercept - y[test]) ** 2))) \
        if test.any() else None
    return {"pearson_r": round(float(pearson[0]), 4), "p_value": float(pearson[1]),
            "slope": round(float(slope), 5), "intercept": round(float(intercept), 5),
            "rmse": None if rmse is None else round(rmse, 5), "n_runs": int(len(y))}


def _oof_posteriors(x, labels_runs, n_classes, *, folds: int, config: ProbeConfig, seed: int,
                    device: str) -> np.ndarray:
    """(M, N, C) K-fold out-of-fold posteriors of each run's labels (M, N), all fitted at once."""

    m, n = labels_runs.shape
    fold = stratified_folds(labels_runs[0], n_folds=folds, seed=seed)
    masks = np.concatenate([np.stack([(fold != f)] * m) for f in range(folds)]).astype(
        np.float32)
    targets = np.concatenate([_one_hot(labels_runs, n_classes)] * folds)
    w, b = fit_probes(x, targets, masks, config=config, device=device)
    probs = predict_proba(x, w, b, config=config, device=device).reshape(folds, m, n, -1)
    return probs[fold, :, np.arange(n)].transpose(1, 0, 2)


def calibrated_count(x: np.ndarray, labels: np.ndarray, n_classes: int, *, config: ClrConfig,
                     seed: int, device: str = "cpu", probs: np.ndarray | None = None) -> dict:
    """The estimator of the module docstring, with a bootstrap interval over repeats and
    samples: each resample draws the calibration repeats with replacement and the samples
    with replacement (as multiplicities in the confident joint, posteriors kept), and solves
    again."""

    grid = np.asarray(config.calibration_grid, dtype=float)
    runs = nested_corruptions(labels, n_classes, grid=grid, repeats=config.calibration_repeats,
                              mode=config.mode, seed=seed + 7919, probs=probs)
    r, g, n = runs.shape
    oof = _oof_posteriors(x, runs.reshape(r * g, n), n_classes,
                          folds=config.calibration_folds, config=config.probe, seed=seed,
                          device=device).reshape(r, g, n, -1)
    k = n_classes / (n_classes - 1)

    def counts(weights=None):
        return np.array([[label_error_fraction(runs[q, j], oof[q, j], weights)
                          for j in range(g)] for q in range(r)])

    def solve(s):
        c1, c0 = np.polyfit(np.tile(grid, len(s)), s.reshape(-1), 1)
        return float(np.clip(c0 / max(c1 + k * c0, 1e-9), 0.0, 1.0)), float(c0), float(c1)

    s = counts()
    estimate, c0, c1 = solve(s)
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(config.bootstrap):
        weights = rng.multinomial(n, np.full(n, 1.0 / n))
        boot.append(solve(counts(weights)[rng.integers(0, r, r)])[0])
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"estimate": round(estimate, 4), "ci_low": round(float(min(lo, estimate)), 4),
            "ci_high": round(float(max(hi, estimate)), 4), "count_intercept": round(c0, 4),
            "count_slope": round(c1, 4),
            "count_by_ratio": np.round(s.mean(axis=0), 4).tolist()}


BRACKET_ASSUMPTION = (
    "upper end: the dataset's own errors are at least as easy for the count to see as flips "
    "that follow the dataset's own confusions (new label drawn from the out-of-fold posterior), "
    "measured by injection on this dataset (upper 95% bootstrap limit); lower end 0: from labels "
    "and features alone, a clean dataset whose suspects are all the encoder's own mistakes "
    "cannot be told apart from a noisy one, so no gold-free lower end above 0 holds in general "
    "(verify a random sample for one: dqaudit verify)")


def bracket(x: np.ndarray, labels: np.ndarray, n_classes: int, *, config: ClrConfig,
            seed: int, estimate: dict, device: str = "cpu",
            probs: np.ndarray | None = None) -> dict:
    """The gold-free plausible range of the share of wrong labels (``BRACKET_ASSUMPTION``).

    The count's response to injected flips drawn from the posterior over the other classes is
    the weakest measured (they land where the encoder itself is unsure), so calibrating with it
    gives the highest reading consistent with the data: its upper bootstrap limit is the upper
    end. ``estimate`` is the ``config.mode`` calibration already computed: it is that reading
    when the mode is ``posterior``, and the upper end's source (said so) when there are no
    posteriors to draw from. Measured on 8 CIFAR-10N cases in benchmarks/clr_accuracy.py
    (benchmarks/RESULTS.md).
    """
    assumption = BRACKET_ASSUMPTION
    if config.mode == "posterior" or probs is None:
        upper = estimate
        if probs is None:
            assumption += f"; here without posteriors, from {config.mode} injection"
    else:
        upper = calibrated_count(x, labels, n_classes, config=replace(config, mode="posterior"),
                                 seed=seed, device=device, probs=probs)
    return {"bracket_low": 0.0, "bracket_high": upper["ci_high"],
            "bracket_assumption": assumption, "bracket_mode_estimate": upper["estimate"]}


def estimate_clr(embeddings_projected: np.ndarray, labels: np.ndarray, n_classes: int, *,
                 config: ClrConfig, seed: int, device: str,
                 probs: np.ndarray | None = None) -> dict:
    """The whole protocol: injection curves, regression table and the CLR estimate (JSON-ready)."""

    t = time.perf_counter()
    n_all = len(labels)
    embeddings_projected, labels, probs = take_subsample(embeddings_projected, labels, probs,
                                                         config.max_samples, seed=seed)
    runs = injection_runs(embeddings_projected, labels, n_classes, config=config, seed=seed,
                          device=device, probs=probs)
    table = {name: regression(v, config.grid, seed=seed) for name, v in runs["metrics"].items()}
    probe_seconds = time.perf_counter() - t
    est = calibrated_count(embeddings_projected, labels, n_classes, config=config, seed=seed,
                           device=device, probs=probs)
    return {
        **{k: est[k] for k in ("estimate", "ci_low", "ci_high")},
        **bracket(embeddings_projected, labels, n_classes, config=config, seed=seed,
                  device=device, probs=probs, estimate=est),
        "method": "calibrated_count",
        "label_changes_at_estimate": 0,  # summary.json label_changes when it ran
        "mode": config.mode,
        "grid": list(map(float, config.grid)),
        "repeats": config.repeats,
        "n_train": runs["n_train"], "n_heldout": runs["n_heldout"],
        "n_samples_used": int(len(labels)), "n_samples": int(n_all),
        "curves": curves(runs, config.grid, drop_outliers=config.drop_outliers),
        "regression": table,
        "calibration": {k: est[k] for k in ("count_intercept", "count_slope",
                                            "count_by_ratio")}
        | {"grid": list(map(float, config.calibration_grid))},
        "seconds": {"injection_probes": round(probe_seconds, 2),
                    "total": round(time.perf_counter() - t, 2)},
    }
