"""FiftyOne: read labeled datasets (and views) from it, write audit results back to it.

FiftyOne is imported inside the functions. ``import_fiftyone`` sets ``FIFTYONE_DO_NOT_TRACK``
first unless the user already chose a value: dqaudit never phones home.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dqaudit.imaging.boxes import BOX_COLUMNS, MATCH_IOU, MISSING_CONFIDENCE, match_predictions
from dqaudit.dataset import (SPLIT_NAMES, LabeledImages, cheap_file_problem, file_digest,
                      is_dicom_file, one_hot, printable)
from dqaudit.imaging.dicom import DicomRead
from dqaudit.embed.loader import open_rgb
from dqaudit.errors import DqauditError, InputError
from dqaudit.estimates.headline import headline
from dqaudit.imaging.image_checks import IMAGE_ISSUES
from dqaudit.io.outputs import replacing, review_order_column


DEFAULT_LABEL_FIELD = "ground_truth"  # FiftyOne's own name for a dataset's labels


def import_fiftyone():
    """Import fiftyone with usage tracking off unless the user set FIFTYONE_DO_NOT_TRACK."""
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    import fiftyone as fo

    return fo


def _view_of(fo, name: str, view):
    """``view``, or the dataset ``name`` (an error naming the fix when there is none)."""
    if view is not None:
        return view
    if not fo.dataset_exists(name):
        known = ", ".join(fo.list_datasets()[:10]) or "none"
        raise InputError(f"FiftyOne dataset {name!r} does not exist (datasets: {known}); "
                         "check the name with `fiftyone datasets list`")
    return fo.load_dataset(name)


def load_fiftyone_dataset(name: str, *, label_field: str = DEFAULT_LABEL_FIELD, view=None):
    """A FiftyOne dataset (or ``view`` of it) with a ``Classification`` field -> LabeledImages.

    Sample ids are FiftyOne's, so results can be written back to the same samples. Splits come
    from the tags train/val/test. Samples without a label are listed in ``skipped``.
    """
    fo = import_fiftyone()
    view = _view_of(fo, name, view)
    dataset = root_dataset(view)
    schema = dataset.get_field_schema()
    if label_field not in schema:
        raise InputError(f"FiftyOne dataset {name!r} has no field {label_field!r}; fields are "
                         f"{', '.join(sorted(schema))}; pass --label-field")
    ids, filepaths, labels, tags = view.values(["id", "filepath", f"{label_field}.label", "tags"])
    if not ids:
        raise InputError(f"FiftyOne dataset {name!r} (or its view) has no samples")
    skipped = []
    keep = []
    for i, (fp, lab) in enumerate(zip(filepaths, labels)):
        if lab is None or str(lab) == "":
            skipped.append({"path": fp, "reason": f"no label in field {label_field!r}"})
            continue
        reason = cheap_file_problem(Path(fp))
        if reason:
            skipped.append({"path": fp, "reason": reason})
            continue
        keep.append(i)
    classes = sorted({str(labels[i]) for i in keep})
    if len(classes) < 2:
        raise InputError(f"FiftyOne dataset {name!r}: field {label_field!r} has fewer than two "
                         "classes among its samples; an audit needs at least two")
    index = {c: j for j, c in enumerate(classes)}
    y = np.array([index[str(labels[i])] for i in keep], dtype=np.int64)
    splits = [_split_of(tags[i]) for i in keep]
    return LabeledImages(
        paths=[filepaths[i] for i in keep],
        labels=y,
        classes=classes,
        label_counts=one_hot(y, len(classes)),
        splits=np.array(splits, dtype=object),
        ids=[ids[i] for i in keep],
        source={"kind": "fiftyone", "location": dataset.name, "label_field": label_field,
                "view": None if view is dataset else view_description(view)},
        skipped=skipped,
    )


def read_predictions_field(name: str, field: str):
    """A ``Classification`` field of model predictions as a table (``path``: the audited file,
    ``predicted``), for ``dqaudit evaluate --pred-field``; samples without a prediction are
    left out (the evaluation says how many it covers)."""
    import pandas as pd

    fo = import_fiftyone()
    dataset = _view_of(fo, name, None)
    schema = dataset.get_field_schema(embedded_doc_type=fo.Classification)
    if field not in schema:
        raise InputError(f"FiftyOne dataset {name!r} has no Classification field {field!r} "
                         f"(its Classification fields: {', '.join(sorted(schema)) or 'none'})")
    paths, labels = dataset.values(["filepath", f"{field}.label"])
    if SOURCE_PATH in dataset.get_field_schema():  # DICOM renderings: the file audited
        paths = [s or p for s, p in zip(dataset.values(SOURCE_PATH), paths)]
    rows = [(p, lab) for p, lab in zip(paths, labels) if lab is not None]
    return pd.DataFrame(rows, columns=["path", "predicted"])


def _split_of(tags) -> str:
    for t in tags or []:
        if t.lower() in SPLIT_NAMES:
            return SPLIT_NAMES[t.lower()]
    return ""


def is_detections_field(fo, schema, name: str) -> bool:
    """Whether field ``name`` of a dataset's ``schema`` holds ``Detections``."""
    field = schema.get(name)
    return isinstance(field, fo.core.fields.EmbeddedDocumentField) and issubclass(
        field.document_type, fo.Detections)


def load_fiftyone_boxes(name: str, *, label_field: str = DEFAULT_LABEL_FIELD, view=None,
                        pred_field: str | None = None):
    """The boxes of a FiftyOne ``Detections`` field as a box table (``dqaudit.io.objects``):
    (table, classes, skipped, source), or None when ``label_field`` is not ``Detections``.

    Object ids are the Detections' ids, image ids the samples'; boxes are FiftyOne's relative
    ``bounding_box``. With ``pred_field`` (a detector's ``Detections``), each image's
    predictions are matched to its boxes (``boxes.match_predictions``): the table gains
    ``possible_spurious`` (a box no prediction matches), the source the ``possible_missing``
    predictions (confidence above ``boxes.MISSING_CONFIDENCE``, matching no box).
    """
    fo = import_fiftyone()
    view = _view_of(fo, name, view)
    dataset = root_dataset(view)
    schema = dataset.get_field_schema()
    if not is_detections_field(fo, schema, label_field):
        return None
    if pred_field and not is_detections_field(fo, schema, pred_field):
        raise InputError(f"--pred-field {pred_field!r}: FiftyOne dataset {name!r} has no "
                         f"Detections field of that name; fields are {', '.join(sorted(schema))}")
    fields = ["id", "filepath", "tags", f"{label_field}.detections"] + (
        [f"{pred_field}.detections"] if pred_field else [])
    values = view.values(fields)
    rows, skipped, spurious, missing, n_pred = [], [], [], [], 0
    for k, (sid, fp, tags, dets) in enumerate(zip(*values[:4])):
        reason = cheap_file_problem(Path(fp))
        if reason:
            skipped.append({"path": fp, "reason": reason})
            continue
        split = _split_of(tags)
        good = []
        for det in dets or []:
            if det.label is None or str(det.label) == "":
                skipped.append({"path": f"{fp} box {det.id}",
                                "reason": f"no label on the box in field {label_field!r}"})
                continue
            box = list(det.bounding_box or [np.nan] * 4)
            rows.append((fp, sid, det.id, str(det.label), split, *box, np.nan, np.nan))
            good.append(det)
        if not pred_field:
            continue
        preds = [p for p in (values[4][k] or []) if p.bounding_box is not None]
        n_pred += len(preds)
        g_hit, p_hit = match_predictions(
            np.array([d.bounding_box for d in good], dtype=np.float64).reshape(-1, 4),
            [d.label for d in good],
            np.array([p.bounding_box for p in preds], dtype=np.float64).reshape(-1, 4),
            [p.label for p in preds], [p.confidence or 0.0 for p in preds])
        spurious.extend(~g_hit)
        for p, hit in zip(preds, p_hit):
            if not hit and (p.confidence or 0.0) > MISSING_CONFIDENCE:
                missing.append({"image_id": sid, "image_path": printable(fp),
                                "prediction_id": p.id, "label": str(p.label),
                                "confidence": float(p.confidence),
                                "box": [float(v) for v in p.bounding_box]})
    if not rows:
        raise InputError(f"FiftyOne dataset {name!r}: field {label_field!r} holds no labeled "
                         "boxes")
    table = pd.DataFrame(rows, columns=list(BOX_COLUMNS))
    if pred_field:
        table["possible_spurious"] = np.array(spurious, dtype=bool)
    classes = sorted(set(table["label"]))
    if len(classes) < 2:
        raise InputError(f"FiftyOne dataset {name!r}: field {label_field!r} has fewer than two "
                         "classes among its boxes; an audit needs at least two")
    source = {"kind": "fiftyone", "location": dataset.name, "label_field": label_field,
              "view": None if view is dataset else view_description(view), "relative": True}
    if pred_field:
        source["predictions"] = {"field": pred_field, "n_predictions": n_pred,
                                 "match_iou": MATCH_IOU,
                                 "missing_confidence": MISSING_CONFIDENCE,
                                 "possible_missing": missing,
                                 "possible_spurious": int(np.sum(spurious))}
    return table, classes, skipped, source


def root_dataset(view):
    """The dataset a view (or the dataset itself) belongs to, through public API."""
    fo = import_fiftyone()
    return view if isinstance(view, fo.Dataset) else fo.load_dataset(view.dataset_name)


def view_description(view) -> list[str]:
    """A view's stages as text (its saved name first when it has one), from its public
    ``repr``: the record of which samples an audit of a view saw."""
    text = repr(view)
    stages = text.split("View stages:", 1)[1] if "View stages:" in text else ""
    lines = [line.strip() for line in stages.splitlines() if line.strip()]
    name = getattr(view, "name", None)
    return ([f"saved view {name!r}"] if name else []) + lines


# --------------------------------------------------------------------------- writing results

SUSPECTS_VIEW = "dq_suspects"
AMBIGUOUS_VIEW = "dq_ambiguous"
INFO_KEY = "dqaudit"
RUN_KEY = "dqaudit"  # the dataset's run record (dataset.list_runs(), dataset.delete_run())
IMAGES_VIEW = "dq_image_issues"
IMAGE_FIELDS = tuple(f"dq_{k}_score" for k in IMAGE_ISSUES)
FIELDS = ("dq_noisiness", "dq_ambiguity", "dq_priority", "dq_review_score", "dq_importance",
          "dq_label_error_probability", "dq_suggested", "dq_outlier", "dq_dup_group",
          "dq_exact_dup_group", "dq_issues", "dq_flagged", "dq_embedding", *IMAGE_FIELDS)
RUN_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


@dataclass(frozen=True)
class RunNames:
    """Where one audit's results live in a FiftyOne dataset.

    The whole dataset's audit (``run`` None) owns fields ``dq_*`` (``FIELDS``), saved views
    ``dq_suspects`` and ``dq_ambiguous``, ``dataset.info["dqaudit"]`` and run record
    ``dqaudit``. The audit of part of it, named ``run`` (a view, a split), owns
    ``dq_<run>_*``, views ``dq_<run>_suspects`` and ``dq_<run>_ambiguous``, info and run key
    ``dqaudit_<run>``: a sub-audit never overwrites the whole dataset's results.
    """

    run: str | None = None

    def __post_init__(self):
        if self.run is not None and not RUN_NAME.fullmatch(self.run):
            raise InputError(f"run name {self.run!r}: use 1-40 lower-case letters, digits or _, "
                             "starting with a letter (e.g. test_split)")

    @classmethod
    def for_view(cls, name: str) -> RunNames:
        """The run name a view called ``name`` gets ("Test split" -> "test_split")."""
        slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:40] or "view"
        return cls(slug if slug[0].isalpha() else f"v_{slug}"[:40])

    @property
    def key(self) -> str:
        return RUN_KEY if self.run is None else f"{RUN_KEY}_{self.run}"

    def field(self, name: str) -> str:
        """``dq_noisiness`` as this run names it."""
        return name if self.run is None else f"dq_{self.run}_{name[3:]}"

    @property
    def suspects(self) -> str:
        return self.field(SUSPECTS_VIEW)

    @property
    def ambiguous(self) -> str:
        return self.field(AMBIGUOUS_VIEW)

    @property
    def images(self) -> str:
        return self.field(IMAGES_VIEW)

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.field(f) for f in FIELDS)


DICOM_RENDERINGS = "dicom_png"  # an audit folder's PNGs of its DICOM files, for the App
SOURCE_PATH = "dq_source_path"  # the DICOM file a rendering shows


def viewable_paths(paths: list[str], *, out_dir, dicom: DicomRead,
                   digests: list[str] | None = None) -> tuple[list[str], list[str | None]]:
    """The file FiftyOne shows for each sample, and the DICOM file it renders (None for the
    others). The App cannot show DICOM: each DICOM file is written once as the picture the audit
    saw (its window and frame), ``<out_dir>/dicom_png/<digest>-<settings>.png``, never beside
    the input; other files are shown as they are."""
    shown, sources = [], []
    for i, path in enumerate(paths):
        if not is_dicom_file(path):
            shown.append(path)
            sources.append(None)
            continue
        if out_dir is None:
            raise DqauditError("an audit of DICOM files goes into FiftyOne with its audit folder "
                               "(the App shows PNG renderings written there): give --out")
        digest = digests[i] if digests else file_digest(path)
        settings = re.sub(r"[^0-9A-Za-z.-]+", "_", dicom.key())
        target = Path(out_dir) / DICOM_RENDERINGS / f"{digest}-{settings}.png"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with replacing(target) as tmp:
                open_rgb(path, dicom).save(tmp, format="PNG")
        shown.append(str(target))
        sources.append(path)
    return shown, sources


def _target_dataset(fo, name: str, data, label_field: str, *, out_dir=None,
                    dicom: DicomRead | None = None):
    """The FiftyOne dataset to write to, and the sample id of every audited sample.

    Samples that came from this same FiftyOne dataset keep their ids; otherwise samples are
    matched by file path (a DICOM file's: its rendering, ``viewable_paths``), and missing ones
    are added with their label and split tag (and a DICOM file's own path in
    ``dq_source_path``).
    """
    source = data.source or {}
    if source.get("kind") == "fiftyone" and source.get("location") == name:
        return fo.load_dataset(name), list(data.ids)
    if fo.dataset_exists(name):
        dataset = fo.load_dataset(name)
    else:
        dataset = fo.Dataset(name, persistent=True)
    existing = dict(zip(*dataset.values(["filepath", "id"]))) if len(dataset) else {}
    new = []
    shown, sources = viewable_paths(data.paths, out_dir=out_dir, digests=data.digests,
                                    dicom=dicom or DicomRead.of({}))
    paths = [printable(p) for p in shown]  # FiftyOne stores UTF-8 text
    for path, original, label, split in zip(paths, sources, data.labels, data.splits):
        if path not in existing:
            sample = fo.Sample(filepath=path, tags=[split] if split else [])
            if original is not None:
                sample[SOURCE_PATH] = printable(original)
            sample[label_field] = fo.Classification(label=data.classes[int(label)])
            new.append(sample)
    if new:
        for sample_id, sample in zip(dataset.add_samples(new, progress=False), new):
            existing[sample.filepath] = sample_id
    ids = [existing[p] for p in paths]
    # the audited labels are the truth of record: keep the dataset's field in step with them
    dataset.set_values(label_field, {i: fo.Classification(label=data.classes[int(lab)])
                                     for i, lab in zip(ids, data.labels)}, key_field="id")
    return dataset, ids


def write_results(result, name: str, *, label_field: str = DEFAULT_LABEL_FIELD,
                  embeddings: bool = True, run: str | None = None) -> dict:
    """Write an audit (``dqaudit.api.Audit``: its dataset, samples, embeddings, summary) into
    FiftyOne dataset ``name`` (created if needed), under ``RunNames(run)``.

    Its fields are replaced as a whole (a re-run never leaves stale values), written in bulk
    with ``set_values``; saved views of suspects (flagged, in review order: highest review
    score first, as ``dqaudit relabel queue``) and of ambiguous samples; the run's parameters
    and headline numbers in ``dataset.info[key]``; the run record with its config
    (``dataset.get_run_info(key)``; ``list_results``, ``delete_results``).
    """
    fo = import_fiftyone()
    from fiftyone import ViewField as F

    names = RunNames(run)
    data, samples = result.dataset, result.samples
    if data.unit == "object":
        return _write_object_results(fo, result, name, label_field=label_field, names=names)
    embed = result.config.embed
    dataset, ids = _target_dataset(fo, name, data, label_field, out_dir=result.out_dir,
                                   dicom=DicomRead.of(embed))
    for fname in names.fields:
        if dataset.has_sample_field(fname):
            dataset.delete_sample_field(fname)

    columns = {
        "dq_noisiness": samples["noisiness"].astype(float).tolist(),
        "dq_ambiguity": samples["ambiguity"].astype(float).tolist(),
        "dq_priority": samples["priority"].astype(float).tolist(),
        "dq_importance": samples["importance"].astype(float).tolist(),
        "dq_outlier": samples["outlier_score"].astype(float).tolist(),
        "dq_dup_group": [int(g) if g >= 0 else None for g in samples["dup_group"]],
        "dq_issues": [list(v) for v in samples["issues"]],
        "dq_flagged": samples["flagged"].astype(bool).tolist(),
        "dq_suggested": [fo.Classification(label=str(lab), confidence=float(conf))
                         for lab, conf in zip(samples["suggested_label"],
                                              samples["suggested_confidence"])],
    }
    order = names.field("dq_" + review_order_column(samples))  # priority in older audits
    if "given_label_disagreement" in samples.columns:  # calibrated (audits from 2026-12 on)
        columns["dq_label_error_probability"] = samples["label_error_probability"].astype(
            float).tolist()
    if "review_score" in samples.columns:
        columns["dq_review_score"] = samples["review_score"].astype(float).tolist()
    if embeddings:
        columns["dq_embedding"] = [np.asarray(v, dtype=np.float32) for v in result.embeddings]
    if "exact_dup_group" in samples.columns:  # audits from 2026-12-03 on: the image checks
        columns["dq_exact_dup_group"] = [int(g) if g >= 0 else None
                                         for g in samples["exact_dup_group"]]
        for issue, fname in zip(IMAGE_ISSUES, IMAGE_FIELDS):
            columns[fname] = [None if np.isnan(v) else float(v)
                              for v in samples[f"{issue}_score"].astype(float)]
    _write_columns(fo, dataset, ids, columns, names)

    # review scores tie (a mean of two ranks); the queue and the report keep the samples' row
    # order among ties, which is the order the samples were added here: ``_id`` ascending
    flagged, issues = names.field("dq_flagged"), names.field("dq_issues")
    what = "" if run is None else f" of run {run!r}"
    dataset.save_view(names.suspects, dataset.match(F(flagged) == True)  # noqa: E712
                      .sort_by([(order, -1), ("_id", 1)]), overwrite=True,
                      description=f"dqaudit: flagged samples{what} in review order (the order "
                                  "of dqaudit relabel queue)")
    dataset.save_view(names.ambiguous, dataset.match(F(issues).contains("ambiguous"))
                      .sort_by(names.field("dq_ambiguity"), reverse=True), overwrite=True,
                      description=f"dqaudit: ambiguous samples{what}, most ambiguous first")
    dataset.save_view(names.images, dataset.match(
        F(issues).contains(["exact_duplicate", *IMAGE_ISSUES], all=False)), overwrite=True,
        description=f"dqaudit: image issues{what} (blank, dark, bright, blurry, "
                    "low-information, grayscale, odd size, exact duplicates)")
    views = [names.suspects, names.ambiguous, names.images]
    fields = [names.field(f) for f in FIELDS if f in columns]
    _record_run(dataset, result, names, label_field=label_field, fields=fields, views=views)
    return {"dataset": dataset.name, "n_samples": len(ids), "views": views, "run": run}


def _record_run(dataset, result, names: RunNames, *, label_field: str, fields: list[str],
                views: list[str]) -> None:
    """The run's parameters and headline numbers in ``dataset.info[key]``, and the run record
    with its config (``dataset.get_run_info(key)``; ``list_results``, ``delete_results``)."""
    s = result.summary
    run = names.run
    dataset.info[names.key] = {
        "version": s["dqaudit_version"], "created_at": s["created_at"], "command": s["command"],
        "out_dir": str(result.out_dir) if result.out_dir else None, "run": run,
        "model": s["model"], "seed": s["seed"], "label_field": label_field,
        "n_samples": s["n_samples"], "label_error_count": s["label_error_count"],
        "confident_joint_rate": s.get("confident_joint_rate"),
        "flagged_count": s["flagged_count"],
        "clr": {k: s["clr"][k] for k in ("estimate", "ci_low", "ci_high", "method")}
        if (s.get("clr") or {}).get("method") else None,
        "headline": headline(s), "fields": fields, "views": views,
        # dqaudit evaluate: each model's accuracy on the given labels and corrected
        "evaluation": None if not s.get("evaluation") else {
            "split": s["evaluation"]["split"],
            "models": [{"name": m["name"], "observed_accuracy": m["observed_accuracy"],
                        **{k: m["accuracy"][k] for k in ("estimate", "ci_low", "ci_high",
                                                         "method")}}
                       for m in s["evaluation"]["models"]]},
    }
    dataset.save()
    # the run, recorded with its config as FiftyOne's brain records its runs: listed by
    # dataset.list_runs(), removed (fields and views too) by delete_results
    config = dataset.init_run(method="dqaudit", version=s["dqaudit_version"],
                              out_dir=dataset.info[names.key]["out_dir"],
                              label_field=label_field, fields=fields, views=views,
                              run=run, audit_config=s.get("config"))
    dataset.register_run(names.key, config, overwrite=True)


# an object audit's results live on the boxes: attributes of each Detection of the label field
OBJECT_ATTRIBUTES = ("dq_noisiness", "dq_ambiguity", "dq_review_score",
                     "dq_label_error_probability", "dq_suggested", "dq_suggested_confidence",
                     "dq_outlier", "dq_issues", "dq_flagged", "dq_object_id")
OBJECTS_VIEW = "dq_suspect_objects"
OBJECT_ID = "dq_object_id"  # boxes dqaudit itself wrote (from COCO, YOLO) carry their audit id


def _object_values(samples) -> dict[str, list]:
    return {
        "dq_noisiness": samples["noisiness"].astype(float).tolist(),
        "dq_ambiguity": samples["ambiguity"].astype(float).tolist(),
        "dq_review_score": samples["review_score"].astype(float).tolist(),
        "dq_label_error_probability": samples["label_error_probability"].astype(float).tolist(),
        "dq_suggested": samples["suggested_label"].astype(str).tolist(),
        "dq_suggested_confidence": [None if not np.isfinite(v) else float(v)
                                    for v in samples["suggested_confidence"].astype(float)],
        "dq_outlier": samples["outlier_score"].astype(float).tolist(),
        "dq_issues": [list(v) for v in samples["issues"]],
        "dq_flagged": samples["flagged"].astype(bool).tolist(),
        "dq_object_id": samples["id"].astype(str).tolist(),
    }


def _write_object_results(fo, result, name: str, *, label_field: str, names: RunNames) -> dict:
    """An object audit into FiftyOne: each audited box's ``dq_*`` attributes on its Detection
    (``OBJECT_ATTRIBUTES``, under the run's names), a sample field counting its flagged
    boxes, the saved patches view of suspect boxes in review order (``dq_suspect_objects``),
    the saved view of images holding one, and with a detector's predictions
    ``dq_possible_missing`` on the predictions that match no box.

    Boxes that came from this FiftyOne dataset are written in place (by Detection id); boxes
    of a COCO or YOLO file become the label field's Detections of samples matched (or added)
    by file path, each carrying its audit id (``dq_object_id``)."""
    from fiftyone import ViewField as F

    data, samples = result.dataset, result.samples
    source = data.source or {}
    values = _object_values(samples)
    attrs = {a: names.field(a) for a in OBJECT_ATTRIBUTES}
    in_place = source.get("kind") == "fiftyone" and source.get("location") == name
    if in_place:
        dataset = fo.load_dataset(name)
        det_ids = dataset.values(f"{label_field}.detections.id", unwind=True)
        for attr in OBJECT_ATTRIBUTES:
            column = {i: None for i in det_ids}  # a box left out of this audit keeps no value
            column.update(zip(samples["id"].astype(str), values[attr]))
            # dynamic: declared in the schema, so the App's sidebar filters by them
            dataset.set_label_values(f"{label_field}.detections.{attrs[attr]}", column,
                                     dynamic=True)
    else:
        dataset = fo.load_dataset(name) if fo.dataset_exists(name) else fo.Dataset(
            name, persistent=True)
        objects = data.objects
        by_image: dict[str, list] = {}
        for k in range(len(samples)):
            ob = objects.iloc[k]
            w, h = float(ob["image_width"]), float(ob["image_height"])
            det = fo.Detection(label=data.classes[int(data.labels[k])],
                               bounding_box=[ob["box_x"] / w, ob["box_y"] / h,
                                             ob["box_w"] / w, ob["box_h"] / h])
            for attr in OBJECT_ATTRIBUTES:
                det[attrs[attr]] = values[attr][k]
            by_image.setdefault(str(ob["image_path"]), []).append(det)
        existing = dict(zip(*dataset.values(["filepath", "id"]))) if len(dataset) else {}
        new = [fo.Sample(filepath=p) for p in by_image if p not in existing]
        if new:
            for sample_id, sample in zip(dataset.add_samples(new, progress=False), new):
                existing[sample.filepath] = sample_id
        # the audited boxes and labels are the truth of record of this dataset's label field
        dataset.set_values(label_field, {existing[p]: fo.Detections(detections=dets)
                                         for p, dets in by_image.items()}, key_field="id",
                           dynamic=True)
    flagged = F(attrs["dq_flagged"]) == True  # noqa: E712
    count = names.field("dq_flagged_objects")
    dataset.add_sample_field(count, fo.IntField)
    dataset.set_field(count, F(f"{label_field}.detections").filter(flagged).length()).save(count)
    patches = dataset.filter_labels(label_field, flagged).to_patches(label_field)
    dataset.save_view(names.field(OBJECTS_VIEW), patches.sort_by(
        f"{label_field}.{attrs['dq_review_score']}", reverse=True), overwrite=True,
        description="dqaudit: flagged boxes, one patch each, in review order (the order of "
                    "dqaudit relabel queue)")
    dataset.save_view(names.suspects, dataset.match(F(count) > 0).sort_by(count, reverse=True),
                      overwrite=True, description="dqaudit: images holding flagged boxes, "
                                                  "most first")
    views = [names.field(OBJECTS_VIEW), names.suspects]
    pred = source.get("predictions")
    if pred and in_place:
        missing = names.field("dq_possible_missing")
        pred_ids = dataset.values(f"{pred['field']}.detections.id", unwind=True)
        column = dict.fromkeys(pred_ids, False)
        column.update(dict.fromkeys((m["prediction_id"] for m in pred["possible_missing"]), True))
        dataset.set_label_values(f"{pred['field']}.detections.{missing}", column, dynamic=True)
        dataset.save_view(names.field("dq_possible_missing"), dataset.filter_labels(
            pred["field"], F(missing) == True).to_patches(pred["field"]).sort_by(  # noqa: E712
            f"{pred['field']}.confidence", reverse=True), overwrite=True,
            description="dqaudit: confident predictions matching no box (possible missing "
                        "boxes), most confident first")
        views.append(names.field("dq_possible_missing"))
    fields = [f"{label_field}.detections.{a}" for a in attrs.values()] + [count] + (
        [f"{pred['field']}.detections.{names.field('dq_possible_missing')}"]
        if pred and in_place else [])
    _record_run(dataset, result, names, label_field=label_field, fields=fields, views=views)
    return {"dataset": dataset.name, "n_samples": len(samples), "views": views,
            "run": names.run, "unit": "object"}


FIELD_TYPES = {
    "dq_noisiness": ("FloatField", {}), "dq_ambiguity": ("FloatField", {}),
    "dq_priority": ("FloatField", {}), "dq_review_score": ("FloatField", {}),
    "dq_importance": ("FloatField", {}), "dq_label_error_probability": ("FloatField", {}),
    "dq_outlier": ("FloatField", {}), "dq_dup_group": ("IntField", {}),
    "dq_exact_dup_group": ("IntField", {}), **{f: ("FloatField", {}) for f in IMAGE_FIELDS},
    "dq_issues": ("ListField", {"subfield": "StringField"}), "dq_flagged": ("BooleanField", {}),
    "dq_suggested": ("EmbeddedDocumentField", {"embedded_doc_type": "Classification"}),
    "dq_embedding": ("VectorField", {}),
}


def _write_columns(fo, dataset, ids: list[str], columns: dict, names: RunNames) -> None:
    """Write several fields of many samples through FiftyOne's public ``set_values``, one bulk
    write per field, keyed by sample id, under the run's field names. (A private
    one-update-per-sample path was 5x faster, benchmarks/RESULTS.md; dqaudit keeps to the
    public API so a FiftyOne upgrade cannot break the write.)"""
    for name in columns:
        kind, kwargs = FIELD_TYPES[name]
        kwargs = {k: getattr(fo, v) for k, v in kwargs.items()}
        dataset.add_sample_field(names.field(name), getattr(fo, kind), **kwargs)
    for name, values in columns.items():
        dataset.set_values(names.field(name), dict(zip(ids, values)), key_field="id")


def list_results(name: str) -> list[dict]:
    """The dqaudit runs recorded on FiftyOne dataset ``name``: key, time, config."""
    fo = import_fiftyone()
    dataset = fo.load_dataset(name)
    out = []
    for key in dataset.list_runs(method="dqaudit"):
        info = dataset.get_run_info(key)
        out.append({"key": key, "timestamp": str(info.timestamp),
                    "config": info.config.serialize()})
    return out


def delete_results(name: str, *, run: str | None = None) -> dict:
    """Remove what audits wrote into FiftyOne dataset ``name``. ``run`` None: everything, the
    ``dq_*`` fields, saved views and tags, the info entries and run records; labels the App's
    review changed stay changed (``dq_previous_label`` goes with the other fields). ``run``
    given: only that sub-audit's fields, views, info entry and run record (``RunNames``)."""
    fo = import_fiftyone()
    dataset = fo.load_dataset(name)
    names = RunNames(run) if run is not None else None
    runs = dataset.list_runs(method="dqaudit")
    if names is not None:
        if names.key not in runs and names.key not in dataset.info:
            raise InputError(f"dataset {name!r} has no dqaudit run {run!r}; runs: "
                             f"{', '.join(runs) or 'none'}")
        schema = dataset.get_field_schema()
        fields = [f for f in names.fields if f in schema]
        views = [v for v in (names.suspects, names.ambiguous, names.images)
                 if dataset.has_saved_view(v)]
        tags, runs, info_keys = [], [k for k in runs if k == names.key], [names.key]
    else:
        fields = sorted(f for f in dataset.get_field_schema() if f.startswith("dq_"))
        views = sorted(v for v in dataset.list_saved_views() if v.startswith("dq_"))
        tags = [t for t in dataset.distinct("tags") if t.startswith("dq_")]
        info_keys = [k for k in dataset.info if k == INFO_KEY or k.startswith(INFO_KEY + "_")]
    # an object audit's attributes on the boxes (``label_field.detections.dq_*``)
    fields += [f for key in info_keys for f in (dataset.info.get(key) or {}).get("fields", [])
               if "." in f and f not in fields and dataset.get_field(f) is not None]
    for field in fields:
        dataset.delete_sample_field(field)
    for view in views:
        dataset.delete_saved_view(view)
    if tags:
        dataset.untag_samples(tags)
    for key in runs:
        dataset.delete_run(key)
    if any(k in dataset.info for k in info_keys):
        for key in info_keys:
            dataset.info.pop(key, None)
        dataset.save()
    return {"fields": fields, "views": views, "tags": tags, "runs": runs}


def load_view(name: str, *, saved_view: str | None = None):
    """A dataset, or one of its saved views."""
    fo = import_fiftyone()
    if not fo.dataset_exists(name):
        raise InputError(f"FiftyOne dataset {name!r} does not exist; check `fiftyone datasets "
                         "list`")
    dataset = fo.load_dataset(name)
    if saved_view is None:
        return dataset
    if not dataset.has_saved_view(saved_view):
        raise InputError(f"FiftyOne dataset {name!r} has no saved view {saved_view!r}; saved "
                         f"views: {', '.join(dataset.list_saved_views()) or 'none'}")
    return dataset.load_saved_view(saved_view)


def plugin_source():
    """The plugin folder shipped with dqaudit: ``plugins/dqaudit`` of the source tree (editable
    install), else the copy a wheel carries inside the package (``dqaudit/fiftyone_plugin``)."""
    here = Path(__file__).resolve()
    candidates = (here.parents[2] / "plugins" / "dqaudit", here.parents[1] / "fiftyone_plugin")
    for src in candidates:
        if (src / "fiftyone.yml").exists():
            return src
    raise DqauditError(f"plugin files not found in {' or '.join(map(str, candidates))}; "
                       "reinstall dqaudit")


def install_plugin(plugins_dir=None, *, link: bool = False) -> str:
    """Copy (or symlink) the plugin into FiftyOne's plugins directory; returns its path."""
    import shutil

    fo = import_fiftyone()
    src = plugin_source()
    base = Path(plugins_dir or fo.config.plugins_dir or Path.home() / "fiftyone" / "__plugins__")
    target = base / "dqaudit"
    base.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        shutil.rmtree(target)
    if link:
        target.symlink_to(src, target_is_directory=True)
    else:
        shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
    return str(target)


def launch_app(name: str, *, port: int = 5151, view: str | None = SUSPECTS_VIEW,
               address: str = "127.0.0.1", wait: bool = True):
    """Open the App on the dataset's saved view ``view`` (None: the whole dataset), served on
    ``address`` (localhost by default: other machines cannot reach it); returns the session.
    An unknown view is an error that lists the saved views."""
    fo = import_fiftyone()
    shown = load_view(name, saved_view=view)
    session = fo.launch_app(shown, port=port, address=address, remote=True, auto=False)
    if wait:
        session.wait(-1)
    return session


def tag_samples(name: str, filepaths: list[str], tag: str) -> int:
    """Tag the samples of dataset ``name`` with these file paths (e.g. the review queue)."""
    from fiftyone import ViewField as F

    dataset = load_view(name)
    wanted = list(filepaths)
    match = F("filepath").is_in(wanted)
    if dataset.has_sample_field(SOURCE_PATH):  # a DICOM audit: the App shows renderings
        match = match | F(SOURCE_PATH).is_in(wanted)
    view = dataset.match(match)
    view.tag_samples(tag)
    return len(view)


def audited_paths(view) -> list[str]:
    """The audit's path of each sample of ``view``: its file, or for a DICOM file shown as a
    rendering (``viewable_paths``) the DICOM file's own path."""
    paths = view.values("filepath")
    if not view.has_sample_field(SOURCE_PATH):
        return paths
    return [src or path for path, src in zip(paths, view.values(SOURCE_PATH))]


def tag_view(name: str, filepaths: list[str], tag: str, *, view_name: str) -> int:
    """Tag the samples with these file paths and save the view of that tag as ``view_name``
    (the verification sample: ``dq_verify``); the tag is first removed from every other
    sample, so the view is exactly this set."""
    dataset = load_view(name)
    dataset.untag_samples(tag)
    count = tag_samples(name, filepaths, tag)
    dataset.save_view(view_name, dataset.match_tags(tag), overwrite=True,
                      description="dqaudit: the verification sample (dqaudit verify)")
    return count
