"""Ingest: a class-folder tree, a CSV/Parquet manifest or a FiftyOne dataset -> ``LabeledImages``.

This is the door where every input is validated once (ARCHITECTURE rule 2). Problems that make
the whole dataset unusable raise ``InputError`` with a one-line message naming the file and the
fix; problems with single files (empty, not an image) are recorded in ``skipped`` and the rest
carries on. Nothing here ever writes to the input.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from dqaudit.dataset import LAYOUTS, SPLIT_NAMES, LabeledImages, case_variants, one_hot
from dqaudit.errors import InputError
from dqaudit.files import (
    IMAGE_EXTENSIONS,
    cheap_file_problem,
    file_digests,
    is_dicom_file,
    normal_text,
    printable,
)
from dqaudit.imaging.dicom_header import header_size
from dqaudit.io.fiftyone_io import load_fiftyone_boxes, load_fiftyone_dataset, load_view
from dqaudit.io.label_sets import load_set_manifest
from dqaudit.io.manifest import load_manifest
from dqaudit.io.objects import is_coco, is_yolo, load_coco, load_yolo, object_dataset
from dqaudit.io.reading import InputConfig, input_config


def load_dataset(source: str | os.PathLike, config: InputConfig | None = None, *,
                 cache_dir: str | os.PathLike | None = None, **options) -> LabeledImages:
    """Load a labeled image dataset from a folder tree, a manifest file or a FiftyOne dataset.

    ``source`` is a directory (class folders, optionally under train/val/test), a ``.csv`` or
    ``.parquet`` manifest, or with ``from_fiftyone=True`` the name of a FiftyOne dataset.
    ``config`` (an ``InputConfig``; ``options``: its fields by name) says how it is read.
    A detection dataset (a COCO instances ``.json``, a YOLO folder, a FiftyOne ``Detections``
    field) is audited object by object (``io.objects``): every box a sample, its crop with
    ``box_margin`` of context kept in the crop cache under ``cache_dir`` (default: the
    embedding cache's). ``pred_field``: a FiftyOne ``Detections`` field of a detector's
    predictions, for possible missing and spurious boxes. Boxes under ``min_box_side`` px on
    their shorter side are listed, not audited. ``layout``: how a folder tree's nested class
    folders are read (``load_folder``).
    """
    return read_input(source, config=input_config(config, options), cache_dir=cache_dir)


def read_input(source: str | os.PathLike, *, config: InputConfig,
               cache_dir: str | os.PathLike | None) -> LabeledImages:
    """``load_dataset`` with every setting given."""
    c = config
    if c.from_fiftyone:
        view = load_view(str(source), saved_view=c.saved_view) if c.saved_view else None
        return load_fiftyone(str(source), label_field=c.label_field, view=view,
                             pred_field=c.pred_field, box_margin=c.box_margin, cache_dir=cache_dir,
                             min_box_side=c.min_box_side, classes=c.classes,
                             multi_label=c.multi_label)
    if c.pred_field:
        raise InputError("--pred-field names a FiftyOne field: use it with --from-fiftyone")
    path = Path(source).expanduser()
    if not path.exists():
        raise InputError(f"{path}: no such file or directory; pass a class-folder tree, a .csv or "
                         ".parquet manifest, a COCO .json, a YOLO folder, or --from-fiftyone NAME")
    if is_coco(path) or is_yolo(path):
        table, classes, skipped, info = load_coco(path, image_root=c.image_root) \
            if is_coco(path) else load_yolo(path)
        return object_dataset(table, classes=classes, source=info, skipped=skipped,
                              margin=c.box_margin, cache_dir=cache_dir, min_side=c.min_box_side)
    if path.is_dir():
        if c.multi_label:
            raise InputError(f"{path}: a class-folder tree gives each image one class; for "
                             "label sets write a manifest (columns path,labels with labels like "
                             "'cat;dog', or one 0/1 column per class) and scan it with "
                             "--multi-label")
        return load_folder(path, layout=c.layout)
    if c.multi_label and path.suffix.lower() in (".csv", ".tsv", ".parquet", ".pq"):
        return load_set_manifest(path, path_column=c.path_column, label_column=c.label_column,
                                 split_column=c.split_column, image_root=c.image_root,
                                 label_sep=c.label_sep, label_columns=c.label_columns,
                                 classes=c.classes)
    if path.suffix.lower() in (".csv", ".tsv", ".parquet", ".pq"):
        return load_manifest(path, path_column=c.path_column, label_column=c.label_column,
                             split_column=c.split_column, count_prefix=c.count_prefix,
                             image_root=c.image_root)
    raise InputError(f"{path}: not a folder, .csv or .parquet manifest, or COCO .json; pass a "
                     "class-folder tree or a manifest with a path and a label column")


def load_fiftyone(name: str, *, label_field: str, view, pred_field: str | None,
                  box_margin: float, cache_dir: str | os.PathLike | None,
                  min_box_side: float, classes: tuple[str, ...] | None,
                  multi_label: bool) -> LabeledImages:
    """A FiftyOne dataset (or ``view`` of it): a ``Classification`` field gives an image audit,
    a ``Detections`` field an object audit (every box a sample; see ``load_dataset``)."""
    boxes = load_fiftyone_boxes(name, label_field=label_field, view=view, pred_field=pred_field)
    if boxes is not None:
        table, classes, skipped, info = boxes
        return object_dataset(table, classes=classes, source=info, skipped=skipped,
                              margin=box_margin, cache_dir=cache_dir, min_side=min_box_side)
    if pred_field:
        raise InputError(f"--pred-field {pred_field}: predictions are matched to boxes, and "
                         f"field {label_field!r} holds no Detections")
    return load_fiftyone_dataset(name, label_field=label_field, view=view, classes=classes,
                                 multi_label=multi_label)


# --------------------------------------------------------------------------- folder trees


HIDDEN = "hidden (its name starts with '.'), not read"


def _tree_files(root: Path, skipped: list[dict]) -> list[tuple[Path, tuple[str, ...]]]:
    """Every visible file under ``root`` with the folder names between them; hidden entries and
    links to folders (which could loop) become rows of ``skipped``."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        walked = []
        for name in sorted(dirnames):
            q = here / name
            if name.startswith("."):
                skipped.append({"path": str(q), "reason": HIDDEN})
            elif q.is_symlink():
                skipped.append({"path": str(q), "reason": "link to a folder, not followed "
                                "(it could loop); link the files, or copy the folder"})
            else:
                walked.append(name)
        dirnames[:] = walked
        folders = here.relative_to(root).parts
        for name in sorted(filenames):
            if name.startswith("."):
                skipped.append({"path": str(here / name), "reason": HIDDEN})
            else:
                found.append((here / name, folders))
    return found


def read_tree_path(folders: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """The one layout rule: a folder named as a split (``SPLIT_NAMES``, any case) at any level
    gives the split, the outermost one if several; the other folders, outermost first, are the
    class path. ``train/cat``, ``cat/train`` and ``cat`` are class ``cat``."""
    split, classes = "", []
    for name in folders:
        if not split and name.lower() in SPLIT_NAMES:
            split = SPLIT_NAMES[name.lower()]
        else:
            classes.append(normal_text(name))
    return split, tuple(classes)


def load_folder(root: Path, *, layout: str) -> LabeledImages:
    """A class-folder tree, read by one stated rule (``read_tree_path``): split folders at any
    level, the class from the folders left. When class folders nest (``animals/cat``),
    ``layout`` says which folder is the class: ``top`` the outermost (everything under it is
    that class), ``leaf`` the innermost; ``auto`` refuses nested images with the fix, except
    DICOM files, whose convention is patient/study/series folders under the class (read as
    ``top``). Class names are ``normal_text``: ``truck`` and ``truck `` are one class; case variants
    stay apart and are reported (``source["case_variants"]``)."""
    if layout not in LAYOUTS:
        raise InputError(f"--layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    root = root.resolve()
    # nothing under the root is ignored silently: what is not read is a row of skipped.csv
    skipped: list[dict] = []
    rows: list[tuple[str, str, str]] = []  # (abs path, class, split)
    nested: tuple[str, ...] | None = None  # the first nested image that is not DICOM
    depths = set()
    for path, folders in _tree_files(root, skipped):
        split, class_path = read_tree_path(folders)
        if not class_path:
            skipped.append({"path": str(path), "reason": "not inside a class folder" + (
                f" (its folder {folders[-1]!r} is read as a split; a class of that name needs "
                "a manifest)" if folders else "")})
            continue
        depths.add(len(class_path))
        reason = cheap_file_problem(path)
        if len(class_path) > 1 and nested is None and not is_dicom_file(path):
            nested = folders
        if reason:
            skipped.append({"path": str(path), "reason": reason})
            continue
        rows.append((str(path), class_path[-1] if layout == "leaf" else class_path[0], split))
    if nested is not None and layout == "auto":
        example = "/".join(nested)
        _, class_path = read_tree_path(nested)
        raise InputError(
            f"{root}: class folders are nested ({example}/, {max(depths)} levels); pass "
            f"--layout leaf to use the innermost folder as the class ({class_path[-1]!r}), or "
            f"--layout top to use the outermost ({class_path[0]!r}) with everything under it")
    if not rows:
        folders = any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir())
        raise InputError(f"{root}: " + ("found no image files in its class folders" if folders
                                        else "no class folders found") + "; expected "
                         f"{root}/<class>/<image files> (optionally under train/val/test) or a "
                         f"manifest (.csv/.parquet); supported extensions: "
                         f"{', '.join(sorted(IMAGE_EXTENSIONS))}")
    classes = sorted({c for _, c, _ in rows})
    if len(classes) < 2:
        raise InputError(f"{root}: only one class ({classes[0]!r}) has images; an audit needs at "
                         "least two class folders")
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[c] for _, c, _ in rows], dtype=np.int64)
    splits = sorted({s for _, _, s in rows if s})
    levels = max(depths) + (1 if splits else 0)
    read_as = [f"{len(splits)} split{'s' if len(splits) != 1 else ''}"
               + (f" ({', '.join(splits)})" if splits else ""),
               f"{len(classes)} classes", f"{levels} level{'s' if levels != 1 else ''}"]
    if max(depths) > 1:
        read_as.append("classes from the " + ("innermost folder" if layout == "leaf" else
                       "outermost folder" + (" (DICOM series folders below)"
                                             if layout == "auto" else "")))
    return LabeledImages(
        paths=[p for p, _, _ in rows],
        labels=labels,
        classes=classes,
        label_counts=one_hot(labels, len(classes)),
        splits=np.array([s for _, _, s in rows], dtype=object),
        ids=[printable(os.path.relpath(p, root)) for p, _, _ in rows],
        source={"kind": "folder", "location": str(root), "split_layout": bool(splits),
                "layout": layout, "read_as": "a class-folder tree: " + ", ".join(read_as),
                "case_variants": case_variants(classes)},
        skipped=skipped,
    )


def files_fingerprint(data: LabeledImages) -> str:
    """SHA-256 over every sample's id and file digest (``files.file_digest``), in id order:
    the part of the fingerprint that labelling cannot change, computed once, at the scan."""
    digests = data.digests if data.digests is not None else file_digests(data.paths)
    digest = hashlib.sha256()
    for i in sorted(range(len(data)), key=lambda j: data.ids[j]):
        digest.update(f"{data.ids[i]}\x1f{digests[i]}\x1e".encode())
    return digest.hexdigest()


def fingerprint(data: LabeledImages, *, files: str, dropped=frozenset()) -> str:
    """SHA-256 over the dataset as audited now: ``files`` (``files_fingerprint``, "" for an
    audit of arrays), the classes, every sample's id and current label counts, and the ids
    dropped as junk. Renaming the root folder keeps it; changing any pixel, label or
    annotation changes it."""
    digest = hashlib.sha256()
    digest.update((files + "\x1e" + "\x1f".join(data.classes) + "\x1e").encode())
    for i in sorted(range(len(data)), key=lambda j: data.ids[j]):
        counts = ",".join(f"{v:g}" for v in data.label_counts[i])
        digest.update(f"{data.ids[i]}\x1f{counts}\x1e".encode())
    digest.update("\x1f".join(sorted(dropped)).encode())
    return digest.hexdigest()


def median_image_side(paths: list[str], *, sample: int = 200, seed: int) -> float | None:
    """Median shorter side of up to ``sample`` images (headers only; unreadable ones ignored)."""
    from PIL import Image

    if not paths:
        return None
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(paths), size=min(sample, len(paths)), replace=False)
    sides = []
    for i in sorted(pick):
        if is_dicom_file(paths[i]):
            size = header_size(paths[i])
            if size:
                sides.append(min(size))
            continue
        try:
            with Image.open(paths[i]) as img:
                sides.append(min(img.size))
        except Exception:  # undecodable files are reported by the embed stage
            continue
    return float(np.median(sides)) if sides else None


# --------------------------------------------------------------------------- manifests
