"""``Audit``: one object holding a dataset's audit, and every operation on it.

An audit is the samples table (one row per sample, scores and flags), the summary (dataset-level
numbers, the config that made them, the verdict), the embeddings and the out-of-sample
posteriors, and the reviewers' work: the corrections ledger and changelog, the verification
frame and sample. ``Audit`` is their one owner: workflows are functions of these values, and
only the store (``io.store``) writes the folder. ``Audit.scan`` makes one from a dataset,
``Audit.from_arrays`` from a user's own embeddings or predicted probabilities (in memory; every
step that needs no image works there too, and ``save`` makes it a folder audit), ``Audit.load``
from a folder. Every change ends in ``finish``: verdict, folder, report, FiftyOne.
The CLI commands and the FiftyOne plugin are calls on this object (as sqlite-utils' commands are
calls on its ``Database``).
"""

from __future__ import annotations

import os
import shutil
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from dqaudit.config import AuditConfig, ReportConfig
from dqaudit.dataset import LabeledImages
from dqaudit.devices import resolve_device
from dqaudit.errors import DqauditError, InputError
from dqaudit.estimates.clr import ClrConfig
from dqaudit.estimates.headline import headline, verdict
from dqaudit.files import original_path
from dqaudit.io import outputs, store
from dqaudit.io.fiftyone_runs import RunNames
from dqaudit.io.given import checked_regions, given_embeddings, pred_probs_info
from dqaudit.io.ingest import read_input
from dqaudit.io.objects import OBJECT_COLUMNS
from dqaudit.io.reading import input_config
from dqaudit.pipeline import (check_regions, check_scorable, embed_dataset, learnable_sets, log,
                              prepared, region_embeddings, resolved_review_order, run_clr,
                              say_how_it_was_read, score, scored_summary, timed)
from dqaudit.report import render_report
from dqaudit.scoring.conventions import DatalabViews
from dqaudit.summary import flag_meaning, per_class, per_split
from dqaudit.workflows import relabel
from dqaudit.workflows.export import inside
from dqaudit.workflows.review import Reviewing


@dataclass
class Audit(Reviewing, DatalabViews):
    """An audit in memory, and the folder it lives in (``out_dir``, None until ``save``).

    Row ``i`` of ``samples``, ``dataset``, ``embeddings`` (N, D), ``probs`` (N, C) and
    ``image_stats`` (N, S: the decode workers' measurements, None without decoded images) is
    the same sample; samples dropped as junk keep their rows (``samples["dropped"]``, NaN
    probs). ``ledger``: every annotation received (``store.LEDGER_COLUMNS``); ``changelog``:
    every label change; ``verify_frame`` / ``verify_sample``: the verification design's
    population and drawn sample (None before a draw). The review methods are ``Reviewing``'s.
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
    ledger: pd.DataFrame = field(default_factory=store.empty_ledger)
    changelog: pd.DataFrame = field(default_factory=store.empty_changelog)
    verify_frame: pd.DataFrame | None = None
    verify_sample: pd.DataFrame | None = None
    # (N, R, D) embeddings of each image's regions (a multi-label audit with --regions)
    regions: np.ndarray | None = None

    # ------------------------------------------------------------------ making one

    @classmethod
    def scan(cls, source: str | os.PathLike | LabeledImages, *, config: AuditConfig | None = None,
             out_dir: str | os.PathLike | None = None, embeddings=None,
             fiftyone_dataset: str | None = None, fiftyone_run: str | None = None,
             quiet: bool = False, command: str | None = None, **input_options) -> Audit:
        """Ingest, embed (or take ``embeddings``: an (N, D) array or a .npy/.npz file, see
        ``io.given.given_embeddings``), score, estimate the CLR, and ``finish``.

        ``source``: anything ``load_dataset`` takes, read as ``config.input`` says
        (``input_options``: its fields by name, replacing them), or a loaded
        ``LabeledImages``. Results go into FiftyOne dataset ``fiftyone_dataset`` when given, and
        back into the source dataset when the samples came from FiftyOne; ``fiftyone_run``
        names the audit of part of a dataset (a view), whose results go under their own names
        (``fiftyone_runs.RunNames``), never over the whole dataset's.
        """
        if out_dir is not None and isinstance(source, (str, os.PathLike)) and \
                Path(source).is_dir() and inside(Path(out_dir), Path(source)):
            raise InputError(f"--out {out_dir} is inside the dataset {source}: the audit's "
                             "files would be written into the input; choose a folder outside "
                             "it")
        # one writer per folder, from the start: a second scan into it is refused at once,
        # not after hours of embedding
        with outputs.locked(Path(out_dir)) if out_dir is not None else nullcontext():
            config = config or AuditConfig()
            if input_options:
                config = replace(config, input=input_config(config.input, input_options))
            if fiftyone_run is not None:
                RunNames(fiftyone_run)  # a bad name fails before the work
            timings: dict[str, float] = {}
            with timed(timings, "ingest_seconds"):
                data, embeddings, info = prepared(
                    source if isinstance(source, LabeledImages) else
                    read_input(source, config=config.input,  # box crops beside the cache
                               cache_dir=config.embed.cache_dir), embeddings)
            say_how_it_was_read(data, quiet=quiet)
            check_regions(data, config, user_embeddings=embeddings is not None)
            device = resolve_device(config.device)
            stats = regions = None
            with timed(timings, "embed_seconds"):
                if embeddings is None:
                    what = (f"{len(data)} boxes of {data.source.get('n_images')} images"
                            if data.unit == "object" else f"{len(data)} images")
                    log(quiet, f"dqaudit: {what}, {data.n_classes} classes; model "
                               f"{config.embed.model} on "
                               f"{device if config.embed.engine == 'local' else 'Ray'}")
                    data, embeddings, stats, info = embed_dataset(data, config, device=device,
                                                                  quiet=quiet)
                    regions = region_embeddings(data, config, info, device=device,
                                                quiet=quiet)
            check_scorable(data)
            if fiftyone_dataset is None and data.source.get("kind") == "fiftyone":
                fiftyone_dataset = data.source["location"]
            return cls._scored(data, embeddings, None, info, config=config, device=device,
                               timings=timings, command=command, out_dir=out_dir,
                               fiftyone_dataset=fiftyone_dataset, quiet=quiet,
                               fiftyone_run=fiftyone_run, image_stats=stats, regions=regions)

    @classmethod
    def from_arrays(cls, labels, *, embeddings=None, pred_probs=None, classes=None,
                    label_counts=None, paths=None, ids=None, splits=None,
                    multi_label: bool | None = None, region_embeddings=None,
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

        Label sets (cleanlab's multi-label convention): ``labels`` a list of class-index lists
        (or an (N, C) 0/1 array with ``multi_label=True``) and ``pred_probs`` (N, C)
        independent out-of-sample probabilities of each class being present;
        ``region_embeddings`` (N, R, D) beside ``embeddings``: features of R parts of each
        image, for the region model's per-class posteriors (``scoring.regions``).
        """
        if embeddings is None and pred_probs is None:
            raise InputError("Audit.from_arrays needs embeddings=, pred_probs= or both")
        data = LabeledImages.from_user_labels(
            labels, multi_label=multi_label, classes=classes, label_counts=label_counts,
            paths=paths, ids=ids, splits=splits,
            n_classes=None if pred_probs is None else np.shape(pred_probs)[1])
        if data.multi_label:
            data, pred_probs = learnable_sets(data, pred_probs)
        config = config or AuditConfig()
        region_embeddings = checked_regions(region_embeddings, embeddings, len(data))
        if embeddings is not None:
            embeddings, info = given_embeddings(data, embeddings)
        else:
            info = pred_probs_info(len(data))
            config = replace(config, clr=None)  # injection trains probes on embeddings
        return cls._scored(data, embeddings, pred_probs, info, config=config,
                           device=resolve_device(config.device), timings={},
                           command="Audit.from_arrays", out_dir=out_dir, quiet=quiet,
                           fiftyone_dataset=None, regions=region_embeddings)

    @classmethod
    def _scored(cls, data, embeddings, pred_probs, info, *, config, device, timings, command,
                out_dir, fiftyone_dataset, quiet, fiftyone_run=None, image_stats=None,
                regions=None) -> Audit:
        config = resolved_review_order(config, data)
        if data.multi_label and config.clr is not None:  # the injection flips one label
            config = replace(config, clr=None)
        with timed(timings, "score_seconds"):
            scored = score(data, embeddings, config, device=device, pred_probs=pred_probs,
                           image_stats=image_stats, embed_info=info, quiet=quiet,
                           regions=regions)
        stats = scored.stats
        log(quiet, f"dqaudit: {stats['label_error_count']} suspected label errors (estimated "
                   f"{stats['estimated_label_errors']}), {stats['flagged_count']} samples "
                   "flagged")
        samples, summary = scored_summary(data, info, scored, config=config, timings=timings,
                                          command=command)
        summary["fiftyone_dataset"] = fiftyone_dataset
        summary["fiftyone_run"] = fiftyone_run
        res = cls(dataset=data, samples=samples, summary=summary, embeddings=embeddings,
                  probs=scored.probs, config=config, image_stats=image_stats, regions=regions,
                  out_dir=Path(out_dir) if out_dir is not None else None, quiet=quiet)
        if config.clr is not None:
            res._estimate_clr(config.clr, device=device)
        if res.out_dir is None:
            return res.finish()
        # one transaction from the earlier audit to the new one: a kill, a full disk or an
        # error anywhere in it puts the earlier audit back whole, corrections included (the
        # next command that takes the folder recovers it), and leaves no half-written file
        with outputs.locked(res.out_dir), outputs.transaction(res.out_dir, store.RESCAN_FILES):
            keep = store.keep_earlier_work(res.out_dir)
            if keep is not None:
                log(res.quiet, f"dqaudit: {res.out_dir} held an earlier audit: its review "
                               f"files are kept in {keep}")
            try:
                book = store.read_ledger(keep) if keep is not None else store.empty_ledger()
                if len(book):
                    res._reapply(book, keep / store.CORRECTIONS_CSV)
                else:
                    res.finish()
            except Exception:  # the earlier audit comes back whole: its copy is not needed
                if keep is not None:
                    shutil.rmtree(keep, ignore_errors=True)
                    with suppress(OSError):
                        keep.parent.rmdir()  # previous/, when it holds nothing else
                raise
        store.drop_stale_pictures(res.out_dir)  # the earlier queue's
        return res

    @classmethod
    def load(cls, out_dir: str | os.PathLike, *, quiet: bool = True) -> Audit:
        """The audit saved in folder ``out_dir`` (embeddings memory-mapped)."""
        out = Path(out_dir)
        st = store.read(out)
        summary = st.summary
        if summary.pop("_recovered", False):
            log(quiet, f"dqaudit: {out}: a command that changes the audit (a rescan or relabel "
                       "apply) was interrupted: its folder is back as it was before it; run it "
                       "again")
        samples = st.samples
        data = LabeledImages.from_user_labels(
            st.label_counts if summary.get("multi_label") else
            samples["label"].to_numpy(dtype=object), multi_label=bool(
                summary.get("multi_label")), classes=summary["dataset"]["classes"],
            label_counts=None if summary.get("multi_label") else st.label_counts,
            paths=[original_path(p) for p in samples["path"]], ids=samples["id"].tolist(),
            splits=samples["split"].tolist(), source=summary["dataset"]["source"],
            n_classes=None)
        if summary["dataset"]["source"].get("unit") == "object":
            data.objects = samples[[c for c in OBJECT_COLUMNS if c in samples.columns]
                                   ].reset_index(drop=True)
        return cls(dataset=data, samples=samples, summary=summary, embeddings=st.embeddings,
                   probs=st.probs, image_stats=st.image_stats, ledger=st.ledger,
                   changelog=st.changelog, verify_frame=st.verify_frame,
                   verify_sample=st.verify_sample, regions=st.regions,
                   config=AuditConfig.from_summary(
                       summary, report=(out / store.REPORT_HTML).exists(),
                       pdf=(out / store.REPORT_PDF).exists()), out_dir=out, quiet=quiet)

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

    def estimate_clr(self, config: ClrConfig | None = None, *, device: str | None = None
                     ) -> dict:
        """Re-run controlled CLR injection (``config``: default the audit's, else
        ``ClrConfig()``) on the audit's embeddings; record and ``finish``."""
        config = config or self.config.clr or ClrConfig()
        self._estimate_clr(config, device=resolve_device(device or self.config.device))
        self.finish()
        return self.summary["clr"]

    def _estimate_clr(self, config: ClrConfig, *, device: str) -> None:
        if self.dataset.multi_label:
            raise DqauditError("controlled CLR injection flips one label per sample; a "
                               "multi-label audit states per-class missing and extra rates "
                               "instead (summary.json multi_label), and `dqaudit verify` gives "
                               "the share of wrong sets an interval")
        if self.embeddings is None:
            raise DqauditError("CLR injection trains probes on embeddings, and this audit has "
                               "none (pred_probs only); pass embeddings= as well")
        keep = self.kept
        s = self.summary
        probs = self.probs[keep] if self.probs is not None else score(
            self.dataset.subset(keep), self.embeddings[keep], self.config, device=device,
            embed_info=s.get("embedding"), quiet=self.quiet).probs
        with timed(s.setdefault("timings", {}), "clr_seconds"):
            s["clr"] = run_clr(self.embeddings if keep.all() else self.embeddings[keep],
                               self.dataset.labels[keep], self.dataset.n_classes,
                               seed=self.config.seed, config=config, device=device,
                               probs=probs.astype(np.float64))
        s["clr"]["label_changes_at_estimate"] = s.get("label_changes", 0)
        self.config = replace(self.config, clr=config)
        log(self.quiet, f"dqaudit: {headline(s)['text']}")

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
        s["corrections"] = relabel.corrections_summary(self.ledger, self.changelog)
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
        self.summary["config"] = self.config.to_dict()
        store.write(out, store.Stored(
            samples=self.samples, summary=self.summary, label_counts=self.dataset.label_counts,
            embeddings=self.embeddings, probs=self.probs, image_stats=self.image_stats,
            ledger=self.ledger, changelog=self.changelog, verify_frame=self.verify_frame,
            verify_sample=self.verify_sample, regions=self.regions), skipped=self.dataset.skipped)
        self.out_dir = out
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

    def _save_summary(self) -> None:
        if self.out_dir is not None:
            self.summary["config"] = self.config.to_dict()
            with outputs.locked(self.out_dir):
                store.write_summary(self.out_dir, self.summary)

    def _folder(self) -> Path:
        if self.out_dir is None:
            raise DqauditError("this audit has no folder yet; call audit.save('audit_dir') "
                               "first")
        return self.out_dir


def audit(source, *, out_dir=None, config: AuditConfig | None = None, **options) -> Audit:
    """``Audit.scan``: the outputs go to ``out_dir`` when given; ``options`` to ``Audit.scan``
    (``embeddings``, ``fiftyone_dataset``, ...) and ``InputConfig``'s fields (``label_column``,
    ``multi_label``, ...)."""
    return Audit.scan(source, out_dir=out_dir, config=config, **options)


def draw_verification_sample(out_dir, *, size: int, **options) -> dict:
    """``Audit.load(out_dir).draw_verification_sample(size=size, ...)``."""
    return Audit.load(out_dir).draw_verification_sample(size=size, **options)


def apply_verified(out_dir, verified, **options) -> dict:
    """``Audit.load(out_dir).apply_verified(verified, ...)``."""
    return Audit.load(out_dir).apply_verified(verified, **options)
