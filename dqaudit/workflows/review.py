"""The review methods of ``Audit`` (a mixin): the review queue, corrections and the re-rank
they trigger (``rescore``; an earlier audit's ledger re-applied to a new scan), export, the
verification sample and the evaluation of models.

Each method calls one workflow function on the values the audit holds, records the values it
returns on the audit, and lets the store write the folder (``Audit.save``/``finish``) when the
audit has one. An audit without a folder (``Audit.from_arrays``) does all of this in memory.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from dqaudit.dataset import first_classes, one_hot, set_row, set_text
from dqaudit.devices import resolve_device
from dqaudit.errors import DqauditError, InputError
from dqaudit.estimates.clr import ClrConfig
from dqaudit.io import outputs, store
from dqaudit.io.fiftyone_results import tag_samples, tag_view, write_results
from dqaudit.io.reading import DEFAULT_LABEL_FIELD
from dqaudit.io.ingest import fingerprint
from dqaudit.pipeline import log, rescored, score, timed
from dqaudit.workflows import evaluate as evaluation
from dqaudit.workflows import export, relabel, verify

REVIEW_TAG = "dq_review"
# the files a draw of the verification sample changes
DRAW_FILES = (outputs.SUMMARY_JSON, store.VERIFY_SAMPLE_CSV, store.VERIFY_FRAME)


class Reviewing:
    """``Audit``'s review workflows; the attributes are ``Audit``'s."""

    @contextmanager
    def _changing(self, names: tuple[str, ...]):
        """The block changes the audit; with a folder, under its lock and all or nothing
        (``outputs.transaction``: a command killed half way is rolled back by the next
        ``Audit.load``, so running it again neither loses nor double-counts anything)."""
        if self.out_dir is None:
            yield
            return
        with outputs.locked(self.out_dir), outputs.transaction(self.out_dir, names):
            yield

    def _tag(self, paths: list[str], tag: str, *, view: str | None = None) -> None:
        """Tag the samples of ``paths`` in the audit's FiftyOne dataset, when it has one (an
        object audit tags the images holding the boxes)."""
        name = self.summary.get("fiftyone_dataset")
        if not name:
            return
        if view is not None:
            tag_view(name, paths, tag, view_name=view)
        else:
            tag_samples(name, paths, tag)

    def _save_verification(self) -> None:
        """The verification files and summary.json: a draw or a batch of checked labels
        changes no data file, so none is rewritten."""
        store.write_verification(self.out_dir, frame=self.verify_frame,
                                 sample=self.verify_sample)
        self._save_summary()

    def _place_column(self, table: pd.DataFrame) -> str:
        return "image_path" if "image_path" in table.columns else "path"

    def review_queue(self, *, budget: int, thumbnails: bool = True) -> pd.DataFrame:
        """The next ``budget`` unreviewed samples by review score (``relabel.review_queue``).
        With a folder: written to ``review_queue.csv`` (with ``thumbnails``, pictures in
        ``review_thumbs/``; a queue whose filled rows were never applied is not overwritten)
        and tagged ``dq_review`` in FiftyOne."""
        queue = relabel.review_queue(samples=self.samples, ledger=self.ledger, budget=budget)
        if self.out_dir is None:
            return queue
        out = self.out_dir
        with outputs.locked(out):
            unapplied = relabel.filled_unapplied(store.read_queue(out), self.ledger)
            if unapplied:
                raise DqauditError(
                    f"{out / store.QUEUE_CSV} has {unapplied} filled-in correct_label row(s) "
                    "that were never applied: a new queue would overwrite them. Apply them "
                    f"first (dqaudit relabel apply {out} {out / store.QUEUE_CSV}), or move the "
                    "file away to discard them")
            pictures = relabel.queue_pictures(queue, dicom=outputs.dicom_read(self.summary)) \
                if thumbnails else None
            store.write_queue(out, queue, pictures)
        self._tag(list(dict.fromkeys(queue[self._place_column(queue)])), REVIEW_TAG)
        return queue

    def apply_corrections(self, corrections, *, annotator: str | None = None,
                          rerank: bool = True, device: str | None = None,
                          refresh_clr: bool = False, finish: bool = True) -> dict:
        """Add reviewers' annotations (a CSV path or DataFrame: ``id`` or ``path``, ``label``
        or ``correct_label``, optionally ``annotator`` and ``note``) to the ledger and the
        label counts (``relabel.record_corrections``), then re-rank (``rescore``)."""
        new = relabel.read_corrections(corrections, self.samples, self.dataset.classes,
                                       annotator=annotator, sets=self.dataset.multi_label)
        with self._changing(store.APPLY_FILES):
            record = relabel.record_set_corrections if self.dataset.multi_label else \
                relabel.record_corrections
            rec = record(new, samples=self.samples, classes=self.dataset.classes,
                         ledger=self.ledger, changelog=self.changelog,
                         label_counts=self.dataset.label_counts)
            self.ledger, self.changelog = rec.pop("ledger"), rec.pop("changelog")
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
            elif self.out_dir is not None:
                self.save()
        return rec

    def export(self, *, to: str, dest: str, drop_junk: bool = True, force: bool = False
               ) -> dict:
        """Write the cleaned dataset as a new copy (``export.export_cleaned``)."""
        return export.export_cleaned(samples=self.samples, summary=self.summary,
                                     changelog=self.changelog, out_dir=self.out_dir, to=to,
                                     dest=dest, drop_junk=drop_junk, force=force)

    def draw_verification_sample(self, *, size: int, seed: int | None = None,
                                 half_width: float | None = None,
                                 uniform_share: float | None = None,
                                 split: str | None = None) -> dict:
        """Draw or grow the verification sample (``verify.draw_sample``): ``seed`` (default the
        audit's) and ``uniform_share`` (default the config's) make a first draw's design and
        are recorded; a grown sample keeps its design. ``split``: draw inside that split."""
        first = self.verify_frame is None
        if first:
            uniform_share = self.config.verify.uniform_share if uniform_share is None \
                else float(uniform_share)
        with self._changing(DRAW_FILES):
            drawn = verify.draw_sample(
                samples=self.samples, summary=self.summary, probs=self.probs,
                frame=self.verify_frame, sample=self.verify_sample, size=size,
                seed=self.config.seed if seed is None else int(seed),
                uniform_share=uniform_share, split=split, half_width=half_width)
            self.verify_frame, self.verify_sample = drawn["frame"], drawn["sample"]
            self.summary["verification"] = drawn["design"]
            if first:
                self.config = replace(self.config, verify=replace(
                    self.config.verify, uniform_share=uniform_share))
            if self.out_dir is not None:
                self._save_verification()
        result = drawn["result"]
        if self.out_dir is not None:
            result["csv"] = str(self.out_dir / store.VERIFY_SAMPLE_CSV)
        sample = self.verify_sample
        self._tag(list(dict.fromkeys(sample[self._place_column(sample)])), verify.VERIFY_TAG,
                  view=verify.VERIFY_TAG)
        return result

    def apply_verified(self, verified, *, annotator: str | None = None,
                       estimator: str | None = None) -> dict:
        """The verified estimate from checked labels (``verify.estimate_verified``; a CSV path
        or DataFrame with ``id`` and ``verified_label``), recorded in ``summary["verified"]``;
        the checked labels enter the corrections ledger (once each), then the audit is
        re-ranked. ``estimator``: default the config's, recorded when given."""
        if estimator is not None:
            self.config = replace(self.config, verify=replace(self.config.verify,
                                                              estimator=estimator))
        with self._changing(store.APPLY_FILES):
            res = verify.estimate_verified(
                verified, samples=self.samples, summary=self.summary,
                frame=self.verify_frame, sample=self.verify_sample, ledger=self.ledger,
                changelog=self.changelog, estimator=self.config.verify.estimator)
            self.verify_sample = res["sample"]
            self.summary["verified"] = block = res["verified"]
            n_new = 0
            if len(res["todo"]):
                n_new = self.apply_corrections(res["todo"], annotator=annotator,
                                               finish=False)["annotations"]
            # the corrections just made are in the estimate (corrections_since_draw): it is
            # stale only after label changes that come later
            block["label_changes_at_estimate"] = self.summary.get("label_changes", 0)
            self.finish()
        return {**block, "new_annotations": n_new}

    def record_verified(self, verified: pd.DataFrame, *, annotator: str | None = None) -> dict:
        """Record checked labels; estimate once every stratum has one (the App's batches)."""
        with self._changing(DRAW_FILES):
            self.verify_sample, res = verify.record_verified(verified, summary=self.summary,
                                                             sample=self.verify_sample)
            if self.out_dir is not None:
                self._save_verification()
        if res["estimated"]:
            res.update(self.apply_verified(self.verify_sample, annotator=annotator))
        return res

    def evaluate(self, predictions: dict, *, split: str = "auto") -> dict:
        """What the label noise does to models' accuracy (``evaluate.evaluate``): observed
        against the labels as scanned, gold-free, and with a 95% interval from the verified
        sample of the split. ``predictions``: name -> CSV/Parquet file or DataFrame (path or
        id, ``predicted``). ``split``: ``auto`` (the test split when there is one, else every
        predicted sample), ``all``, or a split's name. Recorded in ``summary["evaluation"]``,
        the report and FiftyOne's run info."""
        with self._changing((outputs.SUMMARY_JSON, store.REPORT_HTML, store.REPORT_PDF)):
            chosen = {"auto": evaluation.default_split(self.samples), "all": None}.get(split,
                                                                                      split)
            block = evaluation.evaluate(
                predictions, split=chosen, samples=self.samples, summary=self.summary,
                probs=self.probs, changelog=self.changelog, frame=self.verify_frame,
                sample=self.verify_sample)
            self.summary[evaluation.EVALUATION] = block
            self.finish()
        return block

    def rescore(self, *, labels: list[str] | None = None, dropped=frozenset(),
                device: str | None = None, refresh_clr: bool = False,
                finish: bool = True):
        """Re-rank after new annotations: the same embeddings, ``labels`` (class names, one per
        row; None: unchanged) and ``dataset.label_counts``; samples with an id in ``dropped``
        leave the scoring. Nothing is embedded again. ``refresh_clr``: re-run the CLR injection
        on the new labels too (when the audit has one), so no gold-free number is left stale;
        otherwise the headline marks it stale with the command that refreshes it."""
        data = self.dataset
        before = data.labels.copy()
        # a set's label is its 0/1 row, which apply_corrections has already updated: the
        # table's text is the label before this change
        before_sets = self.samples["label"].astype(str).to_numpy()
        device = resolve_device(device or self.config.device)
        if labels is not None and data.multi_label:  # a set's label is the whole set
            sets = np.array([set_row(v, data.classes, what="label set") for v in labels])
            data.label_counts = sets.astype(np.float32)
            data.labels = first_classes(sets)
        elif labels is not None:
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
        changed = np.array([set_text(r, data.classes) for r in data.label_sets]) \
            != before_sets if data.multi_label else data.labels != before
        s["label_changes"] = s.get("label_changes", 0) + int(
            (changed & keep).sum() + (~keep & self.kept).sum())
        emb = None if self.embeddings is None else (
            self.embeddings if keep.all() else self.embeddings[keep])
        given = self.probs[keep] if self.user_probs else None
        timings = s.setdefault("timings", {})
        kept = data.subset(keep)
        with timed(timings, "rescore_seconds"):
            scored = score(kept, emb, self.config, pred_probs=given, device=device,
                           image_stats=None if self.image_stats is None
                           else self.image_stats[keep], embed_info=s.get("embedding"),
                           quiet=self.quiet, regions=None if self.regions is None
                           else np.asarray(self.regions[keep], dtype=np.float32))
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

    def _reapply(self, book: pd.DataFrame, where: Path) -> None:
        """Re-apply an earlier audit's corrections ledger ``book`` (kept in ``where``) to this
        new scan (rows naming samples no longer in the dataset are left out, and counted)."""
        known = book["id"].isin(set(self.samples["id"]))
        log(self.quiet, f"dqaudit: re-applied {int(known.sum())} of {len(book)} corrections "
                        f"of the earlier audit ({where})"
                        + (f"; {int((~known).sum())} name samples no longer in the dataset"
                           if not known.all() else ""))
        if known.any():
            self.apply_corrections(book.loc[known, ["id", "label", "annotator", "note",
                                                    "time"]])
        else:
            self.finish()

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
        written = write_results(
            part, name, embeddings=self.embeddings is not None,
            label_field=self.dataset.source.get("label_field", DEFAULT_LABEL_FIELD),
            run=self.summary.get("fiftyone_run"))
        if self.summary.get("fiftyone_dataset") != name:
            self.summary["fiftyone_dataset"] = name
            self._save_summary()
        log(self.quiet, f"dqaudit: wrote fields and views {', '.join(written['views'])} to "
                        f"FiftyOne dataset {written['dataset']!r}")
        return written
