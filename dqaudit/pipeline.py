"""The audit pipeline's steps on arrays: ingest -> embed -> scores -> CLR -> summary.

``dqaudit.api.Audit`` strings them together (scan, re-rank, CLR re-run) and owns the folder;
the functions here take and return plain data and write nothing.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from dqaudit.config import AuditConfig, EmbedConfig
from dqaudit.dataset import LabeledImages, set_text
from dqaudit.embed import (REGIONS, auto_image_size, default_num_workers, embed_images,
                           embed_regions, load_encoder)
from dqaudit.embed.backends import OPENVINO_BACKENDS, resolve_backend, with_backend
from dqaudit.embed.cache import default_cache_dir
from dqaudit.embed.gpu_decode import resolve_decoder
from dqaudit.errors import DqauditError, InputError
from dqaudit.estimates.clr import ClrConfig, estimate_clr, take_subsample
from dqaudit.files import is_dicom_file
from dqaudit.imaging import dicom
from dqaudit.imaging.dicom import DicomRead
from dqaudit.io.given import given_embeddings
from dqaudit.io.ingest import files_fingerprint, fingerprint, median_image_side
from dqaudit.scoring import calibration
from dqaudit.scoring.finetune import FinetuneResult, finetune_posteriors
from dqaudit.scoring.finetune_net import decode_images
from dqaudit.scoring.multilabel import learnable_classes
from dqaudit.scoring.posteriors import DEFAULT_METHOD, stratified_folds
from dqaudit.scoring.probes import project
from dqaudit.scoring.table import (
    MIN_CLASS_SAMPLES,
    ScoredDataset,
    base_samples_table,
    score_dataset,
)
from dqaudit.summary import build_summary, plan_fields

logger = logging.getLogger("dqaudit")


def log(quiet: bool, message: str) -> None:
    """Progress goes to the ``dqaudit`` logger (the CLI shows INFO on stderr); ``quiet`` runs
    log at DEBUG, so a notebook user can still turn them on."""
    logger.log(logging.DEBUG if quiet else logging.INFO, message)


def say_how_it_was_read(data: LabeledImages, *, quiet: bool) -> None:
    """The scan's first line: how the input was read (a tree's splits, classes and levels), and
    classes that differ only in case, which are kept apart and named here."""
    source = data.source
    if source.get("read_as"):
        log(quiet, f"dqaudit: read {source['location']} as {source['read_as']}")
    for why in source.get("classes_left_out") or []:
        logger.warning("dqaudit: %s", why)
    for group in source.get("case_variants") or []:
        logger.warning("dqaudit: classes %s differ only in case and are kept apart; if they are "
                       "one class, rename the folders (or labels) to one spelling",
                       " and ".join(repr(c) for c in group))


def embed_dataset(data: LabeledImages, config: AuditConfig, *, device: str, quiet: bool
                  ) -> tuple[LabeledImages, np.ndarray, np.ndarray, dict]:
    """(dataset without its undecodable images, (N, D) embeddings, (N, S) image statistics of
    the decode workers, the embed stage's info)."""
    e = config.embed
    image_size = e.image_size
    if image_size == "auto":
        image_size = auto_image_size(e.model, median_image_side(data.paths, seed=config.seed))
    size = int(image_size) if image_size else None
    if e.engine == "ray":
        from dqaudit.embed.ray_engine import embed_images_ray

        if e.backend in OPENVINO_BACKENDS:
            raise InputError(f"the Ray engine runs its encoders with torch; drop --backend "
                             f"{e.backend} or use --engine local")

        if not DicomRead.of(e).is_default:
            raise InputError("the Ray engine reads DICOM files with their own window and middle "
                             "frame; drop --dicom-window/--dicom-frame or use --engine local")
        result = embed_images_ray(data.paths, model=e.model, image_size=size,
                                  flip_tta=e.flip_tta, address=e.ray_address,
                                  num_gpus_per_worker=e.num_gpus_per_worker,
                                  batch_size=e.batch_size, cache_dir=e.cache_dir,
                                  use_cache=e.use_cache, progress=not quiet,
                                  keys=data.digests)
    else:
        result = embed_images(data.paths, model=local_encoder(e, size, device=device),
                              device=device, batch_size=e.batch_size, num_workers=e.num_workers,
                              cache_dir=e.cache_dir, use_cache=e.use_cache,
                              progress=not quiet, keys=data.digests,
                              decoder=resolve_decoder(e.decode, device))
    info = result.info
    log(quiet, f"dqaudit: embedded {info['n_embedded']} images "
               f"({info['n_cached']} from cache, {info['n_failed']} undecodable)"
               + (f" at {info['images_per_second']} img/s" if info["images_per_second"] else ""))
    if not result.failures:
        return data, result.embeddings, result.stats, info
    return (data.subset(result.ok, extra_skipped=result.failures),
            result.embeddings[result.ok], result.stats[result.ok], info)


def local_encoder(e: EmbedConfig, image_size: int | None, *, device: str):
    """The encoder the local engine embeds with: model ``e.model`` at
    ``image_size``, reading DICOM files as ``e`` says, on the backend ``e.backend`` resolves
    to on ``device``."""
    encoder = load_encoder(e.model, image_size=image_size, flip_tta=e.flip_tta)
    read = DicomRead.of(e)
    encoder = replace(encoder, preprocessing=replace(
        encoder.preprocessing, dicom_window=read.window, dicom_frame=read.frame))
    return with_backend(encoder, resolve_backend(e.backend, device, model=e.model),
                        required=e.backend in OPENVINO_BACKENDS)


def check_regions(data: LabeledImages, config: AuditConfig, *, user_embeddings: bool) -> None:
    """Refuse ``--regions`` where it cannot serve, before any embedding."""
    if not config.embed.regions:
        return
    if not data.multi_label:
        raise InputError("--regions serves multi-label audits (a class is present when some "
                         "part of the image shows it); drop it, or add --multi-label")
    if user_embeddings:
        raise InputError("--regions embeds parts of the images, which given embeddings cannot "
                         "supply; drop --regions or the embeddings")
    if config.embed.engine != "local":
        raise InputError("--regions embeds with the local engine; drop --engine ray")


def region_embeddings(data: LabeledImages, config: AuditConfig, info: dict, *, device: str,
                      quiet: bool) -> np.ndarray | None:
    """(N, R, D) embeddings of the regions of each image (``embed.REGIONS``) with the
    encoder, input size and reading of the whole images' embeddings (``info``); ``info``
    gains the regions' count and time. None without ``--regions``."""
    e = config.embed
    if not e.regions:
        return None
    log(quiet, f"dqaudit: embedding {len(REGIONS)} regions of each of {len(data)} images "
               "(--regions)")
    regions, more = embed_regions(data.paths,
                                  model=local_encoder(e, info["image_size"], device=device),
                                  device=device, batch_size=e.batch_size, num_workers=e.num_workers,
                                  cache_dir=e.cache_dir, use_cache=e.use_cache,
                                  progress=not quiet, keys=data.digests)
    info.update(more)
    return regions


def prepared(data: LabeledImages, embeddings=None
             ) -> tuple[LabeledImages, np.ndarray | None, dict | None]:
    """The ingested dataset made ready for a scan: the user's ``embeddings`` matched to it
    (``given_embeddings``; info None without them), its samples in canonical order (results do
    not depend on where the files lie or how they were listed), classes too small to audit
    left out (``MIN_CLASS_SAMPLES``, reasons in ``skipped``)."""
    info = None
    if embeddings is not None:  # rows in the order of ingest: matched before sorting
        embeddings, info = given_embeddings(data, embeddings)
    sizes = data.class_counts()
    data, order = data.in_canonical_order()
    if data.multi_label:  # a class is left out, not its samples (learnable_classes)
        data, _ = learnable_sets(data, None)
        keep = np.ones(len(data), dtype=bool)
    else:
        data, keep = data.without_small_classes(MIN_CLASS_SAMPLES)
    if embeddings is not None:
        embeddings = embeddings[order][keep]
    if not data.multi_label and len(set(data.labels.tolist())) < 2:
        raise InputError(f"an audit needs two classes of at least {MIN_CLASS_SAMPLES} samples "
                         "(so a held-out model can learn each); the classes have "
                         + ", ".join(f"{c!r}: {k}" for c, k in list(sizes.items())[:8])
                         + "; add samples or merge classes")
    return data, embeddings, info


def learnable_sets(data: LabeledImages, pred_probs) -> tuple[LabeledImages, object]:
    """A multi-label dataset without the classes no held-out model can learn
    (``multilabel.learnable_classes``: reasons in ``source["classes_left_out"]``), and the
    user's (N, C) ``pred_probs`` without their columns (None stays None)."""
    learnable, why = learnable_classes(data.label_sets, data.classes)
    if learnable.all():
        return data, pred_probs
    if pred_probs is not None:
        pred_probs = np.asarray(pred_probs)[:, learnable]
    return data.only_classes(learnable, why), pred_probs


def score(data: LabeledImages, embeddings: np.ndarray | None, config: AuditConfig, *,
          device: str, pred_probs: np.ndarray | None = None,
          image_stats: np.ndarray | None = None, embed_info: dict | None = None,
          quiet: bool = True, regions: np.ndarray | None = None) -> ScoredDataset:
    """``scoring.score_dataset`` with the audit's score settings; the posteriors chosen by
    ``choose_posteriors`` (fine-tuned ones computed here, from the image files). ``embed_info``:
    the embed stage's record (None or a user's embeddings: no images to fine-tune on).
    ``regions`` (N, R, D): the region embeddings of a multi-label audit (``--regions``)."""
    s = config.score
    choice = None
    fine_tuned = False
    if pred_probs is None:
        choice = choose_posteriors(data, config, embed_info=embed_info)
        fine_tuned = s.posterior_method == "finetune"
        if fine_tuned:
            log(quiet, f"dqaudit: posteriors: {choice['reason']}")
            result = finetuned(data, config, device=device, image_size=embed_info["image_size"],
                               quiet=quiet)
            pred_probs, choice["finetune"] = result.probs, result.info
    scored = score_dataset(data, embeddings, pred_probs=pred_probs, seed=config.seed,
                           method=s.posterior_method, k=s.k, knn_method=s.knn_method,
                           device=device, duplicate_threshold=s.duplicate_threshold,
                           image_stats=image_stats, checks=s.checks,
                           probs_source="finetune" if fine_tuned else "pred_probs",
                           review_order=s.review_order, regions=regions)
    if choice is not None:
        scored.stats["posteriors"] = {"requested": s.posterior_method, **choice}
    return scored


def resolved_review_order(config: AuditConfig, data: LabeledImages) -> AuditConfig:
    """``config`` with ``score.review_order`` ``auto`` made a choice, once, at the scan:
    ``review_score`` when samples carry several annotations (a review is one more vote),
    else ``noisiness`` (one look fixes a label); re-ranks keep the recorded choice."""
    if config.score.review_order != "auto":
        return config
    order = "review_score" if data.has_multiple_annotations else "noisiness"
    return replace(config, score=replace(config.score, review_order=order))


def has_images(data: LabeledImages, embed_info: dict | None) -> bool:
    """Whether the samples' image files were embedded by dqaudit and can be read again (not a
    user's embeddings or arrays)."""
    if not embed_info or not embed_info.get("image_size") or data.source.get("kind") == "arrays":
        return False
    return all(os.path.isfile(p) for p in data.paths)


def choose_posteriors(data: LabeledImages, config: AuditConfig, *,
                      embed_info: dict | None) -> dict:
    """``{"method", "reason"}``: the posteriors ``config.score.posterior_method`` names;
    ``finetune`` needs the image files dqaudit embedded (an InputError names the fix)."""
    method = config.score.posterior_method
    if method == "finetune" and not has_images(data, embed_info):
        raise InputError("--posteriors finetune needs the image files dqaudit embedded (not a "
                         "user's embeddings or arrays, and the files still in place); use "
                         "--posteriors linear")
    default = method == DEFAULT_METHOD
    return {"method": method, "reason": "the default" if default else
            f"asked for (--posteriors {method})"}


def finetuned(data: LabeledImages, config: AuditConfig, *, device: str, image_size: int,
              quiet: bool) -> FinetuneResult:
    """Cross-fitted fine-tuned posteriors of ``data`` (``scoring.finetune``) on the first fold
    split of the linear probe; folds finished earlier are taken from the checkpoint folder
    beside the embedding cache."""
    e = config.embed
    folds = stratified_folds(data.labels, n_folds=5, seed=config.seed)
    images = decode_images(data.paths, image_size=int(image_size),
                           num_workers=e.num_workers if e.num_workers is not None
                           else default_num_workers(device))
    checkpoints = Path(e.cache_dir or default_cache_dir()) / "finetune" if e.use_cache else None
    return finetune_posteriors(images, data.label_counts, folds, encoder=e.model,
                               config=config.score.finetune, device=device, seed=config.seed,
                               checkpoint_dir=checkpoints, digests=data.digests,
                               progress=not quiet, labels=data.labels)


def scored_summary(data: LabeledImages, embed_info: dict, scored: ScoredDataset, *,
                   config: AuditConfig, timings: dict, command: str | None
                   ) -> tuple[pd.DataFrame, dict]:
    """The samples table and summary of a freshly scored dataset."""
    samples = pd.concat([base_samples_table(data), scored.table], axis=1)
    summary = build_summary(data, embed_info, seed=config.seed, timings=timings,
                            command=command)
    files = files_fingerprint(data) if data.source.get("kind") != "arrays" else ""
    summary["fingerprint_files"] = files
    summary["fingerprint"] = fingerprint(data, files=files)
    summary.update(scored.stats)
    summary.update(plan_fields(samples))
    summary["label_changes"] = 0
    e = config.embed
    summary["dicom"] = None if data.source.get("kind") == "arrays" else dicom.summarize(
        [p for p in data.paths if is_dicom_file(p)], DicomRead.of(e))
    return samples, summary


def run_clr(embeddings: np.ndarray, labels: np.ndarray, n_classes: int, *, seed: int,
            config: ClrConfig, device: str = "cpu", probs: np.ndarray | None = None) -> dict:
    """Controlled CLR injection on the embeddings (see ``estimates.clr``); ``config.max_samples``
    0 or None runs on every sample. The subsample is drawn before the projection, so a large
    dataset's embeddings are not projected in full only to be left out."""
    n_all = len(labels)
    # the same rows estimate_clr would keep (it then keeps them all)
    embeddings, labels, probs = take_subsample(embeddings, labels, probs, config.max_samples,
                                               seed=seed)
    result = estimate_clr(project(embeddings, seed=seed), labels, n_classes, config=config,
                          seed=seed, device=device, probs=probs)
    result["n_samples"] = n_all
    return result


def rescored(samples: pd.DataFrame, data: LabeledImages, kept: LabeledImages,
             keep: np.ndarray, scored: ScoredDataset, summary: dict) -> pd.DataFrame:
    """The samples table after a re-rank: the kept rows' new scores (the label-error
    probability through a verified re-fit when the summary has one), dropped rows kept in
    place (row-aligned files), flagged ``dropped`` and unscored. ``kept``: ``data`` where
    ``keep``, the scored dataset. Updates ``summary``."""
    table = pd.concat([base_samples_table(kept), scored.table], axis=1)
    # a verified re-fit of the label-error probability outlives the re-rank
    refit = (summary.get("verified") or {}).get("label_error_probability_refit")
    table["label_error_probability"] = calibration.refit(
        table["label_error_probability"].to_numpy(), refit)
    summary.update(scored.stats)
    if refit:
        summary["label_error_probability"]["calibration"] = (
            f"{refit['method']} re-fit on the verified sample")
    summary["n_samples"] = len(kept)
    summary["class_counts"] = kept.class_counts()
    summary["n_dropped"] = int((~keep).sum())
    summary.update(plan_fields(table))
    # the identity columns (and an object audit's box columns) stay as they are, every row
    identity = ["id", "path", "split"] + (
        list(data.objects.columns) if data.objects is not None else [])
    full = samples[identity].copy()
    full.insert(2, "label", [set_text(r, data.classes) for r in data.label_sets]
                if data.multi_label else [data.classes[i] for i in data.labels])
    full = full.merge(table.drop(columns=[c for c in identity if c != "id"] + ["label"]),
                      on="id", how="left")
    full["dropped"] = ~keep
    full["issues"] = [v if isinstance(v, list) else [] for v in full["issues"]]
    full["flagged"] = full["flagged"].fillna(False).astype(bool)
    full["dup_group"] = full["dup_group"].fillna(-1).astype(np.int64)
    full["exact_dup_group"] = full["exact_dup_group"].fillna(-1).astype(np.int64)
    return full


@contextmanager
def timed(timings: dict, key: str):
    """Record the seconds the ``with`` block took in ``timings[key]``."""
    start = time.perf_counter()
    yield
    timings[key] = round(time.perf_counter() - start, 3)


def check_scorable(data: LabeledImages) -> None:
    if len(data) == 0:
        raise DqauditError("no image could be decoded; see skipped.csv for the reasons")
    if not data.multi_label and len(set(data.labels.tolist())) < 2:
        raise DqauditError("after skipping undecodable files only one class is left; an audit "
                           "needs at least two")
