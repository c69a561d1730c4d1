"""The FiftyOne plugin's services: each App operator is one call here, on the dataset's last
audit (its saved outputs, ``dataset.info["dqaudit"]["out_dir"]``).

This module sits above the pipeline and the workflows (the FiftyOne adapter, ``io.fiftyone_*``,
sits below them and only reads and writes FiftyOne), so the adapter never imports the audit.
``__all__`` is the plugin's whole view of dqaudit besides ``config`` and ``errors``
(tests/test_layers.py checks that the plugin imports nothing else).
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pandas as pd

from dqaudit.api import Audit
from dqaudit.config import AuditConfig
from dqaudit.errors import DqauditError
from dqaudit.estimates.clr import MODES, ClrConfig
from dqaudit.estimates.headline import SMALL_AUDIT_SAMPLES, headline
from dqaudit.io.fiftyone_io import audited_paths, import_fiftyone, is_detections_field, root_dataset
from dqaudit.io.fiftyone_runs import INFO_KEY, OBJECT_ID, OBJECTS_VIEW, SUSPECTS_VIEW, RunNames
from dqaudit.io.ingest import load_fiftyone
from dqaudit.io.reading import DEFAULT_LABEL_FIELD
from dqaudit.io.store import REPORT_HTML, REPORT_PDF
from dqaudit.workflows.relabel import EMPTY_SET

__all__ = [  # the services, and the names the plugin's forms and messages use
    "audit_target", "audit_fiftyone", "form_config", "default_out_dir", "export_report",
    "estimate_clr_for", "audited_label_field", "draw_verification_for", "verify_selected",
    "selected_objects", "mark_reviewed", "apply_label", "headline", "RunNames",
    "SMALL_AUDIT_SAMPLES", "MODES", "OBJECTS_VIEW", "SUSPECTS_VIEW", "DEFAULT_LABEL_FIELD",
]


TARGETS = ("dataset", "view", "saved_view")  # what the App's audit runs on; the first is default


def audit_target(dataset, view=None, *, target: str = "dataset", saved_view: str | None = None,
                 run: str | None = None):
    """(the samples to audit, the run name their results go under).

    ``dataset``: every sample, results as the dataset's own (run None). ``view``: the App's
    current ``view``; ``saved_view``: the saved view of that name. Part of a dataset is a
    sub-audit named ``run`` (default: the saved view's name, or "view"), written under its
    own fields and views (``fiftyone_runs.RunNames``); a view holding every sample is the
    dataset."""
    if target not in TARGETS:
        raise DqauditError(f"unknown audit target {target!r}; choose one of {', '.join(TARGETS)}")
    if target == "dataset":
        return dataset, None
    if target == "saved_view":
        if not saved_view or not dataset.has_saved_view(saved_view):
            raise DqauditError(f"dataset {dataset.name!r} has no saved view {saved_view!r}; "
                               f"saved views: {', '.join(dataset.list_saved_views()) or 'none'}")
        view = dataset.load_saved_view(saved_view)
        default_run = RunNames.for_view(saved_view).run
    else:
        view = dataset if view is None else view
        default_run = "view"
    if len(view) == len(dataset):  # every sample: the dataset's own audit
        return dataset, None
    return view, RunNames(run or default_run).run


def audit_fiftyone(view, *, label_field: str = DEFAULT_LABEL_FIELD, out_dir=None,
                   config: AuditConfig | None = None, run: str | None = None,
                   **options) -> Audit:
    """Run the audit on a FiftyOne dataset or view and write the results back to it, under
    run name ``run`` (None: the dataset's own results; see ``audit_target``)."""
    config = config or AuditConfig()
    config = replace(config, input=replace(config.input, from_fiftyone=True,
                                           label_field=label_field))
    c = config.input
    data = load_fiftyone(root_dataset(view).name, label_field=c.label_field, view=view,
                         pred_field=c.pred_field, box_margin=c.box_margin,
                         min_box_side=c.min_box_side, cache_dir=config.embed.cache_dir,
                         classes=c.classes, multi_label=c.multi_label)
    # the audit writes the results back to the dataset the samples came from: once
    return Audit.scan(data, out_dir=out_dir, config=config, fiftyone_run=run, **options)


def form_config(params: dict) -> AuditConfig:
    """The ``AuditConfig`` of the App's audit form; fields left empty keep their defaults."""
    base = AuditConfig()
    clr = replace(base.clr, repeats=int(params["clr_repeats"])) if params.get("clr_repeats") \
        else base.clr
    return replace(
        base, device=params.get("device") or base.device,
        embed=replace(base.embed, model=params.get("model") or base.embed.model),
        clr=clr if params.get("clr", True) else None,
        report=replace(base.report, pdf=bool(params.get("pdf", base.report.pdf))))


def default_out_dir(dataset_name: str, run: str | None = None):
    """``~/.dqaudit/audits/<dataset>``, or ``<dataset>--<run>`` for a sub-audit."""
    return Path.home() / ".dqaudit" / "audits" / (
        dataset_name if run is None else f"{dataset_name}--{run}")


def export_report(dataset, path, *, pdf: bool = True) -> dict:
    """Render the report of the dataset's last audit into folder ``path``."""
    audit = Audit.load(_run_dir(dataset))
    paths = audit.render_report(replace(audit.config.report, pdf=pdf))
    target = Path(path).expanduser()
    target.mkdir(parents=True, exist_ok=True)
    out = {}
    for key, name in (("html", REPORT_HTML), ("pdf", REPORT_PDF)):
        if key in paths:
            shutil.copyfile(paths[key], target / name)
            out[key] = str(target / name)
    return out


def estimate_clr_for(dataset, params: dict) -> dict:
    """Re-run CLR injection on the dataset's last audit (its saved outputs) with its config and
    the form's ``repeats`` and ``mode`` when given; the audit's ``finish`` records it in the
    FiftyOne run."""
    audit = Audit.load(_run_dir(dataset))
    given = {k: v for k, v in (("repeats", params.get("repeats")),
                               ("mode", params.get("mode"))) if v}
    config = replace(audit.config.clr or ClrConfig(),
                     **{k: int(v) if k == "repeats" else v for k, v in given.items()})
    return audit.estimate_clr(config)


def audited_label_field(dataset) -> str:
    """The label field the dataset's last audit read (its run info), which the review
    operators correct: an audit of another field than ``ground_truth`` is reviewed in its own
    field. Datasets audited before the field was recorded: ``ground_truth``."""
    return (dataset.info.get(INFO_KEY) or {}).get("label_field") or DEFAULT_LABEL_FIELD


def _run_dir(dataset) -> str:
    """The audit folder of the dataset's last run; an error naming the fix when it has none."""
    run = dataset.info.get(INFO_KEY) or {}
    if not run.get("out_dir"):
        raise DqauditError(f"dataset {dataset.name!r} has no dqaudit run with saved outputs; "
                           "run the audit first")
    return run["out_dir"]


def draw_verification_for(dataset, *, size: int) -> dict:
    """Draw (or grow) the verification sample of the dataset's last audit; tags ``dq_verify``."""
    return Audit.load(_run_dir(dataset)).draw_verification_sample(size=size)


def verify_selected(dataset, sample_ids: list[str], label: str | None, *,
                    annotator: str | None = None, object_ids: list[str] | None = None,
                    label_field: str | None = None) -> dict:
    """Record that the selected samples' correct label is ``label`` (None: the given label is
    right), then estimate once every stratum has a verified sample (``verify.record_verified``).
    Samples are matched to the audit's verification sample by file path; ``object_ids`` (an
    object audit: the selected boxes' Detection ids) by the boxes' audit ids."""
    label_field = label_field or audited_label_field(dataset)
    audit = Audit.load(_run_dir(dataset))
    sample = audit.verify_sample
    if sample is None:
        raise DqauditError("no verification sample yet: run 'dqaudit: draw verification "
                           "sample' first")
    if object_ids:
        given = dict(zip(sample["id"], sample["given_label"]))
        ids = [i for i in _audit_ids(dataset, object_ids, label_field=label_field)
               if i in given]
        rows = [(i, label or given[i]) for i in ids]
    else:
        by_path = dict(zip(sample["path"], zip(sample["id"], sample["given_label"])))
        paths = audited_paths(dataset.select(sample_ids)) if sample_ids else []
        rows = [(by_path[p][0], label or by_path[p][1]) for p in paths if p in by_path]
    if not rows:
        raise DqauditError("none of the selected samples is in the verification sample "
                           "(saved view dq_verify)")
    return audit.record_verified(pd.DataFrame(rows, columns=["id", "verified_label"]),
                                 annotator=annotator)


def selected_objects(view, selected: list[str], selected_labels: list[dict], *,
                     label_field: str) -> list[str]:
    """The Detection ids the reviewer picked in the App: labels selected on a sample, and the
    patches selected in a patches view (``dq_suspect_objects``)."""
    fo = import_fiftyone()
    if not is_detections_field(fo, root_dataset(view).get_field_schema(), label_field):
        return []  # an image audit reviews samples
    ids = [d["label_id"] for d in selected_labels or [] if d.get("field") in (None, label_field)]
    field = view.get_field(label_field) if selected else None
    if field is not None and issubclass(getattr(field, "document_type", type(None)),
                                        fo.Detection):
        ids += [i for i in view.select(selected).values(f"{label_field}.id") if i]
    return list(dict.fromkeys(ids))


def _audit_ids(dataset, object_ids: list[str], *, label_field: str) -> list[str]:
    """The audit's ids of these Detections: boxes dqaudit wrote from a COCO or YOLO file carry
    theirs (``dq_object_id``); FiftyOne's own boxes are audited under their Detection id."""
    picked = dataset.select_labels(ids=list(object_ids), fields=label_field)  # these boxes only
    det_ids = picked.values(f"{label_field}.detections.id", unwind=True)
    audit_ids = picked.values(f"{label_field}.detections.{OBJECT_ID}", unwind=True) \
        if dataset.get_field(f"{label_field}.detections.{OBJECT_ID}") is not None else det_ids
    to_audit = {d: (a or d) for d, a in zip(det_ids, audit_ids)}
    return [to_audit.get(o, o) for o in object_ids]


def _annotate_objects(dataset, object_ids: list[str], labels: list[str] | None, *,
                      annotator: str | None, label_field: str) -> pd.DataFrame:
    """``_annotate`` for an object audit: one annotation per selected box (Detection ids),
    then the boxes' labels set to what the ledger now gives them, ``dq_reviewed`` on each."""
    out = Path(_run_dir(dataset))
    audit = Audit.load(out)
    known = set(audit.samples["id"])
    ids = _audit_ids(dataset, object_ids, label_field=label_field)
    outside = [o for o in ids if o not in known]
    if outside:
        raise DqauditError(f"{len(outside)} selected boxes are not in the last audit (first: "
                           f"{outside[0]}); select boxes of the audited field {label_field!r}")
    before = audit.samples.set_index("id")
    given = [str(before.at[i, "label"]) for i in ids]
    audit.apply_corrections(pd.DataFrame({"id": ids, "label": labels or given}),
                            annotator=annotator or "FiftyOne App")
    now = audit.samples.set_index("id")
    dataset.set_label_values(f"{label_field}.detections.label",
                             {d: str(now.at[i, "label"]) for d, i in zip(object_ids, ids)})
    dataset.set_label_values(f"{label_field}.detections.dq_reviewed",
                             dict.fromkeys(object_ids, True), dynamic=True)
    dataset.set_label_values(f"{label_field}.detections.dq_previous_label",
                             dict(zip(object_ids, given)), dynamic=True)
    return pd.DataFrame({"id": ids, "given": given})


def _annotate(dataset, sample_ids: list[str], labels: list[str] | None, *,
              annotator: str | None, label_field: str) -> pd.DataFrame:
    """Record one annotation per selected sample in the audit's corrections ledger (the one
    ``dqaudit relabel apply`` keeps; ``labels`` None: the given label is confirmed), re-rank,
    and set ``label_field`` of the samples to the label the ledger now gives them."""
    out = Path(_run_dir(dataset))
    view = dataset.select(sample_ids)
    paths = audited_paths(view)
    audit = Audit.load(out)
    samples = audit.samples.set_index("path")
    outside = [p for p in paths if p not in samples.index]
    if outside:
        raise DqauditError(f"{len(outside)} selected samples are not in the last audit (first: "
                           f"{outside[0]}); select samples of the audited view")
    sets = audit.dataset.multi_label  # a set's label is its text, a;b ("(none)": empty)
    given = [str(samples.at[p, "label"]) or (EMPTY_SET if sets else "") for p in paths]
    audit.apply_corrections(pd.DataFrame({"path": paths, "label": labels or given}),
                            annotator=annotator or "FiftyOne App")
    now = audit.samples.set_index("path")
    fo = import_fiftyone()
    view.set_values(label_field, [fo.Classifications(classifications=[
        fo.Classification(label=c) for c in str(now.at[p, "label"]).split(";") if c])
        if sets else fo.Classification(label=str(now.at[p, "label"])) for p in paths])
    view.set_values("dq_reviewed", [True] * len(paths))
    view.tag_samples("dq_reviewed")
    return pd.DataFrame({"path": paths, "given": given})


def mark_reviewed(dataset, sample_ids: list[str], *, annotator: str | None = None,
                  label_field: str | None = None, object_ids: list[str] | None = None
                  ) -> int:
    """The reviewer confirms the selected samples' given labels: one annotation each in the
    corrections ledger, then ``dq_reviewed`` and the tag ``dq_reviewed``. ``object_ids``
    (an object audit: the selected boxes' Detection ids) are confirmed instead.
    ``label_field``: default the audited one (``audited_label_field``)."""
    label_field = label_field or audited_label_field(dataset)
    if object_ids:
        return len(_annotate_objects(dataset, object_ids, None, annotator=annotator,
                                     label_field=label_field))
    if not sample_ids:
        return 0
    return len(_annotate(dataset, sample_ids, None, annotator=annotator,
                         label_field=label_field))


def apply_label(dataset, sample_ids: list[str], label: str, *,
                label_field: str | None = None, annotator: str | None = None,
                object_ids: list[str] | None = None) -> int:
    """A reviewer's corrected label for the selected samples, through the audit's corrections
    ledger (as ``dqaudit relabel apply``: the label becomes the majority of the annotations,
    ties to the newest); the label before is kept in ``dq_previous_label``. Marks them
    reviewed. The image files are never touched. ``object_ids`` (an object audit: the
    selected boxes' Detection ids) are relabelled instead, on the boxes."""
    label_field = label_field or audited_label_field(dataset)
    if not label or not str(label).strip():
        raise DqauditError("the corrected label is empty")
    if object_ids:
        return len(_annotate_objects(dataset, object_ids, [str(label).strip()] * len(
            object_ids), annotator=annotator, label_field=label_field))
    if not sample_ids:
        return 0
    done = _annotate(dataset, sample_ids, [str(label).strip()] * len(sample_ids),
                     annotator=annotator, label_field=label_field)
    dataset.select(sample_ids).set_values("dq_previous_label", done["given"].tolist())
    return len(done)
