"""``Audit``: one object holding a dataset's audit, and every operation on it.

An audit is the samples table (one row per sample, scores and flags), the summary (dataset-level
numbers, the config that made them, the verdict), the embeddings and the out-of-sample
posteriors. ``Audit.scan`` makes one from a dataset, ``Audit.from_arrays`` from a user's own
embeddings or predicted probabilities, ``Audit.load`` from a folder. Every change (re-rank after
corrections, CLR re-run, verification) ends in ``finish``: verdict, folder, report, FiftyOne.
The CLI commands and the FiftyOne plugin are calls on this object (as sqlite-utils' commands are
calls on its ``Database``).
"""

from __future__ import annotations

import os
import shutil
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from dqaudit.config import AuditConfig, ReportConfig
from dqaudit.dataset import LabeledImages, one_hot, original_path
from dqaudit.devices import resolve_device
from dqaudit.errors import DqauditError, InputError
from dqaudit.estimates.clr import ClrConfig
from dqaudit.estimates.headline import headline, verdict
from dqaudit.io import fiftyone_io, outputs
from dqaudit.io.ingest import fingerprint, load_dataset
from dqaudit.io.objects import OBJECT_COLUMNS
from dqaudit.pipeline import (
    check_scorable,
    embed_dataset,
    given_embeddings,
    log,
    prepared,
    rescored,
    resolved_review_order,
    run_clr,
    say_how_it_was_read,
    score,
    scored_summary,
    timed,
)
from dqaudit.report import REPORT_HTML, REPORT_PDF, render_report
from dqaudit.scoring import conventions
from dqaudit.summary import flag_meaning, per_class, per_split
from dqaudit.workflows import evaluate as evaluation
from dqaudit.workflows import relabel, verify

# the files Audit.save writes; summary.json records a stamp of each (outputs.file_stamp)
DATA_FILES = (outputs.SAMPLES_PARQUET, outputs.SAMPLES_CSV, outputs.SKIPPED_CSV,
              outputs.EMBEDDINGS_NPY, outputs.LABEL_COUNTS_NPY, outputs.PROBS_NPY,
              outputs.IMAGE_STATS_NPY)
# a new scan into a folder with an earlier audit: its reviewers' work is kept (and the ledger
# re-applied), its outputs removed
EARLIER_WORK = (relabel.CORRECTIONS_CSV, relabel.CHANGELOG_CSV, relabel.QUEUE_CSV,
                relabel.THUMBS_DIR, verify.VERIFY_SAMPLE_CSV, verify.VERIFY_FRAME)
EARLIER_OUTPUTS = (outputs.SUMMARY_JSON, REPORT_HTML, REPORT_PDF, "simulation.svg", *DATA_FILES)
# the files a rescan replaces, all or none (the review thumbnails folder follows its queue)
RESCAN_FILES = tuple(n for n in EARLIER_WORK + EARLIER_OUTPUTS if n != relabel.THUMBS_DIR)


@dataclass
class Audit:
    """An audit in memory, and the folder it lives in (``out_dir``, None until ``save``).

    Row ``i`` of ``samples``, ``dataset``, ``embeddings`` (N, D), ``probs`` (N, C) and
    ``image_stats`` (N, S: the decode workers' measurements, None without decoded images) is
    the same sample; samples dropped as junk keep their rows (``samples["dropped"]``, NaN
    probs).
    """

    dataset: LabeledImages
    samples: pd.DataFrame
    summary: dict
    embeddings: np.ndarray | None
    probs: np.ndarray | None
    config: AuditConfig = field(default_factory=AuditConfig)
    out_dir: Path | None = None
    quiet: bool = True
    image_stats: np.ndarray | None = None

    # ------------------------------------------------------------------ making one

    @classmethod
    def scan(cls, source: str | os.PathLike | LabeledImages, *, config: AuditConfig | None = None,
             out_dir: str | os.PathLike | None = None, embeddings=None,
             fiftyone_dataset: str | None = None, fiftyone_run: str | None = None,
             quiet: bool = False, command: str | None = None, **ingest_options) -> Audit:
        """Ingest, embed (or take ``embeddings``: an (N, D) array or a .npy/.npz file, see
        ``pipeline.given_embeddings``), score, estimate the CLR, and ``finish``.

        ``source``: anything ``load_dataset`` takes (``ingest_options`` go to it) or a loaded
        ``LabeledImages``. Results go into FiftyOne dataset ``fiftyone_dataset`` when given, and
        back into the source dataset when the samples came from FiftyOne; ``fiftyone_run``
        names the audit of part of a dataset (a view), whose results go under their own names
        (``fiftyone_io.RunNames``), never over the whole dataset's.
        """
        if out_dir is not None and isinstance(source, (str, os.PathLike)) and \
                Path(source).is_dir() and relabel.inside(Path(out_dir), Path(source)):
            raise InputError(f"--out {out_dir} is inside the dataset {source}: the audit's "
                             "files would be written into the input; choose a folder outside "
                             "it")
        # one writer per folder, from the start: a second scan into it is refused at once,
        # not after hours of embedding
        with outputs.locked(Path(out_dir)) if out_dir is not None else nullcontext():
            config = config or AuditConfig()
            if fiftyone_run is not None:
                fiftyone_io.RunNames(fiftyone_run)  # a bad name fails before the work
            timings: dict[str, float] = {}
            with timed(timings, "ingest_seconds"):
                if config.embed.cache_dir and "cache_dir" not in ingest_options:
                    ingest_options["cache_dir"] = config.embed.cache_dir  # crops beside it
                data, embeddings, info = prepared(
                    source if isinstance(source, LabeledImages) else
                    load_dataset(source, **ingest_options), embeddings)
            say_how_it_was_read(data, quiet=quiet)
            device = resolve_device(config.device)
            stats = None
            with timed(timings, "embed_seconds"):
                if embeddings is None:
                    what = (f"{len(data)} boxes of {data.source.get('n_images')} images"
                            if data.unit == "object" else f"{len(data)} images")
                    log(quiet, f"dqaudit: {what}, {data.n_classes} classes; model "
                               f"{config.embed.model} on "
                               f"{device if config.embed.engine == 'local' else 'Ray'}")
                    data, embeddings, stats, info = embed_dataset(data, config, device=device,
                                                                  quiet=quiet)
            check_scorable(data)
            if fiftyone_dataset is None and data.source.get("kind") == "fiftyone":
                fiftyone_dataset = data.source["location"]
            return cls._scored(data, embeddings, None, info, config=config, device=device,
                               timings=timings, command=command, out_dir=out_dir,
                               fiftyone_dataset=fiftyone_dataset, quiet=quiet,
                               fiftyone_run=fiftyone_run, image_stats=stats)

    @classmethod
    def from_arrays(cls, labels, *, embeddings=None, pred_probs=None, classes=None,
                    label_counts=None, paths=None, ids=None, splits=None,
                    config: AuditConfig | None = None, out_dir: str | os.PathLike | None = None,
                    quiet: bool = True) -> Audit:
        """An audit of arrays the user already has (cleanlab's convention).

        ``labels``: (N,) class indices, or class names (``classes`` then defaults to their
        sorted set). ``embeddings`` (N, D): features of the user's own model; ``pred_probs``
        (N, C): out-of-sample predicted probabilities (each row from a model that did not train
        on that sample), columns in the order of ``classes``. Either or both; with
        ``pred_probs`` alone there are no duplicate, outlier or CLR results (they need
        embeddings). ``paths``/``ids``/``splits`` default to ``sample_<i>``/the paths/empty.
        Nothing is written unless ``out_dir`` is given.
        """
        if embeddings is None and pred_probs is None:
            raise InputError("Audit.from_arrays needs embeddings=, pred_probs= or both")
        data = LabeledImages.from_labels(
            labels, classes=classes, label_counts=label_counts, paths=paths, ids=ids,
            splits=splits, n_classes=None if pred_probs is None else np.shape(pred_probs)[1])
        config = config or AuditConfig()
        if embeddings is not None:
            embeddings, info = given_embeddings(data, embeddings)
        else:
            info = {"model": "user pred_probs", "device": None, "image_size": None,
                    "flip_tta": False, "n_embedded": len(data), "n_cached": 0, "n_failed": 0,
                    "images_per_second": None}
            config = replace(config, clr=None)  # injection trains probes on embeddings
        return cls._scored(data, embeddings, pred_probs, info, config=config,
                           device=resolve_device(config.device), timings={},
                           command="Audit.from_arrays", out_dir=out_dir, quiet=quiet,
                           fiftyone_dataset=None)

    @classmethod
    def _scored(cls, data, embeddings, pred_probs, info, *, config, device, timings, command,
                out_dir, fiftyone_dataset, quiet, fiftyone_run=None, image_stats=None) -> Audit:
        config = resolved_review_order(config, data)
        with timed(timings, "score_seconds"):
            scored = score(data, embeddings, config, device=device, pred_probs=pred_probs,
                           image_stats=image_stats, embed_info=info, quiet=quiet)
        stats = scored.stats
        log(quiet, f"dqaudit: {stats['label_error_count']} suspected label errors (estimated "
                   f"{stats['estimated_label_errors']}), {stats['flagged_count']} samples "
                   "flagged")
        samples, summary = scored_summary(data, info, scored, config=config, timings=timings,
                                          command=command)
        summary["fiftyone_dataset"] = fiftyone_dataset
        summary["fiftyone_run"] = fiftyone_run
        res = cls(dataset=data, samples=samples, summary=summary, embeddings=embeddings,
                  probs=scored.probs, config=config, image_stats=image_stats,
                  out_dir=Path(out_dir) if out_dir is not None else None, quiet=quiet)
        if config.clr is not None:
            res._estimate_clr(config.clr, device=device)
        if res.out_dir is None:
            return res.finish()
        # one transaction from the earlier audit to the new one: a kill, a full disk or an
        # error anywhere in it puts the earlier audit back whole, corrections included (the
        # next command that takes the folder recovers it), and leaves no half-written file
        with outputs.locked(res.out_dir), outputs.transaction(res.out_dir, RESCAN_FILES):
            keep, ledger = res._clear_earlier_audit()
            try:
                if ledger is None:
                    res.finish()
                else:
                    res._reapply(ledger)
            except Exception:  # the earlier audit comes back whole: its copy is not needed
                if keep is not None:
                    shutil.rmtree(keep, ignore_errors=True)
                    with suppress(OSError):
                        keep.parent.rmdir()  # previous/, when it holds nothing else
                raise
        if not (res.out_dir / relabel.QUEUE_CSV).exists():  # the earlier queue's pictures
            shutil.rmtree(res.out_dir / relabel.THUMBS_DIR, ignore_errors=True)
        return res

    def _clear_earlier_audit(self) -> tuple[Path | None, Path | None]:
        """Before a new scan is saved into a folder that holds an earlier audit: the
        reviewers' work (ledger, review queue, verification sample) is copied to
        ``previous/<time>/``, and the earlier run's files are removed (nothing stale stays
        beside the new ones; inside the scan's transaction, so they come back if the scan does
        not finish); returns that folder (None: no earlier audit) and the earlier ledger to
        re-apply (None: none)."""
        out = self._folder()
        if not (out / outputs.SUMMARY_JSON).exists():
            return None, None
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        keep = out / "previous" / stamp
        for name in EARLIER_WORK:
            if (out / name).is_dir():
                shutil.copytree(out / name, keep / name)
            elif (out / name).exists():
                keep.mkdir(parents=True, exist_ok=True)
                shutil.copy2(out / name, keep / name)
        for name in RESCAN_FILES:
            if (out / name).is_file():
                (out / name).unlink()
        if keep.exists():
            log(self.quiet, f"dqaudit: {out} held an earlier audit: its review files are kept "
                            f"in {keep}")
        ledger = keep / relabel.CORRECTIONS_CSV
        return (keep if keep.exists() else None), (ledger if ledger.exists() else None)

    def _reapply(self, ledger: Path) -> None:
        """Re-apply an earlier audit's corrections ledger to this new scan (rows naming samples
        no longer in the dataset are left out, and counted in the message)."""
        book = relabel.ledger(ledger.parent)
        known = book["id"].isin(set(self.samples["id"]))
        log(self.quiet, f"dqaudit: re-applied {int(known.sum())} of {len(book)} corrections "
                        f"of the earlier audit ({ledger})"
                        + (f"; {int((~known).sum())} name samples no longer in the dataset"
                           if not known.all() else ""))
        if known.any():
            self.save()  # the ledger is applied to the folder's files
            self.apply_corrections(book.loc[known, ["id", "label", "annotator", "note",
                                                    "time"]])
        else:
            self.finish()

    @classmethod
    def load(cls, out_dir: str | os.PathLike, *, quiet: bool = True) -> Audit:
        """The audit saved in folder ``out_dir`` (embeddings memory-mapped)."""
        out = Path(out_dir)
        if not out.is_dir():
            raise DqauditError(f"{out}: no such folder; run `dqaudit scan DATASET --out {out}` "
                               "first")
        if (out / outputs.ROLLBACK_DIR).exists():
            with outputs.locked(out):
                if outputs.recover(out):
                    log(quiet, f"dqaudit: {out}: a command that changes the audit (a rescan or "
                               "relabel apply) was interrupted: its folder is back as it was "
                               "before it; run it again")
        if not (out / outputs.SUMMARY_JSON).exists():
            raise DqauditError(f"{out}: not an audit folder (no summary.json); run `dqaudit "
                               f"scan DATASET --out {out}` first")
        summary = outputs.read_summary(out)
        outputs.check_stamps(out, summary)
        samples = outputs.read_samples(out)
        data = LabeledImages.from_labels(
            samples["label"].to_numpy(dtype=object), classes=summary["dataset"]["classes"],
            label_counts=np.load(out / outputs.LABEL_COUNTS_NPY),
            paths=[original_path(p) for p in samples["path"]], ids=samples["id"].tolist(),
            splits=samples["split"].tolist(), source=summary["dataset"]["source"])
        if summary["dataset"]["source"].get("unit") == "object":
            data.objects = samples[[c for c in OBJECT_COLUMNS if c in samples.columns]
                                   ].reset_index(drop=True)
        emb = out / outputs.EMBEDDINGS_NPY
        probs, stats = out / outputs.PROBS_NPY, out / outputs.IMAGE_STATS_NPY
        return cls(dataset=data, samples=samples, summary=summary,
                   embeddings=np.load(emb, mmap_mode="r") if emb.exists() else None,
                   probs=np.load(probs) if probs.exists() else None,
                   image_stats=np.load(stats) if stats.exists() else None,
                   config=AuditConfig.from_summary(
                       summary, report=(out / REPORT_HTML).exists(),
                       pdf=(out / REPORT_PDF).exists()), out_dir=out, quiet=quiet)

    # ------------------------------------------------------------------ re-running

    @property
    def kept(self) -> np.ndarray:
        """(N,) bool: the rows still audited (not dropped as junk)."""
        if "dropped" not in self.samples:
            return np.ones(len(self.samples), dtype=bool)
        return ~self.samples["dropped"].astype(bool).to_numpy()

    @property
    def user_probs(self) -> bool:
        """Whether the posteriors are the user's ``pred_probs`` (kept as given on a re-rank)."""
        return self.summary.get("posterior_method") == "pred_probs"

    def rescore(self, *, labels: list[str] | None = None, dropped=frozenset(),
                device: str | None = None, refresh_clr: bool = False,
                finish: bool = True) -> Audit:
        """Re-rank after new annotations: the same embeddings, ``labels`` (class names, one per
        row; None: unchanged) and ``dataset.label_counts``; samples with an id in ``dropped``
        leave the scoring. Nothing is embedded again. ``refresh_clr``: re-run the CLR injection
        on the new labels too (when the audit has one), so no gold-free number is left stale;
        otherwise the headline marks it stale with the command that refreshes it."""
        data = self.dataset
        before = data.labels.copy()
        device = resolve_device(device or self.config.device)
        if labels is not None:
            index = {c: i for i, c in enumerate(data.classes)}
            unknown = sorted(set(labels) - set(index))
            if unknown:
                raise InputError(f"labels {unknown[:5]} are not classes of this audit")
            new = np.array([index[v] for v in labels], dtype=np.int64)
            counts = data.label_counts
            changed = np.flatnonzero(new != before)
            # labels the counts do not back (set directly, not through the ledger): a sample
            # with one annotation takes the new label as that annotation; one with several
            # needs another annotation, so that its label stays the majority of them
            changed = changed[counts[changed, new[changed]] < counts[changed].max(axis=1)]
            several = changed[counts[changed].sum(axis=1) > 1]
            if len(several):
                raise InputError(f"sample {data.ids[several[0]]!r} has several annotations; "
                                 "add one with apply_corrections instead of setting its label")
            counts[changed] = one_hot(new[changed], data.n_classes)
            data.labels = new
        keep = ~self.samples["id"].isin(set(dropped)).to_numpy()
        # every number estimated before this change of labels is now stale (headline.py)
        s = self.summary
        s["label_changes"] = s.get("label_changes", 0) + int(
            ((data.labels != before) & keep).sum() + (~keep & self.kept).sum())
        emb = None if self.embeddings is None else (
            self.embeddings if keep.all() else self.embeddings[keep])
        given = self.probs[keep] if self.user_probs else None
        timings = s.setdefault("timings", {})
        kept = data.subset(keep)
        with timed(timings, "rescore_seconds"):
            scored = score(kept, emb, self.config, pred_probs=given, device=device,
                           image_stats=None if self.image_stats is None
                           else self.image_stats[keep], embed_info=s.get("embedding"),
                           quiet=self.quiet)
        self.samples = rescored(self.samples, data, kept, keep, scored, s)
        if "fingerprint_files" in s:  # audits from before 2026-12-03 keep their scan's
            s["fingerprint"] = fingerprint(data, files=s["fingerprint_files"],
                                           dropped=set(self.samples["id"][~keep]))
        probs = np.full((len(keep), data.n_classes), np.nan, dtype=np.float32)
        probs[keep] = scored.probs
        self.probs = probs
        log(self.quiet, f"dqaudit: re-ranked {int(keep.sum())} samples; "
                        f"{s['label_error_count']} suspected label errors remain")
        if refresh_clr and (s.get("clr") or {}).get("method") and self.embeddings is not None:
            self._estimate_clr(self.config.clr or ClrConfig(), device=device)
        return self.finish() if finish else self

    def estimate_clr(self, config: ClrConfig | None = None, *, device: str | None = None
                     ) -> dict:
        """Re-run controlled CLR injection (``config``: default the audit's, else
        ``ClrConfig()``) on the audit's embeddings; record and ``finish``."""
        config = config or self.config.clr or ClrConfig()
        self._estimate_clr(config, device=resolve_device(device or self.config.device))
        self.finish()
        return self.summary["clr"]

    def _estimate_clr(self, config: ClrConfig, *, device: str) -> None:
        if self.embeddings is None:
            raise DqauditError("CLR injection trains probes on embeddings, and this audit has "
                               "none (pred_probs only); pass embeddings= as well")
        keep = self.kept
        s = self.summary
        probs = self.probs[keep] if self.probs is not None else score(
            self.dataset.subset(keep), self.embeddings[keep], self.config, device=device,
            embed_info=s.get("embedding"), quiet=self.quiet).probs
        verified = (s.get("clr") or {}).get("verified")
        with timed(s.setdefault("timings", {}), "clr_seconds"):
            s["clr"] = run_clr(self.embeddings if keep.all() else self.embeddings[keep],
                               self.dataset.labels[keep], self.dataset.n_classes,
                               seed=self.config.seed, config=config, device=device,
                               probs=probs.astype(np.float64))
        s["clr"]["label_changes_at_estimate"] = s.get("label_changes", 0)
        if verified:  # a verified estimate does not depend on the injection: keep it
            s["clr"]["verified"] = verified
        self.config = replace(self.config, clr=config)
        log(self.quiet, f"dqaudit: {headline(s)['text']}")

    # ------------------------------------------------------------------ review workflows

    def review_queue(self, *, budget: int, thumbnails: bool = True) -> pd.DataFrame:
        """The next ``budget`` unreviewed samples by review score (``relabel.review_queue``)."""
        return relabel.review_queue(self._folder(), budget=budget, thumbnails=thumbnails)

    def apply_corrections(self, corrections, *, annotator: str | None = None,
                          rerank: bool = True, device: str | None = None,
                          refresh_clr: bool = False, finish: bool = True) -> dict:
        """Add reviewers' annotations to the ledger and the label counts
        (``relabel.record_corrections``), then re-rank (``rescore``)."""
        out = self._folder()
        # all or nothing: a command killed half way is rolled back by the next Audit.load, so
        # running the same apply again neither loses nor double-counts an annotation
        with outputs.locked(out), outputs.transaction(out, relabel.APPLY_FILES):
            rec = relabel.record_corrections(out, corrections, annotator=annotator)
            counts = rec.pop("label_counts")
            labels, dropped = rec.pop("labels"), rec.pop("dropped_ids")
            if rec["already_applied"]:
                log(self.quiet, "dqaudit: these corrections were already applied "
                                f"({rec['already_applied']}); nothing changed")
                return rec
            self.dataset.label_counts = counts.astype(np.float32)
            if rerank:
                self.rescore(labels=labels, dropped=dropped, device=device,
                             refresh_clr=refresh_clr, finish=finish)
        return rec

    def export(self, *, to: str, dest: str, drop_junk: bool = True, force: bool = False
               ) -> dict:
        """Write the cleaned dataset as a new copy (``relabel.export_cleaned``)."""
        return relabel.export_cleaned(self._folder(), to=to, dest=dest, drop_junk=drop_junk,
                                      force=force)

    def draw_verification_sample(self, *, size: int, **options) -> dict:
        """Draw or grow the verification sample (``verify.draw_sample``)."""
        res = verify.draw_sample(self._folder(), size=size, **options)
        self.summary = outputs.read_summary(self.out_dir)
        return res

    def apply_verified(self, verified, *, annotator: str | None = None,
                       estimator: str | None = None) -> dict:
        """The verified estimate from checked labels (``verify.estimate_verified``); the checked
        labels enter the corrections ledger (once each), then the audit is re-ranked."""
        out = self._folder()
        with outputs.locked(out), outputs.transaction(out, relabel.APPLY_FILES):
            todo = verify.estimate_verified(out, verified,
                                            **({"estimator": estimator} if estimator else {}))
            self.summary = outputs.read_summary(self.out_dir)
            n_new = 0
            if len(todo):
                n_new = self.apply_corrections(todo, annotator=annotator, finish=False)[
                    "annotations"]
            # the corrections just made are in the estimate (corrections_since_draw): it is
            # stale only after label changes that come later
            block = self.summary["clr"]["verified"]
            block["label_changes_at_estimate"] = self.summary.get("label_changes", 0)
            self.finish()
        return {**block, "new_annotations": n_new}

    def record_verified(self, verified: pd.DataFrame, *, annotator: str | None = None) -> dict:
        """Record checked labels; estimate once every stratum has one (the App's batches)."""
        res = verify.record_verified(self._folder(), verified)
        if res["estimated"]:
            res.update(self.apply_verified(self.out_dir / verify.VERIFY_SAMPLE_CSV,
                                           annotator=annotator))
        return res

    def evaluate(self, predictions: dict, *, split: str = "auto") -> dict:
        """What the label noise does to models' accuracy (``evaluate.evaluate``): observed
        against the labels as scanned, gold-free, and with a 95% interval from the verified
        sample of the split. ``predictions``: name -> CSV/Parquet file or DataFrame (path or
        id, ``predicted``). ``split``: ``auto`` (the test split when there is one, else every
        predicted sample), ``all``, or a split's name. Recorded in ``summary["evaluation"]``,
        the report and FiftyOne's run info."""
        out = self._folder()
        with outputs.locked(out):
            chosen = {"auto": evaluation.default_split(self.samples), "all": None}.get(split,
                                                                                      split)
            block = evaluation.evaluate(out, predictions, split=chosen, samples=self.samples,
                                        summary=self.summary, probs=self.probs)
            self.summary[evaluation.EVALUATION] = block
            self.finish()
        return block

    # ------------------------------------------------------------------ Datalab's shapes

    def get_issues(self, name: str | None = None) -> pd.DataFrame:
        """cleanlab Datalab's ``get_issues``: per sample ``is_<type>_issue`` and a quality
        ``<type>_score`` (low = bad) for ``name`` (``label``, ``outlier``, ``near_duplicate``,
        ``exact_duplicate``, cleanvision's ``dark``, ``light``, ...) or every type checked;
        rows in ``samples``' order (``conventions.get_issues``)."""
        return conventions.get_issues(self.samples, name)

    def get_issue_summary(self, name: str | None = None) -> pd.DataFrame:
        """Datalab's ``get_issue_summary``: ``issue_type``, ``num_issues``, mean ``score``."""
        return conventions.get_issue_summary(self.samples, name)

    def report(self, *, top: int = 10) -> None:
        """Datalab's ``report()``: the headline, the issue summary and the ``top`` label issues,
        printed (in a notebook the audit also shows itself as HTML)."""
        print(conventions.report_text(self._summary_now(), self.samples, top=top))

    def _repr_html_(self) -> str:
        from html import escape

        s = self._summary_now()
        table = conventions.get_issue_summary(self.samples, None).to_html(index=False)
        return (f"<p><b>dqaudit</b>: {s['n_samples']:,} samples, "
                f"{s['dataset']['n_classes']} classes; {escape(s['headline']['text'])}</p>"
                + table)

    def _summary_now(self) -> dict:
        """The summary with its derived blocks (the headline) as they stand now."""
        if "headline" not in self.summary:
            self._derive()
        return self.summary

    # ------------------------------------------------------------------ outputs

    def finish(self) -> Audit:
        """The end of every path: the verdict, the folder, the report, FiftyOne."""
        s = self.summary
        self._derive()
        if self.out_dir is not None:
            with outputs.locked(self.out_dir):
                self.save()
                if self.config.report.enabled:
                    paths = self.render_report()
                    log(self.quiet, f"dqaudit: wrote {', '.join(paths.values())}")
        if s.get("fiftyone_dataset"):
            self.to_fiftyone()
        return self

    def _derive(self) -> None:
        """The summary's blocks that follow from the rest of it: the verdict, the per-split
        table, the corrections ledger's summary and the config."""
        s = self.summary
        s["verdict"] = verdict(s, thresholds=tuple(self.config.report.verdict_thresholds))
        head = headline(s)
        s["headline"] = head  # the one share of wrong labels every door states
        if not s.get("label_changes") and "headline_at_scan" not in s:
            # the labels as scanned: kept for the report's before/after once they change
            s["headline_at_scan"] = {"rate": head["rate"], "ci_low": head["ci_low"],
                                     "ci_high": head["ci_high"], "text": head["text"],
                                     "at": s.get("created_at")}
        s["flag_meaning"] = flag_meaning(self.samples, head, s["n_samples"])
        s["per_split"] = per_split(self.samples, head)
        s["per_class"] = per_class(self.samples, head, self.dataset.classes)
        if self.out_dir is not None:
            s["corrections"] = relabel.corrections_summary(self.out_dir)
        s["config"] = self.config.to_dict()

    def save(self, out_dir: str | os.PathLike | None = None) -> Path:
        """Write the audit folder (samples table, summary, arrays; atomic writes)."""
        out = Path(out_dir) if out_dir is not None else self.out_dir
        if out is None:
            raise DqauditError("Audit.save needs a folder: audit.save('audit_dir')")
        try:
            with outputs.locked(out):
                return self._save(out)
        except OSError as exc:  # a full disk, a folder made read-only meanwhile
            raise DqauditError(f"{out}: could not write the audit ({exc.strerror}); free space "
                               "or choose another folder, then run the command again") from None

    def _save(self, out: Path) -> Path:
        out.mkdir(parents=True, exist_ok=True)
        outputs.write_samples(out, self.samples)
        outputs.write_skipped(out, self.dataset.skipped)
        emb = out / outputs.EMBEDDINGS_NPY
        same_file = isinstance(self.embeddings, np.memmap) and Path(
            self.embeddings.filename).resolve() == emb.resolve()
        if self.embeddings is not None and not same_file:
            outputs.write_array(out, outputs.EMBEDDINGS_NPY, self.embeddings.astype(np.float32))
        elif self.embeddings is None and emb.exists():
            emb.unlink()  # an earlier run's, not this audit's
        outputs.write_array(out, outputs.LABEL_COUNTS_NPY, self.dataset.label_counts)
        for name, array, dtype in ((outputs.PROBS_NPY, self.probs, np.float32),
                                   (outputs.IMAGE_STATS_NPY, self.image_stats, np.float64)):
            if array is not None:
                outputs.write_array(out, name, array.astype(dtype))
            elif (out / name).exists():
                (out / name).unlink()  # an earlier run's, not this audit's
        self.out_dir = out
        # summary.json, written last, names the data files it goes with (Audit.load checks)
        self.summary["files"] = {name: outputs.file_stamp(out / name) for name in DATA_FILES
                                 if (out / name).exists()}
        self._save_summary()
        return out

    def render_report(self, config: ReportConfig | None = None) -> dict:
        """(Re-)render report.html (and .pdf) from the folder; ``config`` replaces the audit's
        report settings and is recorded. Returns the paths written."""
        if config is not None:
            self.config = replace(self.config, report=config)
        before = dict(self.summary)
        self._derive()  # an audit written by an older version gets today's blocks
        if self.summary != before:
            self._save_summary()
        return render_report(self._folder(), self.config.report)

    def to_fiftyone(self, name: str | None = None) -> dict:
        """Write the kept samples' ``dq_*`` fields, saved views and run record into FiftyOne
        dataset ``name`` (default: the audit's); records the name."""
        name = name or self.summary.get("fiftyone_dataset")
        if not name:
            raise DqauditError("no FiftyOne dataset named; pass one: audit.to_fiftyone('name')")
        keep = self.kept
        part = replace(self, dataset=self.dataset.subset(keep),
                       samples=self.samples[keep].reset_index(drop=True),
                       embeddings=None if self.embeddings is None else self.embeddings[keep])
        written = fiftyone_io.write_results(
            part, name, embeddings=self.embeddings is not None,
            label_field=self.dataset.source.get("label_field", fiftyone_io.DEFAULT_LABEL_FIELD),
            run=self.summary.get("fiftyone_run"))
        if self.summary.get("fiftyone_dataset") != name:
            self.summary["fiftyone_dataset"] = name
            self._save_summary()
        log(self.quiet, f"dqaudit: wrote fields and views {', '.join(written['views'])} to "
                        f"FiftyOne dataset {written['dataset']!r}")
        return written

    def _save_summary(self) -> None:
        if self.out_dir is not None:
            self.summary["config"] = self.config.to_dict()
            outputs.write_json(self._folder() / outputs.SUMMARY_JSON, self.summary)

    def _folder(self) -> Path:
        if self.out_dir is None:
            raise DqauditError("this audit has no folder yet; call audit.save('audit_dir') "
                               "first")
        return self.out_dir


def audit(source, *, out_dir=None, config: AuditConfig | None = None, **options) -> Audit:
    """Audit a labeled image dataset (``Audit.scan``); the outputs go to ``out_dir`` when given.

    ``config``: an ``AuditConfig`` (``dqaudit.config``); other keyword arguments go to
    ``Audit.scan`` (``embeddings``, ``fiftyone_dataset``, ``quiet``, ``command``) and to
    ``load_dataset`` (``label_column``, ``from_fiftyone``, ...).
    """
    return Audit.scan(source, out_dir=out_dir, config=config, **options)


def draw_verification_sample(out_dir, *, size: int, **options) -> dict:
    """``Audit.load(out_dir).draw_verification_sample(size=size, ...)``."""
    return Audit.load(out_dir).draw_verification_sample(size=size, **options)


def apply_verified(out_dir, verified, **options) -> dict:
    """``Audit.load(out_dir).apply_verified(verified, ...)``."""
    return Audit.load(out_dir).apply_verified(verified, **options)
