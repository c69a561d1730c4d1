"""How an input is read, as data: ``InputConfig`` (recorded in ``summary["config"]["input"]``)
and its names, and ``import_fiftyone``, the one way FiftyOne is imported. Light on purpose: the
CLI reads its defaults without loading the readers."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace

from dqaudit.dataset import LAYOUTS
from dqaudit.errors import InputError
from dqaudit.imaging.boxes import DEFAULT_MARGIN, MIN_BOX_SIDE

DEFAULT_LABEL_FIELD = "ground_truth"  # FiftyOne's own name for a dataset's labels


def import_fiftyone():
    """Import fiftyone with usage tracking off unless the user set FIFTYONE_DO_NOT_TRACK."""
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    import fiftyone as fo

    return fo


@dataclass(frozen=True)
class InputConfig:
    """How the input was read: recorded in ``summary["config"]["input"]``, so an audit says
    how its samples were made and a rescan reads them the same way. None for a manifest
    column: found by its usual names (``manifest.PATH_COLUMN_CANDIDATES``, ...)."""

    path_column: str | None = None
    label_column: str | None = None
    split_column: str | None = None
    # per-class annotation-count columns; None: manifest.DEFAULT_COUNT_PREFIX where such
    # columns exist (a prefix given must match some)
    count_prefix: str | None = None
    image_root: str | None = None  # manifest paths are relative to it (None: its folder)
    layout: str = "auto"  # nested class folders (load_folder)
    from_fiftyone: bool = False
    label_field: str = DEFAULT_LABEL_FIELD  # FiftyOne: Classification or Detections
    saved_view: str | None = None
    pred_field: str | None = None  # FiftyOne: a detector's Detections
    # label sets (multi-label data): a label column of sets separated by label_sep, or one
    # 0/1 column per class (label_columns); classes: the known classes (a set naming another
    # is an error)
    multi_label: bool = False
    label_sep: str = ";"
    label_columns: tuple[str, ...] | None = None
    classes: tuple[str, ...] | None = None
    box_margin: float = DEFAULT_MARGIN  # boxes: context, a fraction of the side each way
    min_box_side: float = MIN_BOX_SIDE  # boxes: shorter side in px, below: listed, not audited

    def __post_init__(self):
        if self.image_root is not None:
            object.__setattr__(self, "image_root", str(self.image_root))
        for name in ("label_columns", "classes"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(str(v) for v in value))
        if self.label_columns:  # 0/1 class columns are label sets
            object.__setattr__(self, "multi_label", True)
        if not self.label_sep or self.label_sep.strip() != self.label_sep:
            raise InputError(f"label separator {self.label_sep!r}: choose a visible character "
                             "that no class name holds, e.g. ; or |")
        if self.layout not in LAYOUTS:
            raise InputError(f"unknown layout {self.layout!r}; valid: {', '.join(LAYOUTS)}")
        if not 0 <= float(self.box_margin) <= 2:
            raise InputError(f"box margin {self.box_margin}: choose 0 to 2 (a fraction of the "
                             "box side on each side)")
        if float(self.min_box_side) < 1:
            raise InputError(f"minimum box side {self.min_box_side}: choose 1 pixel or more")


INPUT_OPTIONS = tuple(f.name for f in fields(InputConfig))


def input_config(config: InputConfig | None, options: dict) -> InputConfig:
    """``config`` (default ``InputConfig()``) with ``options`` (its fields by name) replaced;
    an unknown name is an error naming the valid ones."""
    unknown = sorted(set(options) - set(INPUT_OPTIONS))
    if unknown:
        raise InputError(f"unknown input option {unknown[0]!r}; valid: "
                         f"{', '.join(INPUT_OPTIONS)}")
    return replace(config or InputConfig(), **options)
