"""The active label cleaning simulation (Bernhardt et al., Nat. Commun. 2022, Table 1 protocol).

Each sample has a true label distribution (e.g. CIFAR-10H's ~51 annotations). Initial noisy
labels are drawn from the distributions after temperature scaling, the temperature solved to hit
a target noise rate. A selector ranks the samples; the top one gets annotations drawn from its
true distribution until a strict majority of all its labels agrees (at least one new annotation,
at most ``max_draws``); every annotation counts against the budget; model-based selectors refit
their posteriors every ``refit_every`` annotations. The outcome is the share of correct labels
(majority label == argmax of the true distribution) against the number of re-annotations.

Selectors: ``random``; ``oracle`` (KL divergence of the current labels from the true
distribution, the paper's oracle); ``linear``, ``graph``, ``ensemble``: the posteriors of
``dqaudit.scoring.posteriors`` (one 5-fold split, no correction rounds, for speed) ranked by
``scores.review_score``, the order of ``dqaudit relabel queue``; ``entropy``: posterior entropy
(uncertainty sampling, for contrast).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dqaudit.dataset import majority_labels
from dqaudit.devices import resolve_device
from dqaudit.embed import auto_image_size, embed_images, load_encoder
from dqaudit.embed.encoders import DEFAULT_ENCODER
from dqaudit.errors import DqauditError
from dqaudit.io.ingest import median_image_side
from dqaudit.io.manifest import load_manifest
from dqaudit.io.outputs import write_json
from dqaudit.report.figures import pyplot, svg_text
from dqaudit.scoring import scores
from dqaudit.scoring.neighbors import knn
from dqaudit.scoring.posteriors import review_posteriors, stratified_folds
from dqaudit.scoring.probes import project

SELECTORS = ("random", "oracle", "linear", "graph", "ensemble", "entropy")
DEFAULT_SELECTORS = SELECTORS

# the simulation's features (projection, kNN graph, review folds) are fixed; its seeds vary
# the noise and the annotators, so every selector is compared on the same representation
PROJECTION_SEED = 0


def tempered(dist: np.ndarray, temperature: float) -> np.ndarray:
    """Rows of ``dist`` raised to 1/T and renormalised (T < 1 sharpens, T > 1 flattens)."""
    with np.errstate(divide="ignore"):
        logp = np.where(dist > 0, np.log(np.maximum(dist, 1e-300)), -np.inf) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    p = np.exp(logp)
    return p / p.sum(axis=1, keepdims=True)


def expected_noise(dist: np.ndarray, temperature: float) -> float:
    """Expected share of initial labels that differ from the true label (argmax of dist)."""
    truth = dist.argmax(axis=1)
    return float(1.0 - tempered(dist, temperature)[np.arange(len(dist)), truth].mean())


def solve_temperature(dist: np.ndarray, noise_rate: float) -> float:
    """The temperature whose sampled labels have ``noise_rate`` expected noise (bisection)."""
    lo, hi = np.log(1e-3), np.log(1e3)
    low_noise, high_noise = expected_noise(dist, np.exp(lo)), expected_noise(dist, np.exp(hi))
    if not low_noise <= noise_rate <= high_noise:
        raise DqauditError(f"a noise rate of {noise_rate:.3f} cannot be reached by temperature "
                           f"scaling these distributions (range {low_noise:.3f} to "
                           f"{high_noise:.3f})")
    for _ in range(80):
        mid = (lo + hi) / 2
        if expected_noise(dist, np.exp(mid)) < noise_rate:
            lo = mid
        else:
            hi = mid
    return float(np.exp((lo + hi) / 2))


def initial_labels(dist: np.ndarray, *, noise_rate: float, seed: int,
                   temperature: float | None = None) -> np.ndarray:
    """(N,) the noisy initial labels of simulation seed ``seed``: one draw per row of ``dist``
    tempered to ``noise_rate`` expected noise (``temperature``: the solved one, if known)."""
    if temperature is None:
        temperature = solve_temperature(dist, noise_rate)
    rng = np.random.default_rng([seed, 0])
    return np.array([rng.choice(dist.shape[1], p=row) for row in tempered(dist, temperature)])


@dataclass
class Run:
    annotations: np.ndarray   # cumulative re-annotations after each reviewed sample
    accuracy: np.ndarray      # share of correct labels after each reviewed sample
    start_accuracy: float


def _majority_done(row: np.ndarray, new: int) -> bool:
    top = row.max()
    return new >= 1 and (row == top).sum() == 1 and top > row.sum() / 2


def run_selector(priority_fn: Callable[[np.ndarray], np.ndarray], dist: np.ndarray,
                 initial: np.ndarray, *, budget: int, refit_every: int, rng,
                 max_draws: int = 10) -> Run:
    """One cleaning run. ``priority_fn(counts)`` ranks samples (higher first)."""
    n, c = dist.shape
    truth = dist.argmax(axis=1)
    counts = np.zeros((n, c))
    counts[np.arange(n), initial] = 1
    correct = initial == truth
    n_correct = int(correct.sum())
    done = np.zeros(n, dtype=bool)
    used, since_refit = 0, 0
    priority = priority_fn(counts)
    ann, acc = [0], [n_correct / n]
    while used < budget and not done.all():
        if since_refit >= refit_every:
            priority = priority_fn(counts)
            since_refit = 0
        i = int(np.argmax(np.where(done, -np.inf, priority)))
        done[i] = True
        new, last = 0, None
        while new < max_draws and not _majority_done(counts[i], new):
            last = rng.choice(c, p=dist[i])
            counts[i, last] += 1
            new += 1
        used += new
        since_refit += new
        # the rule of `dqaudit relabel apply`: majority, ties to the newest annotation
        prefer = np.array([int(initial[i]) if last is None else int(last)])
        now = majority_labels(counts[i:i + 1], prefer=prefer)[0] == truth[i]
        n_correct += int(now) - int(correct[i])
        correct[i] = now
        ann.append(used)
        acc.append(n_correct / n)
    return Run(np.array(ann), np.array(acc), acc[0])


def _model_priority(kind: str, x, graph, folds, device: str):
    """Review score of a model selector: what `dqaudit scan` writes as ``review_score`` for
    posterior method ``kind`` (``posteriors.review_posteriors``); ``entropy`` ranks by the
    linear posteriors' entropy."""

    def fn(counts):
        p = review_posteriors("linear" if kind == "entropy" else kind, x, graph, counts, folds,
                              device=device, seed=PROJECTION_SEED)
        if kind == "entropy":
            return scores.ambiguity(p)
        labels = majority_labels(counts)
        return scores.review_score_of(labels, p, label_counts=counts)

    return fn


def simulate(embeddings: np.ndarray, dist: np.ndarray, *, noise_rate: float = 0.15,
             seeds: int = 5, selectors=DEFAULT_SELECTORS, budget: int | None = None,
             refit_every: int = 100, grid_step: int | None = None, device: str = "cpu",
             progress=None) -> dict:
    """Run every selector for ``seeds`` seeds; return curves and summary numbers (JSON-ready).

    ``dist``: (N, C) true label distributions (rows sum to 1). ``budget`` defaults to 0.6 N
    re-annotations.
    """

    unknown = [s for s in selectors if s not in SELECTORS]
    if unknown:
        raise DqauditError(f"unknown selectors {unknown}; valid: {', '.join(SELECTORS)}")
    dist = np.asarray(dist, dtype=np.float64)
    dist = dist / dist.sum(axis=1, keepdims=True)
    n = len(dist)
    budget = int(budget or 0.6 * n)
    grid_step = grid_step or max(1, budget // 100)
    grid = np.arange(0, budget + 1, grid_step)
    temperature = solve_temperature(dist, noise_rate)
    x = project(embeddings, seed=PROJECTION_SEED)
    graph = knn(embeddings, k=10, device=device, seed=PROJECTION_SEED)
    truth = dist.argmax(axis=1)
    curves: dict[str, list[np.ndarray]] = {s: [] for s in selectors}
    start = []
    for seed in range(seeds):
        initial = initial_labels(dist, noise_rate=noise_rate, seed=seed,
                                 temperature=temperature)
        start.append(float((initial == truth).mean()))
        folds = stratified_folds(initial, seed=seed)
        for name in selectors:
            if name == "random":
                rank = -np.random.default_rng([seed, 2]).permutation(n).astype(float)

                def fn(counts, rank=rank):
                    return rank
            elif name == "oracle":
                entropy = scores.ambiguity(dist)

                def fn(counts, entropy=entropy):
                    target = counts / counts.sum(axis=1, keepdims=True)
                    return scores.noisiness(target, dist) - entropy
            else:
                fn = _model_priority(name, x, graph, folds, device)
            run = run_selector(fn, dist, initial, budget=budget, refit_every=refit_every,
                               rng=np.random.default_rng([seed, 1]))
            # accuracy at each grid point: the state after the last review within it
            idx = np.searchsorted(run.annotations, grid, side="right") - 1
            curves[name].append(run.accuracy[idx])
            if progress:
                progress(f"seed {seed} {name}: {run.accuracy[-1]:.3f} correct after "
                         f"{run.annotations[-1]} re-annotations")
    out = {"noise_rate": noise_rate, "temperature": temperature, "n_samples": n,
           "seeds": seeds, "budget": budget, "refit_every": refit_every,
           "initial_correct": float(np.mean(start)), "grid": grid.tolist(), "selectors": {}}
    means = {s: np.mean(curves[s], axis=0) for s in selectors}
    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    auc = {s: float(trapezoid(means[s], grid)) for s in selectors}
    for s in selectors:
        entry = {"mean": np.round(means[s], 5).tolist(),
                 "std": np.round(np.std(curves[s], axis=0), 5).tolist(),
                 "reannotations_to_90": _first_reach(means[s], grid, 0.90),
                 "reannotations_to_95": _first_reach(means[s], grid, 0.95),
                 "auc_normalized": None}
        if "random" in auc and "oracle" in auc and auc["oracle"] > auc["random"]:
            entry["auc_normalized"] = round((auc[s] - auc["random"])
                                            / (auc["oracle"] - auc["random"]), 4)
        out["selectors"][s] = entry
    return out


def _first_reach(curve: np.ndarray, grid: np.ndarray, level: float) -> int | None:
    hit = np.flatnonzero(curve >= level)
    return int(grid[hit[0]]) if len(hit) else None


def plot(result: dict) -> str:
    """SVG of % correct labels against re-annotations, mean +- std per selector."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    grid = np.array(result["grid"])
    styles = ["-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1))]
    for k, (name, entry) in enumerate(result["selectors"].items()):
        mean, std = 100 * np.array(entry["mean"]), 100 * np.array(entry["std"])
        ax.plot(grid, mean, ls=styles[k % len(styles)], lw=1.8, label=name)
        ax.fill_between(grid, mean - std, mean + std, alpha=0.15)
    ax.set_xlabel("re-annotations")
    ax.set_ylabel("correct labels (%)")
    ax.legend(frameon=False, fontsize=8, ncol=2)
    return svg_text(fig)


def simulate_manifest(manifest, out_dir, *, noise_rate: float = 0.15, seeds: int = 5,
                      selectors=DEFAULT_SELECTORS, budget: int | None = None,
                      refit_every: int = 100, model: str = DEFAULT_ENCODER, device: str = "auto",
                      count_prefix: str | None = None, path_column: str | None = None,
                      image_root=None, progress=None) -> dict:
    """Read a manifest with per-class count columns, embed its images, simulate, and write
    ``simulation.json`` and ``simulation.svg`` to ``out_dir``."""
    from pathlib import Path

    data = load_manifest(Path(manifest), count_prefix=count_prefix, path_column=path_column,
                         image_root=image_root)
    if not data.has_multiple_annotations:
        raise DqauditError(f"{manifest}: the simulation needs per-class label counts "
                           "(columns n_<class>, or --count-prefix) with several annotations")
    device = resolve_device(device)
    encoder = load_encoder(model, image_size=auto_image_size(model, median_image_side(
        data.paths, seed=PROJECTION_SEED)))
    emb = embed_images(data.paths, model=encoder, device=device, progress=progress is not None)
    if not emb.ok.all():
        data = data.subset(emb.ok, extra_skipped=emb.failures)
    counts = data.label_counts.astype(np.float64)
    dist = counts / counts.sum(axis=1, keepdims=True)
    result = simulate(emb.embeddings[emb.ok], dist, noise_rate=noise_rate,
                      seeds=seeds, selectors=selectors, budget=budget, refit_every=refit_every,
                      device=device, progress=progress)
    result["classes"] = data.classes
    result["model"] = encoder.name
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "simulation.json", result)
    (out / "simulation.svg").write_text(plot(result))
    return result
