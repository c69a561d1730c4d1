"""The dataset type every stage shares: ``LabeledImages``, split names, and the one rule that
turns annotation counts into the given label.

This is the bottom of the house: it imports nothing of dqaudit but its errors, so ingest, the
FiftyOne adapter, the stages and the audit folder all speak the same type.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from dqaudit.errors import InputError
from dqaudit.files import file_digests, normal_text

if TYPE_CHECKING:  # pandas is not loaded for `dqaudit --help`
    import pandas as pd

SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val",
               "validation": "val", "dev": "val", "test": "test", "testing": "test"}
# how a class-folder tree's nested class folders are read (ingest.load_folder)
LAYOUTS = ("auto", "top", "leaf")


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(N,) class indices -> (N, C) float32 counts with a single 1 per row."""
    counts = np.zeros((len(labels), n_classes), dtype=np.float32)
    counts[np.arange(len(labels)), labels] = 1.0
    return counts


def majority_labels(label_counts: np.ndarray, *, prefer: np.ndarray | None = None
                    ) -> np.ndarray:
    """(N,) int64 the given label of (N, C) annotation counts: the most annotated class.

    The one tie rule of dqaudit: a tie goes to ``prefer[i]`` (the newest annotation of the
    sample; -1 for none) when that class is among the tied, else to the lowest class index.
    Ingest, the corrections ledger and every score use this function, so tied multi-annotator
    data gets one given label everywhere.
    """
    counts = np.asarray(label_counts)
    out = counts.argmax(axis=1).astype(np.int64)
    if prefer is None or len(counts) == 0:
        return out
    prefer = np.asarray(prefer, dtype=np.int64)
    rows = np.flatnonzero(prefer >= 0)
    best = counts.max(axis=1)
    take = rows[counts[rows, prefer[rows]] == best[rows]]
    out[take] = prefer[take]
    return out


def label_distribution(label_counts: np.ndarray) -> np.ndarray:
    """(N, C) label counts -> rows that sum to 1."""
    return label_counts / label_counts.sum(axis=1, keepdims=True)




def case_variants(classes) -> list[list[str]]:
    """Groups of classes that differ only in case (``frog``/``Frog``): likely one class
    spelled two ways, reported at the scan and never merged silently."""
    groups: dict[str, list[str]] = {}
    for c in classes:
        groups.setdefault(str(c).casefold(), []).append(str(c))
    return [sorted(g) for g in groups.values() if len(g) > 1]










def canonical_order(*, digests: list[str], labels: np.ndarray, ids: list[str]) -> np.ndarray:
    """(N,) the permutation that sorts samples by (given label, file digest, id).

    Every seeded stage (fold splits, subsamples, injection, the verification draw) then sees
    the samples in an order fixed by their content and labels, not by where the files lie:
    a class-folder tree and a manifest of the same images give the same results. ``ids``
    only break ties between byte-identical files with the same label.
    """
    return np.array(sorted(range(len(ids)), key=lambda i: (int(labels[i]), digests[i], ids[i])),
                    dtype=np.int64)






@dataclass
class LabeledImages:
    """A labeled image dataset in memory. N samples, C classes.

    Attributes:
        paths: (N,) absolute file paths.
        labels: (N,) int64 given label index into ``classes``: a majority class of
            ``label_counts`` (``majority_labels``); checked on construction.
        classes: C class names, sorted.
        label_counts: (N, C) float32 annotation counts (one-hot for single-label data).
        splits: (N,) split name per sample ("" when the dataset has no splits).
        ids: (N,) stable sample ids (path relative to the dataset root, or FiftyOne sample id).
        source: how the dataset was given (kind, location, columns), for the report.
        skipped: files that were left out, as dicts ``{"path", "reason"}``.
        digests: (N,) ``file_digest`` per file, or None (not computed, or no files).
        objects: for an object-level audit (``dqaudit.io.objects``: every box of a detection
            dataset a sample, ``paths`` its crops), N rows of the boxes' own columns
            (``objects.OBJECT_COLUMNS``: image, box, box checks); None for an image audit.
        multi_label: each sample's label is a set of classes (multi-label data): then
            ``label_counts`` (N, C) holds the given sets as 0/1 (``label_sets``), and
            ``labels`` the first class of each set (0 for the empty set), for the code that
            needs one class per sample (fold stratification, importance); no tie rule.
    """

    paths: list[str]
    labels: np.ndarray
    classes: list[str]
    label_counts: np.ndarray
    splits: np.ndarray
    ids: list[str]
    source: dict = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)
    digests: list[str] | None = None
    objects: pd.DataFrame | None = None
    multi_label: bool = False

    def __post_init__(self) -> None:
        n, c = len(self.paths), len(self.classes)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.label_counts = np.asarray(self.label_counts, dtype=np.float32)
        self.splits = np.asarray(self.splits, dtype=object)
        problems = []
        if self.labels.shape != (n,):
            problems.append(f"labels have shape {self.labels.shape}, expected ({n},)")
        if self.label_counts.shape != (n, c):
            problems.append(f"label_counts have shape {self.label_counts.shape}, expected "
                            f"({n}, {c}) (samples x classes)")
        if self.splits.shape != (n,) or len(self.ids) != n or (
                self.digests is not None and len(self.digests) != n) or (
                self.objects is not None and len(self.objects) != n):
            problems.append(f"splits, ids, digests and objects need one entry per path ({n})")
        if problems:
            raise InputError("inconsistent dataset: " + "; ".join(problems))
        if n and (self.labels.min() < 0 or self.labels.max() >= c):
            raise InputError(f"labels must be class indices in 0..{c - 1}")
        if self.multi_label:
            if not np.isin(self.label_counts, (0, 1)).all():
                raise InputError("a multi-label dataset's label_counts are its sets as 0/1")
            return
        outvoted = (self.label_counts[np.arange(n), self.labels]
                    < self.label_counts.max(axis=1)) if n else np.zeros(0, dtype=bool)
        if outvoted.any():
            bad = int(np.flatnonzero(outvoted)[0])
            raise InputError(f"sample {self.ids[bad]!r}: its label "
                             f"{self.classes[self.labels[bad]]!r} is not a majority of its "
                             "annotation counts; build the labels with "
                             "dqaudit.dataset.majority_labels(label_counts)")

    @classmethod
    def from_counts(cls, *, label_counts: np.ndarray, prefer: np.ndarray | None = None,
                    **fields) -> LabeledImages:
        """The dataset whose given labels follow from ``label_counts`` by the one tie rule."""
        return cls(labels=majority_labels(label_counts, prefer=prefer),
                   label_counts=label_counts, **fields)

    @classmethod
    def from_labels(cls, labels, *, classes=None, n_classes: int | None = None,
                    label_counts=None, paths=None, ids=None, splits=None,
                    source: dict | None = None) -> LabeledImages:
        """A dataset of given labels without image files (``Audit.from_arrays``).

        ``labels``: (N,) class indices (``classes`` default ``"0"``..``str(n_classes - 1)``) or
        class names (``classes`` default their sorted set). ``paths``/``ids``/``splits`` default
        to ``sample_<i>``/the paths/no split; ``label_counts`` to one annotation per sample.
        """
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) == 0:
            raise InputError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
        if labels.dtype.kind in "iu":
            if classes is None:
                classes = [str(c) for c in range(n_classes or int(labels.max()) + 1)]
            if labels.min() < 0 or labels.max() >= len(classes):
                raise InputError(f"labels must be class indices 0..{len(classes) - 1}")
            y = labels.astype(np.int64)
        else:
            names = [str(v) for v in labels]
            classes = list(classes) if classes is not None else sorted(set(names))
            index = {str(c): i for i, c in enumerate(classes)}
            unknown = sorted(set(names) - set(index))
            if unknown:
                raise InputError(f"labels {unknown[:5]} are not in classes")
            y = np.array([index[v] for v in names], dtype=np.int64)
        n = len(y)
        paths = [str(p) for p in paths] if paths is not None else [f"sample_{i}"
                                                                  for i in range(n)]
        return cls(paths=paths, labels=y, classes=[str(c) for c in classes],
                   label_counts=np.asarray(label_counts, dtype=np.float32)
                   if label_counts is not None else one_hot(y, len(classes)),
                   splits=np.array(list(splits) if splits is not None else [""] * n,
                                   dtype=object),
                   ids=[str(i) for i in ids] if ids is not None else list(paths),
                   source=source or {"kind": "arrays", "location": "arrays"})

    @classmethod
    def from_label_sets(cls, label_sets, *, classes=None, n_classes: int | None = None,
                        paths=None, ids=None, splits=None,
                        source: dict | None = None) -> LabeledImages:
        """A multi-label dataset without image files (``Audit.from_arrays``), in cleanlab's
        convention: ``label_sets`` a list of class-index lists (one per sample; an empty list
        is the empty set), or an (N, C) 0/1 array. ``classes`` default ``"0"``..``"C-1"``."""
        if isinstance(label_sets, np.ndarray) and label_sets.ndim == 2:
            sets = label_sets.astype(bool)
            c = n_classes or sets.shape[1]
        else:
            rows = [list(r) for r in label_sets]
            flat = [int(k) for r in rows for k in r]
            if any(k < 0 for k in flat):
                raise InputError("label sets hold class indices (0 or more)")
            c = n_classes or (len(classes) if classes is not None else
                              (max(flat) + 1 if flat else 1))
            if flat and max(flat) >= c:
                raise InputError(f"label sets name class {max(flat)}, but there are {c} classes")
            sets = np.zeros((len(rows), c), dtype=bool)
            for i, r in enumerate(rows):
                sets[i, [int(k) for k in r]] = True
        if len(sets) == 0:
            raise InputError("label sets: none given")
        classes = [str(k) for k in (classes if classes is not None else range(c))]
        if len(classes) != sets.shape[1]:
            raise InputError(f"{len(classes)} classes named for sets of {sets.shape[1]}")
        n = len(sets)
        paths = [str(p) for p in paths] if paths is not None else [f"sample_{i}"
                                                                  for i in range(n)]
        return cls(paths=paths, labels=first_classes(sets), classes=classes,
                   label_counts=sets.astype(np.float32), multi_label=True,
                   splits=np.array(list(splits) if splits is not None else [""] * n,
                                   dtype=object),
                   ids=[str(i) for i in ids] if ids is not None else list(paths),
                   source=source or {"kind": "arrays", "location": "arrays"})

    @classmethod
    def from_user_labels(cls, labels, *, multi_label: bool | None, classes, label_counts,
                         paths, ids, splits, n_classes: int | None,
                         source: dict | None = None) -> LabeledImages:
        """``from_label_sets`` or ``from_labels``: ``multi_label`` None reads cleanlab's
        convention, a list of lists being a list of sets."""
        if multi_label is None:
            multi_label = not isinstance(labels, np.ndarray) and len(labels) > 0 and all(
                isinstance(v, (list, tuple, set, np.ndarray)) for v in labels)
        if multi_label:
            return cls.from_label_sets(
                labels if isinstance(labels, np.ndarray) else [sorted(v) for v in labels],
                classes=classes, n_classes=n_classes, paths=paths, ids=ids, splits=splits,
                source=source)
        return cls.from_labels(labels, classes=classes, label_counts=label_counts, paths=paths,
                               ids=ids, splits=splits, n_classes=n_classes, source=source)

    def only_classes(self, keep: np.ndarray, reasons: list[str]) -> LabeledImages:
        """A multi-label dataset with only the classes of (C,) bool ``keep`` (``reasons``:
        why the others were left out, kept in ``source["classes_left_out"]``)."""
        sets = self.label_counts[:, keep]
        return replace(self, classes=[c for c, k in zip(self.classes, keep) if k],
                       label_counts=sets, labels=first_classes(sets),
                       source={**self.source, "classes_left_out": list(reasons)})

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def unit(self) -> str:
        """What one sample is: ``object`` (a box of a detection dataset) or ``image``."""
        return "object" if self.objects is not None else "image"

    @property
    def has_multiple_annotations(self) -> bool:
        """Whether some sample carries several annotations (never, for label sets: their
        0/1 rows are the sets)."""
        return not self.multi_label and bool((self.label_counts.sum(axis=1) > 1).any())

    @property
    def label_sets(self) -> np.ndarray:
        """(N, C) bool: the classes each sample's label holds (one per sample unless
        ``multi_label``)."""
        return self.label_counts > 0 if self.multi_label else one_hot(
            self.labels, self.n_classes).astype(bool)

    def class_counts(self) -> dict[str, int]:
        """Samples per class (for sets: the samples whose set holds the class)."""
        counts = self.label_counts.sum(axis=0).astype(np.int64) if self.multi_label else \
            np.bincount(self.labels, minlength=self.n_classes)
        return {c: int(k) for c, k in zip(self.classes, counts)}

    def subset(self, keep: np.ndarray, *, extra_skipped: list[dict] | None = None) -> LabeledImages:
        """The samples where boolean mask ``keep`` is true (classes stay as they are)."""
        return self.take(np.flatnonzero(np.asarray(keep, dtype=bool)),
                         extra_skipped=extra_skipped)

    def take(self, idx: np.ndarray, *, extra_skipped: list[dict] | None = None
             ) -> LabeledImages:
        """The samples at positions ``idx``, in that order (classes stay as they are)."""
        idx = np.asarray(idx, dtype=np.int64)
        return replace(
            self,
            paths=[self.paths[i] for i in idx],
            labels=self.labels[idx],
            label_counts=self.label_counts[idx],
            splits=self.splits[idx],
            ids=[self.ids[i] for i in idx],
            skipped=list(self.skipped) + list(extra_skipped or []),
            digests=None if self.digests is None else [self.digests[i] for i in idx],
            objects=None if self.objects is None else
            self.objects.iloc[idx].reset_index(drop=True),
        )

    def without_small_classes(self, min_samples: int) -> tuple[LabeledImages, np.ndarray]:
        """(this dataset without the samples whose given label has fewer than ``min_samples``
        samples, each added to ``skipped`` with the reason, and the (N,) bool mask of the
        samples kept); a class left with no annotation at all is removed from ``classes``.
        One typo in a manifest makes a one-sample class
        that no held-out model can learn: left in, it reads as a wrong label and inflates
        every noise estimate."""
        counts = np.bincount(self.labels, minlength=self.n_classes)
        small = np.flatnonzero((counts > 0) & (counts < min_samples))
        out = np.isin(self.labels, small)
        if not len(small):
            return self, ~out
        reasons = [{"path": self.paths[i],
                    "reason": f"class {self.classes[self.labels[i]]!r} has "
                              f"{counts[self.labels[i]]} sample(s); classes with fewer than "
                              f"{min_samples} are left out of the audit (too few for a "
                              "held-out model to learn)"} for i in np.flatnonzero(out)]
        kept = self.subset(~out, extra_skipped=reasons)
        used = np.flatnonzero(kept.label_counts.sum(axis=0) > 0)
        if len(used) < kept.n_classes:
            remap = np.full(kept.n_classes, -1, dtype=np.int64)
            remap[used] = np.arange(len(used))
            kept = replace(kept, classes=[kept.classes[j] for j in used],
                           labels=remap[kept.labels], label_counts=kept.label_counts[:, used])
        return kept, ~out

    def in_canonical_order(self) -> tuple[LabeledImages, np.ndarray]:
        """(this dataset with ``digests`` computed and its samples in ``canonical_order``,
        the (N,) permutation applied: ``new.paths[j] == self.paths[order[j]]``)."""
        digests = self.digests if self.digests is not None else file_digests(self.paths)
        order = canonical_order(digests=digests, labels=self.labels, ids=self.ids)
        return replace(self, digests=digests).take(order), order




# --------------------------------------------------------------------------- label sets

SET_SEP = ";"  # how a set is written in the samples table and the review files: "cat;dog"


def set_text(row: np.ndarray, classes: list[str]) -> str:
    """A (C,) 0/1 row as the set's text: its classes in class order joined by ``SET_SEP``
    ("" for the empty set)."""
    return SET_SEP.join(c for c, on in zip(classes, row) if on)


def set_row(text: str, classes: list[str], *, what: str) -> np.ndarray:
    """(C,) bool of a set's text (``set_text``'s inverse; spaces and Unicode form aside, a
    class given twice counted once); an unknown class is an error naming ``what``."""
    index = {c: i for i, c in enumerate(classes)}
    row = np.zeros(len(classes), dtype=bool)
    for part in str(text).split(SET_SEP):
        name = normal_text(part)
        if not name:
            continue
        if name not in index:
            raise InputError(f"{what}: {name!r} is not a class of this audit (classes: "
                             f"{', '.join(classes[:8])}{', ...' if len(classes) > 8 else ''})")
        row[index[name]] = True
    return row


def first_classes(sets: np.ndarray) -> np.ndarray:
    """(N,) the first class of each (N, C) set (0 for the empty set)."""
    return np.asarray(sets, dtype=bool).argmax(axis=1).astype(np.int64)
