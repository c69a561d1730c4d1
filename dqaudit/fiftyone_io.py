"""FiftyOne: read labeled datasets (and views) from it.

FiftyOne is imported inside the functions. ``import_fiftyone`` sets ``FIFTYONE_DO_NOT_TRACK``
first unless the user already chose a value: dqaudit never phones home.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import InputError


def import_fiftyone():
    """Import fiftyone with usage tracking off unless the user set FIFTYONE_DO_NOT_TRACK."""
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    import fiftyone as fo

    return fo


def load_fiftyone_dataset(name: str, *, label_field: str = "ground_truth", view=None):
    """A FiftyOne dataset (or ``view`` of it) with a ``Classification`` field -> LabeledImages.

    Sample ids are FiftyOne's, so results can be written back to the same samples. Splits come
    from the tags train/val/test. Samples without a label are listed in ``skipped``.
    """
    from .ingest import SPLIT_NAMES, LabeledImages, _cheap_file_problem, _one_hot
    from pathlib import Path

    fo = import_fiftyone()
    if view is None:
        if not fo.dataset_exists(name):
            known = ", ".join(fo.list_datasets()[:10]) or "none"
            raise InputError(f"FiftyOne dataset {name!r} does not exist (datasets: {known}); "
                             "check the name with `fiftyone datasets list`")
        view = fo.load_dataset(name)
    dataset = view._dataset if hasattr(view, "_dataset") else view
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
        reason = _cheap_file_problem(Path(fp))
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
    splits = []
    for i in keep:
        split = ""
        for t in tags[i] or []:
            if t.lower() in SPLIT_NAMES:
                split = SPLIT_NAMES[t.lower()]
                break
        splits.append(split)
    return LabeledImages(
        paths=[filepaths[i] for i in keep],
        labels=y,
        classes=classes,
        label_counts=_one_hot(y, len(classes)),
        splits=np.array(splits, dtype=object),
        ids=[ids[i] for i in keep],
        source={"kind": "fiftyone", "location": name, "label_field": label_field,
                "view": None if view is dataset else str(view._stages) if hasattr(view, "_stages")
                else None},
        skipped=skipped,
    )
