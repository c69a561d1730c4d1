"""FiftyOne: read labeled datasets (and views) from it (``fiftyone_results`` writes an audit
back, ``fiftyone_runs`` names and records its runs).

FiftyOne is imported inside the functions. ``import_fiftyone`` sets ``FIFTYONE_DO_NOT_TRACK``
first unless the user already chose a value: dqaudit never phones home.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dqaudit.dataset import SPLIT_NAMES, LabeledImages, first_classes, one_hot
from dqaudit.errors import InputError
from dqaudit.files import cheap_file_problem, normal_text, printable
from dqaudit.imaging.boxes import BOX_COLUMNS, MATCH_IOU, MISSING_CONFIDENCE, match_predictions
from dqaudit.io.reading import DEFAULT_LABEL_FIELD, import_fiftyone
from dqaudit.io.set_names import sets_of_names

SOURCE_PATH = "dq_source_path"  # the DICOM file a rendering shows




def _view_of(fo, name: str, view):
    """``view``, or the dataset ``name`` (an error naming the fix when there is none)."""
    if view is not None:
        return view
    if not fo.dataset_exists(name):
        known = ", ".join(fo.list_datasets()[:10]) or "none"
        raise InputError(f"FiftyOne dataset {name!r} does not exist (datasets: {known}); "
                         "check the name with `fiftyone datasets list`")
    return fo.load_dataset(name)


def load_fiftyone_dataset(name: str, *, label_field: str = DEFAULT_LABEL_FIELD, view=None,
                          classes: tuple[str, ...] | None = None, multi_label: bool = False):
    """A FiftyOne dataset (or ``view`` of it) with a ``Classification`` field -> LabeledImages;
    a ``Classifications`` field gives label sets (``load_fiftyone_sets``; ``classes``: the
    known classes, as ``--classes``; ``multi_label``: sets asked for, so a ``Classification``
    field is an error).

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
    if getattr(schema[label_field], "document_type", None) is fo.Classifications:
        return load_fiftyone_sets(view, dataset.name, label_field=label_field, classes=classes)
    if classes or multi_label:
        raise InputError(f"FiftyOne field {label_field!r} gives each sample one label; label "
                         "sets (--multi-label, --classes) are read from a Classifications "
                         "field: name one with --label-field, or drop those options")
    ids, filepaths, labels, tags = view.values(["id", "filepath", f"{label_field}.label", "tags"])
    if not ids:
        raise InputError(f"FiftyOne dataset {name!r} (or its view) has no samples")
    keep, skipped = _auditable(filepaths, [lab is not None and str(lab) != "" for lab in labels],
                               missing=f"no label in field {label_field!r}")
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


def _auditable(filepaths: list[str], answered: list[bool], *, missing: str
               ) -> tuple[list[int], list[dict]]:
    """(the indices of the samples with an answer whose file shows no cheap problem, the
    others as rows of ``skipped``: ``missing`` where there is no answer)."""
    keep, skipped = [], []
    for i, (fp, ok) in enumerate(zip(filepaths, answered)):
        reason = cheap_file_problem(Path(fp)) if ok else missing
        if reason:
            skipped.append({"path": fp, "reason": reason})
        else:
            keep.append(i)
    return keep, skipped


def load_fiftyone_sets(view, name: str, *, label_field: str,
                       classes: tuple[str, ...] | None) -> LabeledImages:
    """The label sets of a ``Classifications`` field -> a multi-label ``LabeledImages``.

    A sample whose field holds an empty ``Classifications`` has the empty set (a valid set); a
    sample without the field (None) has no answer and is listed in ``skipped``. A class named
    twice in one sample counts once (the source says how many samples did). With ``classes``,
    a set naming another class is an error; without, the classes are those the sets name.
    """
    ids, filepaths, labels, tags = view.values(
        ["id", "filepath", f"{label_field}.classifications.label", "tags"])
    if not ids:
        raise InputError(f"FiftyOne dataset {name!r} (or its view) has no samples")
    known = [normal_text(c) for c in classes] if classes else None
    keep, skipped = _auditable(filepaths, [m is not None for m in labels],
                               missing=f"no label set in field {label_field!r}")
    parsed, duplicated = [], 0
    for i in keep:
        names = [normal_text(str(m)) for m in labels[i] if m is not None and str(m).strip()]
        duplicated += len(names) != len(set(names))
        parsed.append(set(names))
    if not keep:
        raise InputError(f"FiftyOne dataset {name!r}: no sample has a label set in field "
                         f"{label_field!r}")
    names, sets = sets_of_names(parsed, known, fix="the label",
                                where=lambda r: f"FiftyOne sample {ids[keep[r]]} ({label_field!r})")
    if not names:
        raise InputError(f"FiftyOne dataset {name!r}: field {label_field!r} names no class")
    read = (f"FiftyOne field {label_field!r} (Classifications) as label sets"
            + (f"; {duplicated} samples name a class twice (counted once)" if duplicated else ""))
    return LabeledImages(
        paths=[filepaths[i] for i in keep], labels=first_classes(sets), classes=names,
        label_counts=sets.astype(np.float32), multi_label=True,
        splits=np.array([_split_of(tags[i]) for i in keep], dtype=object),
        ids=[ids[i] for i in keep],
        source={"kind": "fiftyone", "location": name, "label_field": label_field,
                "view": None if view is root_dataset(view) else view_description(view),
                "multi_label": True, "duplicate_classes_in_cells": duplicated,
                "read_as": read},
        skipped=skipped)


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










def audited_paths(view) -> list[str]:
    """The audit's path of each sample of ``view``: its file, or for a DICOM file shown as a
    rendering (``viewable_paths``) the DICOM file's own path."""
    paths = view.values("filepath")
    if not view.has_sample_field(SOURCE_PATH):
        return paths
    return [src or path for path, src in zip(paths, view.values(SOURCE_PATH))]


