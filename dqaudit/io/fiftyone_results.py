"""Writing an audit into FiftyOne: the ``dq_*`` fields of samples (and of boxes, for an object
audit), the saved views, the run record (``fiftyone_runs``), and the tags of the review and
verification samples. Reading FiftyOne is ``fiftyone_io``'s."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from dqaudit.embed.loader import open_rgb
from dqaudit.errors import DqauditError
from dqaudit.files import file_digest, is_dicom_file, printable
from dqaudit.imaging.dicom import DicomRead
from dqaudit.imaging.image_checks import IMAGE_ISSUES
from dqaudit.io.fiftyone_io import SOURCE_PATH, import_fiftyone, load_view
from dqaudit.io.fiftyone_runs import (FIELD_TYPES, FIELDS, IMAGE_FIELDS, OBJECT_ATTRIBUTES,
                                      OBJECTS_VIEW, SET_FIELD_TYPES, RunNames, record_run,
                                      write_columns)
from dqaudit.io.outputs import replacing, review_order_column
from dqaudit.io.reading import DEFAULT_LABEL_FIELD

DICOM_RENDERINGS = "dicom_png"  # an audit folder's PNGs of its DICOM files, for the App




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
                    dicom: DicomRead | None = None, extra=None):
    """The FiftyOne dataset to write to, and the sample id of every audited sample.

    Samples that came from this same FiftyOne dataset keep their ids; otherwise samples are
    matched by file path (a DICOM file's: its rendering, ``viewable_paths``), and missing ones
    are added with their label and split tag (and a DICOM file's own path in
    ``dq_source_path``).
    """
    source = data.source or {}
    if source.get("kind") == "fiftyone" and source.get("location") == name:
        dataset = fo.load_dataset(name)
        if data.multi_label:  # the user's own Classifications: mark the members, keep them
            mark_extra(dataset, list(data.ids), label_field, extra)
        return dataset, list(data.ids)
    if fo.dataset_exists(name):
        dataset = fo.load_dataset(name)
    else:
        dataset = fo.Dataset(name, persistent=True)
    existing = dict(zip(*dataset.values(["filepath", "id"]))) if len(dataset) else {}
    new = []
    shown, sources = viewable_paths(data.paths, out_dir=out_dir, digests=data.digests,
                                    dicom=dicom or DicomRead.of({}))
    paths = [printable(p) for p in shown]  # FiftyOne stores UTF-8 text
    given = label_values(fo, data, extra=extra)
    for path, original, label, split in zip(paths, sources, given, data.splits):
        if path not in existing:
            sample = fo.Sample(filepath=path, tags=[split] if split else [])
            if original is not None:
                sample[SOURCE_PATH] = printable(original)
            sample[label_field] = label
            new.append(sample)
    if new:
        for sample_id, sample in zip(dataset.add_samples(new, progress=False), new):
            existing[sample.filepath] = sample_id
    ids = [existing[p] for p in paths]
    # the audited labels are the truth of record: keep the dataset's field in step with them
    dataset.set_values(label_field, dict(zip(ids, label_values(fo, data, extra=extra))),
                       key_field="id")
    return dataset, ids


def mark_extra(dataset, ids: list[str], label_field: str, extra) -> None:
    """Set ``dq_extra`` on every member of the ``Classifications`` of samples ``ids`` in
    ``label_field`` (True: the audit flags the class as likely not there; ``extra`` (N,) the
    ``;``-joined flagged classes of each sample), leaving the labels as they are."""
    flagged = {sid: set(str(v).split(";")) - {""} for sid, v in zip(ids, extra)}
    view = dataset.select(ids)
    rows = view.values(["id", f"{label_field}.classifications.label"])
    values = [None if labels is None else [lab in flagged[sid] for lab in labels]
              for sid, labels in zip(*rows)]
    view.set_values(f"{label_field}.classifications.dq_extra", values)


def label_values(fo, data, *, extra) -> list:
    """Each sample's audited label as FiftyOne holds it: a ``Classification``, or for label
    sets a ``Classifications`` whose members carry ``dq_extra`` (True: the audit flags the
    class as likely not there; ``extra`` (N,) the ``;``-joined flagged classes)."""
    if not data.multi_label:
        return [fo.Classification(label=data.classes[int(lab)]) for lab in data.labels]
    out = []
    for row, flagged in zip(data.label_sets, extra):
        marked = set(str(flagged).split(";")) - {""}
        out.append(fo.Classifications(classifications=[
            fo.Classification(label=c, dq_extra=c in marked)
            for c, on in zip(data.classes, row) if on]))
    return out


def _set_of(fo, text) -> object:
    """A ``;``-joined set of classes as FiftyOne ``Classifications``."""
    return fo.Classifications(classifications=[fo.Classification(label=c)
                                               for c in str(text).split(";") if c])


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
    sets = data.multi_label
    dataset, ids = _target_dataset(fo, name, data, label_field, out_dir=result.out_dir,
                                   dicom=DicomRead.of(embed),
                                   extra=samples["extra_labels"] if sets else None)
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
                                              samples["suggested_confidence"])]
        if not sets else [_set_of(fo, v) for v in samples["suggested_labels"]],
    }
    if sets:  # the classes the audit finds missing from each set, as their own labels
        columns["dq_missing"] = [_set_of(fo, v) for v in samples["missing_labels"]]
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
    write_columns(fo, dataset, ids, columns, names,
                  types=SET_FIELD_TYPES if sets else FIELD_TYPES)

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
    record_run(dataset, result, names, label_field=label_field, fields=fields, views=views)
    return {"dataset": dataset.name, "n_samples": len(ids), "views": views, "run": run}










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
    record_run(dataset, result, names, label_field=label_field, fields=fields, views=views)
    return {"dataset": dataset.name, "n_samples": len(samples), "views": views,
            "run": names.run, "unit": "object"}










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
