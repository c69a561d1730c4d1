"""The audit pipeline: ingest -> embed -> posteriors -> scores -> outputs.

``audit`` is the one function behind the CLI's ``scan``, the FiftyOne plugin and the Python API.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from . import calibration, fiftyone_io, outputs, scores
from .clr import DEFAULT_GRID, ClrConfig, estimate_clr, take_subsample
from .dataset import LabeledImages, label_distribution
from .devices import resolve_device
from .embed.encoders import DEFAULT_ENCODER
from .errors import DqauditError
from .headline import HEADLINE_HALF_WIDTH, headline, verdict  # noqa: F401 (public API)
from .ingest import fingerprint, load_dataset, median_image_side
from .neighbors import (DUPLICATE_THRESHOLD, duplicate_groups, group_flags, knn,
                        knn_disagreement, outlier_flags, outlier_scores)
from .plan import relabel_plan
from .posteriors import DEFAULT_METHOD, compute_posteriors, review_posteriors
from .probes import project
from .report import render_report
from .survey import verification_size
from .version import __version__

DEFAULT_SEED = 0
# a sample is "ambiguous" when its posterior entropy is at least half the maximum, log C
AMBIGUITY_THRESHOLD = 0.5


@dataclass
class AuditResult:
    """What one audit produced; the same data as the files in ``out_dir``."""

    dataset: LabeledImages
    embeddings: np.ndarray
    samples: pd.DataFrame
    summary: dict
    out_dir: Path | None = None
    extras: dict = field(default_factory=dict)


logger = logging.getLogger("dqaudit")


def _log(quiet: bool, message: str) -> None:
    """Progress goes to the ``dqaudit`` logger (the CLI shows INFO on stderr); ``quiet`` runs
    log at DEBUG, so a notebook user can still turn them on."""
    logger.log(logging.DEBUG if quiet else logging.INFO, message)


def audit(
    source: str | os.PathLike | LabeledImages,
    *,
    out_dir: str | os.PathLike | None = None,
    model: str = DEFAULT_ENCODER,
    image_size: int | str | None = "auto",
    flip_tta: bool = True,
    device: str = "auto",
    seed: int = DEFAULT_SEED,
    batch_size: int | None = None,
    num_workers: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    posterior_method: str = DEFAULT_METHOD,
    engine: str = "local",
    ray_address: str | None = None,
    num_gpus_per_worker: float | None = None,
    knn_method: str = "auto",
    duplicate_threshold: float | None = None,
    report: bool = True,
    pdf: bool = True,
    report_title: str | None = None,
    top_n: int = 24,
    page_size: str = "A4",
    verdict_thresholds: tuple[float, float] = (0.02, 0.05),
    fiftyone_dataset: str | None = None,
    clr: bool = True,
    clr_repeats: int = 20,
    clr_grid: tuple[float, ...] | None = None,
    clr_mode: str = "uniform",
    clr_max_samples: int | None = 20_000,
    quiet: bool = False,
    command: str | None = None,
    **ingest_options,
) -> AuditResult:
    """Audit a labeled image dataset and, when ``out_dir`` is given, write the outputs there.

    ``source`` is anything ``load_dataset`` takes (folder, manifest, FiftyOne name with
    ``from_fiftyone=True``) or an already loaded ``LabeledImages``. ``ingest_options`` are passed
    to ``load_dataset``. ``engine`` "ray" runs the embed stage on Ray Data (``ray_address``,
    ``num_gpus_per_worker``; see ``dqaudit.embed.ray_engine``). ``knn_method`` picks the
    nearest-neighbour search (``dqaudit.neighbors``). Results go into FiftyOne dataset
    ``fiftyone_dataset`` when given, and always back into the source dataset when the samples
    came from FiftyOne.
    """
    from .embed import auto_image_size, embed_images, load_encoder

    timings: dict[str, float] = {}
    t = time.perf_counter()
    data = source if isinstance(source, LabeledImages) else load_dataset(source, **ingest_options)
    timings["ingest_seconds"] = round(time.perf_counter() - t, 3)
    device = resolve_device(device)
    _log(quiet, f"dqaudit: {len(data)} images, {data.n_classes} classes; "
                f"model {model} on {device if engine == 'local' else 'Ray'}")

    t = time.perf_counter()
    if image_size == "auto":
        image_size = auto_image_size(model, median_image_side(data.paths, seed=seed))
    if engine == "ray":
        from .embed.ray_engine import embed_images_ray

        result = embed_images_ray(data.paths, model=model,
                                  image_size=int(image_size) if image_size else None,
                                  flip_tta=flip_tta, address=ray_address,
                                  num_gpus_per_worker=num_gpus_per_worker,
                                  batch_size=batch_size, cache_dir=cache_dir,
                                  use_cache=use_cache, progress=not quiet)
    elif engine == "local":
        encoder = load_encoder(model, image_size=int(image_size) if image_size else None,
                               flip_tta=flip_tta)
        result = embed_images(data.paths, model=encoder, device=device, batch_size=batch_size,
                              num_workers=num_workers, cache_dir=cache_dir,
                              use_cache=use_cache, progress=not quiet)
    else:
        raise DqauditError(f"unknown engine {engine!r}; valid: local, ray")
    timings["embed_seconds"] = round(time.perf_counter() - t, 3)
    info = result.info
    _log(quiet, f"dqaudit: embedded {info['n_embedded']} images "
                f"({info['n_cached']} from cache, {info['n_failed']} undecodable)"
                + (f" at {info['images_per_second']} img/s" if info["images_per_second"] else ""))
    if result.failures:
        data = data.subset(result.ok, extra_skipped=result.failures)
        embeddings = result.embeddings[result.ok]
    else:
        embeddings = result.embeddings
    if len(data) == 0:
        raise DqauditError("no image could be decoded; see skipped.csv for the reasons")
    if len(set(data.labels.tolist())) < 2:
        raise DqauditError("after skipping undecodable files only one class is left; an audit "
                           "needs at least two")

    t = time.perf_counter()
    scored = score_dataset(data, embeddings, seed=seed, method=posterior_method,
                           knn_method=knn_method, device=device,
                           duplicate_threshold=duplicate_threshold)
    timings["score_seconds"] = round(time.perf_counter() - t, 3)
    _log(quiet, f"dqaudit: {scored.stats['label_error_count']} suspected label errors "
                f"(estimated {scored.stats['estimated_label_errors']}), "
                f"{scored.stats['flagged_count']} samples flagged")

    samples = pd.concat([base_samples_table(data), scored.table], axis=1)
    summary = build_summary(data, info, seed=seed, timings=timings, command=command)
    summary["fingerprint"] = fingerprint(data)
    summary.update(scored.stats)
    summary["relabel_plan"] = relabel_plan(samples["review_score"].to_numpy(),
                                           samples["label_error_probability"].to_numpy(),
                                           scored.stats["estimated_label_errors"])
    summary["verify_size_for_2pt"] = verification_size(
        samples["label_error_probability"].to_numpy(), HEADLINE_HALF_WIDTH)
    summary["label_changes"] = 0
    if clr:
        t = time.perf_counter()
        summary["clr"] = run_clr(embeddings, data.labels, data.n_classes, seed=seed,
                                 device=device, probs=scored.probs, grid=clr_grid,
                                 repeats=clr_repeats, mode=clr_mode,
                                 max_samples=clr_max_samples)
        timings["clr_seconds"] = round(time.perf_counter() - t, 3)
        c = summary["clr"]
        _log(quiet, f"dqaudit: estimated corrupted-label ratio {100 * c['estimate']:.1f}% "
                    f"(95% CI {100 * c['ci_low']:.1f}-{100 * c['ci_high']:.1f}%)")
    summary["verdict"] = verdict(summary, thresholds=verdict_thresholds)
    if fiftyone_dataset is None and data.source.get("kind") == "fiftyone":
        fiftyone_dataset = data.source["location"]
    summary["fiftyone_dataset"] = fiftyone_dataset
    res = AuditResult(dataset=data, embeddings=embeddings, samples=samples, summary=summary,
                      extras={"probs": scored.probs, "graph": scored.graph})
    if out_dir is not None:
        write_outputs(res, Path(out_dir))
        _log(quiet, f"dqaudit: wrote {Path(out_dir) / 'summary.json'} and samples.csv")
        if report:
            t = time.perf_counter()
            paths = render_report(out_dir, title=report_title, top_n=top_n, pdf=pdf,
                                  page_size=page_size)
            _log(quiet, f"dqaudit: wrote {', '.join(paths.values())} "
                        f"in {time.perf_counter() - t:.1f}s")
    if fiftyone_dataset:
        written = fiftyone_io.write_results(res, fiftyone_dataset,
                                label_field=data.source.get("label_field", "ground_truth"))
        _log(quiet, f"dqaudit: wrote fields and views {', '.join(written['views'])} to FiftyOne "
                    f"dataset {written['dataset']!r}")
    return res


def refresh_outputs(out_dir: str | os.PathLike, summary: dict | None = None) -> dict:
    """Recompute the verdict of ``summary`` (default: the folder's summary.json) with its own
    thresholds, write summary.json and re-render the report when the folder has one; the end
    of every path that changes an audit folder after the scan. Returns the summary."""
    out = Path(out_dir)
    summary = outputs.read_summary(out) if summary is None else summary
    summary["verdict"] = verdict(summary, thresholds=tuple(summary["verdict"]["thresholds"]
                                                            .values()))
    outputs.write_json(out / outputs.SUMMARY_JSON, summary)
    if (out / "report.html").exists():
        render_report(out, pdf=(out / "report.pdf").exists())
    return summary


@dataclass
class ScoredDataset:
    """The scores stage's output: the per-sample score columns and dataset-level statistics."""

    table: pd.DataFrame
    stats: dict
    probs: np.ndarray
    graph: object


def score_dataset(data: LabeledImages, embeddings: np.ndarray, *, seed: int = DEFAULT_SEED,
                  method: str = DEFAULT_METHOD, k: int = 10,
                  duplicate_threshold: float | None = None,
                  knn_method: str = "auto", device: str = "cpu", graph=None) -> ScoredDataset:
    """Posteriors, then every per-sample score of the output contract (see docs/scores.md).

    ``graph``: a kNN graph of ``embeddings`` already built (``dqaudit.neighbors.knn``) to
    reuse; built here with ``knn_method`` when None. ``duplicate_threshold``: the cosine at or
    above which two samples are near-duplicates (None: ``neighbors.DUPLICATE_THRESHOLD``).
    """

    x = project(embeddings, seed=seed)
    if graph is None:
        graph = knn(embeddings, k=k, method=knn_method, device=device, seed=seed)
    post = compute_posteriors(x, graph, data.label_counts, data.labels, method=method,
                              seed=seed, device=device)
    probs = post.probs
    target = label_distribution(data.label_counts)
    noisiness = scores.noisiness(target, probs)
    ambiguity = scores.ambiguity(probs)
    priority = noisiness - ambiguity
    suggested, confidence = scores.suggestions(probs)
    disagreement = scores.given_label_disagreement(target, probs)
    found = scores.find_label_errors(data.labels, target, probs)
    label_error, n_errors, joint = found.flags, found.count, found.joint
    # calibrated to sum to the estimated number of wrong labels (benchmarks/calibration.py)
    error_probability = calibration.power(disagreement, n_errors)
    # the order of review: the same scores on the posteriors the cleaning simulation measures
    # (one fold split, no correction rounds; see posteriors.review_posteriors)
    review = scores.review_score_of(data.labels, review_posteriors(
        method, x, graph, data.label_counts, post.fold_sets[0], device=device,
        graph_probs=post.by_method.get("graph"), labels=data.labels),
        label_counts=data.label_counts)
    normalised_entropy = ambiguity / np.log(data.n_classes)
    ambiguous = (normalised_entropy >= AMBIGUITY_THRESHOLD) & ~label_error
    if duplicate_threshold is None:
        duplicate_threshold = DUPLICATE_THRESHOLD
    dup_group = duplicate_groups(graph, threshold=duplicate_threshold)
    duplicate = dup_group >= 0
    conflicting = group_flags(dup_group, data.labels)
    leak = group_flags(dup_group, data.splits, ignore_empty=True)
    outlier_score = outlier_scores(graph)
    outlier = outlier_flags(outlier_score)
    importance = scores.importance(x, data.labels, noisiness)

    names = ["label_error", "ambiguous", "duplicate", "conflicting_duplicate", "leak", "outlier"]
    masks = [label_error, ambiguous, duplicate, conflicting, leak, outlier]
    issues = _issue_lists(names, masks)
    flagged = label_error | conflicting | leak | outlier | duplicate
    classes = np.array(data.classes, dtype=object)
    table = pd.DataFrame({
        "noisiness": noisiness,
        "ambiguity": ambiguity,
        "priority": priority,
        "review_score": review,
        "importance": importance,
        "suggested_label": classes[suggested],
        "suggested_confidence": confidence,
        "label_error_probability": error_probability,
        "given_label_disagreement": disagreement,
        "knn_disagreement": knn_disagreement(data.labels, graph),
        "dup_group": dup_group,
        "outlier_score": outlier_score,
        "outlier_percentile": 100.0 * pd.Series(outlier_score).rank(pct=True).to_numpy(),
        "flagged": flagged,
        "issues": issues,
    })
    per_class_noise = {}
    row_sums = joint.sum(axis=1)
    for c, name in enumerate(data.classes):
        members = data.labels == c
        per_class_noise[name] = {
            "n": int(members.sum()),
            "estimated_noise_rate": round(float(1 - joint[c, c] / row_sums[c]), 4)
            if row_sums[c] > 0 else None,
            "flagged_label_errors": int(label_error[members].sum()),
        }
    transition = joint / np.maximum(row_sums[:, None], 1e-12)
    stats = {
        "posterior_method": method,
        "label_error_probability": {
            "calibration": "power",
            "description": "P(given label is wrong): 1 - p(given label) under the "
                           "out-of-sample posteriors, raised to the power that makes the "
                           "column sum to the estimated number of wrong labels",
        },
        "flagged_count": int(flagged.sum()),
        "label_error_count": int(label_error.sum()),
        "estimated_label_errors": n_errors,
        "estimated_noise_rate": round(n_errors / len(data), 4),
        "issue_counts": {name: int(m.sum()) for name, m in zip(names, masks)},
        "duplicate_groups": int(dup_group.max() + 1) if duplicate.any() else 0,
        "per_class_noise": per_class_noise,
        "estimated_transition_matrix": {
            "classes": list(data.classes),
            "description": "row: given label, column: likely true label (row-normalised "
                           "calibrated confident joint)",
            "matrix": np.round(transition, 4).tolist(),
        },
        "score_parameters": {"k": graph.k, "duplicate_threshold": duplicate_threshold,
                             "ambiguity_threshold": AMBIGUITY_THRESHOLD, "n_folds": 5,
                             "fold_splits": post.fold_splits,
                             "pca_dim": int(x.shape[1]), "knn": graph.info},
    }
    return ScoredDataset(table=table, stats=stats, probs=probs, graph=graph)


def _issue_lists(names: list[str], masks: list[np.ndarray]) -> list[list[str]]:
    """Per sample, the names whose mask is set; one Python list per distinct combination."""
    codes = np.zeros(len(masks[0]), dtype=np.int64)
    for bit, m in enumerate(masks):
        codes |= m.astype(np.int64) << bit
    combos = {int(c): [n for bit, n in enumerate(names) if c >> bit & 1]
              for c in np.unique(codes)}
    return [list(combos[c]) for c in codes.tolist()]


def base_samples_table(data: LabeledImages) -> pd.DataFrame:
    return pd.DataFrame({
        "id": data.ids,
        "path": data.paths,
        "label": [data.classes[i] for i in data.labels],
        "split": list(data.splits),
    })


def build_summary(data: LabeledImages, embed_info: dict, *, seed: int, timings: dict,
                  command: str | None) -> dict:
    splits = pd.Series(list(data.splits)).value_counts().sort_index()
    skipped_reasons = pd.Series([s["reason"] for s in data.skipped]).value_counts()
    source = data.source or {}
    location = str(source.get("location", "dataset"))
    name = Path(location).stem if source.get("kind") == "manifest" else Path(location).name
    if source.get("kind") == "manifest" and name in ("labels", "manifest", "metadata"):
        name = Path(location).parent.name
    return {
        "dqaudit_version": __version__,
        "dataset_name": name or location,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "seed": seed,
        "dataset": {
            "source": data.source,
            "n_classes": data.n_classes,
            "classes": data.classes,
            "multi_annotator": data.has_multiple_annotations,
            "splits": {str(k): int(v) for k, v in splits.items() if str(k)},
        },
        "n_samples": len(data),
        "class_counts": data.class_counts(),
        "n_skipped": len(data.skipped),
        "skipped_reasons": {str(k): int(v) for k, v in skipped_reasons.items()},
        "skipped_examples": data.skipped[:20],
        "embedding": embed_info,
        "model": embed_info["model"],
        "device": embed_info["device"],
        "timings": timings,
        "environment": {"python": platform.python_version(), "platform": platform.platform()},
        "versions": _versions(),
        "clr": None,  # filled by controlled CLR injection when it runs
        "fiftyone_dataset": None,
    }


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"dqaudit": __version__}
    for pkg in ("torch", "timm", "open-clip-torch", "numpy", "scikit-learn"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def write_outputs(res: AuditResult, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs.write_samples(out_dir, res.samples)
    outputs.write_skipped(out_dir, res.dataset.skipped)
    outputs.write_array(out_dir, outputs.EMBEDDINGS_NPY, res.embeddings.astype(np.float32))
    outputs.write_array(out_dir, outputs.LABEL_COUNTS_NPY, res.dataset.label_counts)
    res.out_dir = out_dir
    outputs.write_json(out_dir / outputs.SUMMARY_JSON, res.summary)


def run_clr(embeddings: np.ndarray, labels: np.ndarray, n_classes: int, *, seed: int,
            device: str = "cpu", probs: np.ndarray | None = None, grid=None, repeats: int = 20,
            mode: str = "uniform", max_samples: int | None = 20_000) -> dict:
    """Controlled CLR injection on the embeddings (see ``dqaudit.clr``); ``max_samples`` 0 or
    None runs on every sample. The subsample is drawn before the projection, so a large
    dataset's embeddings are not projected in full only to be left out."""

    config = ClrConfig(grid=tuple(grid) if grid else DEFAULT_GRID, repeats=repeats, mode=mode,
                       max_samples=max_samples)
    n_all = len(labels)
    # the same rows estimate_clr would keep (it then keeps them all)
    embeddings, labels, probs = take_subsample(embeddings, labels, probs, max_samples, seed=seed)
    result = estimate_clr(project(embeddings, seed=seed), labels, n_classes, config=config,
                          seed=seed, device=device, probs=probs)
    result["n_samples"] = n_all
    return result


def clr_audit(out_dir: str | os.PathLike, *, repeats: int = 20, grid=None,
              mode: str = "uniform", max_samples: int | None = 20_000,
              device: str = "auto", quiet: bool = True) -> dict:
    """Re-run CLR injection on an audit folder's cached embeddings; update summary and report."""
    out = Path(out_dir)
    data, embeddings, samples, summary = load_audit(out)
    keep = ~samples["dropped"].astype(bool).to_numpy() if "dropped" in samples else \
        np.ones(len(samples), dtype=bool)
    data = data.subset(keep)
    embeddings = embeddings if keep.all() else embeddings[keep]
    # the scan's posteriors (same method): the bracket's posterior-mode flips draw from them
    device = resolve_device(device)
    probs = score_dataset(data, embeddings, seed=summary["seed"], device=device,
                          method=summary.get("posterior_method", DEFAULT_METHOD)).probs
    t = time.perf_counter()
    verified = (summary.get("clr") or {}).get("verified")
    summary["clr"] = run_clr(embeddings, data.labels, data.n_classes,
                             seed=summary["seed"], device=device, probs=probs,
                             grid=grid, repeats=repeats, mode=mode,
                             max_samples=max_samples)
    summary["timings"]["clr_seconds"] = round(time.perf_counter() - t, 3)
    summary["clr"]["label_changes_at_estimate"] = summary.get("label_changes", 0)
    if verified:  # a verified estimate does not depend on the injection: keep it
        summary["clr"]["verified"] = verified
    refresh_outputs(out, summary)
    return summary["clr"]


def load_audit(out_dir: str | os.PathLike) -> tuple[LabeledImages, np.ndarray, pd.DataFrame,
                                                       dict]:
    """The dataset, embeddings, samples table and summary saved in an audit folder."""
    out = Path(out_dir)
    if not (out / outputs.SUMMARY_JSON).exists():
        raise DqauditError(f"{out}: no summary.json; run `dqaudit scan DATASET --out {out}`")
    summary = outputs.read_summary(out)
    samples = outputs.read_samples(out)
    classes = summary["dataset"]["classes"]
    index = {c: i for i, c in enumerate(classes)}
    data = LabeledImages(
        paths=samples["path"].tolist(),
        labels=np.array([index[v] for v in samples["label"]], dtype=np.int64),
        classes=list(classes),
        label_counts=np.load(out / outputs.LABEL_COUNTS_NPY).astype(np.float32),
        splits=np.array(samples["split"].tolist(), dtype=object),
        ids=samples["id"].tolist(),
        source=summary["dataset"]["source"],
    )
    # memory-mapped: a large audit's embeddings are paged in as the scoring reads them
    return data, np.load(out / outputs.EMBEDDINGS_NPY, mmap_mode="r"), samples, summary


def rescore_audit(out_dir: str | os.PathLike, *, labels: list[str] | None = None,
                  dropped: set[str] = frozenset(), device: str = "auto",
                  quiet: bool = True) -> AuditResult:
    """Re-rank an audit after new annotations: same embeddings, updated labels and counts.

    Samples in ``dropped`` (confirmed junk) leave the scoring; the report is re-rendered when
    the folder has one. Nothing is embedded again; the posteriors are fitted on ``device``
    (auto: cuda, then mps, then cpu), as in the scan.
    """
    out = Path(out_dir)
    data, embeddings, samples, summary = load_audit(out)
    before = data.labels.copy()
    if labels is not None:
        index = {c: i for i, c in enumerate(data.classes)}
        data.labels = np.array([index[v] for v in labels], dtype=np.int64)
    keep = ~samples["id"].isin(dropped).to_numpy()
    was_dropped = samples["dropped"].astype(bool).to_numpy() if "dropped" in samples \
        else np.zeros(len(samples), dtype=bool)
    # every number estimated before this change of labels is now stale (headline.py says so)
    summary["label_changes"] = summary.get("label_changes", 0) + int(
        ((data.labels != before) & keep).sum() + (~keep & ~was_dropped).sum())
    data = data.subset(keep)
    t = time.perf_counter()
    scored = score_dataset(data, embeddings if keep.all() else embeddings[keep],
                           seed=summary["seed"], device=resolve_device(device),
                           method=summary.get("posterior_method", DEFAULT_METHOD),
                           duplicate_threshold=summary.get("score_parameters", {}).get(
                               "duplicate_threshold"))
    summary["timings"]["rescore_seconds"] = round(time.perf_counter() - t, 3)
    table = pd.concat([base_samples_table(data), scored.table], axis=1)
    # a verified re-fit of the label-error probability outlives the re-rank
    refit = ((summary.get("clr") or {}).get("verified") or {}).get(
        "label_error_probability_refit")
    table["label_error_probability"] = calibration.refit(
        table["label_error_probability"].to_numpy(), refit)
    summary.update(scored.stats)
    if refit:
        summary["label_error_probability"]["calibration"] = (
            f"{refit['method']} re-fit on the verified sample")
    summary["n_samples"] = len(data)
    summary["class_counts"] = data.class_counts()
    summary["n_dropped"] = int((~keep).sum())
    summary["relabel_plan"] = relabel_plan(table["review_score"].to_numpy(),
                                           table["label_error_probability"].to_numpy(),
                                           scored.stats["estimated_label_errors"])
    summary["verify_size_for_2pt"] = verification_size(
        table["label_error_probability"].to_numpy(), HEADLINE_HALF_WIDTH)
    # dropped samples stay in the arrays (row-aligned files), flagged as dropped, unscored
    full = samples[["id", "path", "label", "split"]].copy()
    full["label"] = [data.classes[i] for i in _labels_all(samples, data, keep)]
    full = full.merge(table.drop(columns=["path", "label", "split"]), on="id", how="left")
    full["dropped"] = ~keep
    full["issues"] = [v if isinstance(v, list) else [] for v in full["issues"]]
    full["flagged"] = full["flagged"].fillna(False).astype(bool)
    full["dup_group"] = full["dup_group"].fillna(-1).astype(np.int64)
    outputs.write_samples(out, full)
    refresh_outputs(out, summary)
    if summary.get("fiftyone_dataset"):
        res = AuditResult(dataset=data, embeddings=embeddings[keep], samples=table,
                          summary=summary, out_dir=out)
        fiftyone_io.write_results(res, summary["fiftyone_dataset"])
    _log(quiet, f"dqaudit: re-ranked {len(data)} samples; "
                f"{summary['label_error_count']} suspected label errors remain")
    return AuditResult(dataset=data, embeddings=embeddings[keep], samples=full, summary=summary,
                       out_dir=out)


def _labels_all(samples: pd.DataFrame, kept: LabeledImages, keep: np.ndarray) -> list[int]:
    """Label index of every row: the kept rows' (possibly corrected) labels, else the old."""
    index = {c: i for i, c in enumerate(kept.classes)}
    out = [index[v] for v in samples["label"]]
    for row, lab in zip(np.flatnonzero(keep), kept.labels):
        out[row] = int(lab)
    return out
