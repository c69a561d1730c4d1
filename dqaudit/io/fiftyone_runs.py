"""An audit's runs in FiftyOne: the names a run writes (fields, saved views, the run's own
prefix for the audit of a view: ``RunNames``), its record with its config (``register_run``,
key ``dqaudit``, and ``dataset.info``), and listing and removing runs with everything they
wrote. ``fiftyone_results`` writes a run through these names."""

from __future__ import annotations

import re
from dataclasses import dataclass

from dqaudit.errors import InputError
from dqaudit.estimates.headline import headline
from dqaudit.imaging.image_checks import IMAGE_ISSUES
from dqaudit.io.reading import import_fiftyone

SUSPECTS_VIEW = "dq_suspects"


AMBIGUOUS_VIEW = "dq_ambiguous"


INFO_KEY = "dqaudit"


RUN_KEY = "dqaudit"  # the dataset's run record (dataset.list_runs(), dataset.delete_run())


IMAGES_VIEW = "dq_image_issues"


IMAGE_FIELDS = tuple(f"dq_{k}_score" for k in IMAGE_ISSUES)


FIELDS = ("dq_noisiness", "dq_ambiguity", "dq_priority", "dq_review_score", "dq_importance",
          "dq_label_error_probability", "dq_suggested", "dq_outlier", "dq_dup_group",
          "dq_exact_dup_group", "dq_issues", "dq_flagged", "dq_embedding", "dq_missing",
          *IMAGE_FIELDS)


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


def record_run(dataset, result, names: RunNames, *, label_field: str, fields: list[str],
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


FIELD_TYPES = {
    "dq_noisiness": ("FloatField", {}), "dq_ambiguity": ("FloatField", {}),
    "dq_priority": ("FloatField", {}), "dq_review_score": ("FloatField", {}),
    "dq_importance": ("FloatField", {}), "dq_label_error_probability": ("FloatField", {}),
    "dq_outlier": ("FloatField", {}), "dq_dup_group": ("IntField", {}),
    "dq_exact_dup_group": ("IntField", {}), **{f: ("FloatField", {}) for f in IMAGE_FIELDS},
    "dq_issues": ("ListField", {"subfield": "StringField"}), "dq_flagged": ("BooleanField", {}),
    "dq_suggested": ("EmbeddedDocumentField", {"embedded_doc_type": "Classification"}),
    "dq_embedding": ("VectorField", {}),
    "dq_missing": ("EmbeddedDocumentField", {"embedded_doc_type": "Classifications"}),
}
# a multi-label audit's suggestion is a set
SET_FIELD_TYPES = {**FIELD_TYPES, "dq_suggested": FIELD_TYPES["dq_missing"]}


def write_columns(fo, dataset, ids: list[str], columns: dict, names: RunNames, *,
                  types: dict) -> None:
    """Write several fields of many samples through FiftyOne's public ``set_values``, one bulk
    write per field, keyed by sample id, under the run's field names. (A private
    one-update-per-sample path was 5x faster, benchmarks/RESULTS.md; dqaudit keeps to the
    public API so a FiftyOne upgrade cannot break the write.)"""
    for name in columns:
        kind, kwargs = types[name]
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
