"""The dataset type every stage shares: ``LabeledImages``, split names, and the one rule that
turns annotation counts into the given label.

This is the bottom of the house: it imports nothing of dqaudit but its errors, so ingest, the
FiftyOne adapter, the stages and the audit folder all speak the same type.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dqaudit.imaging.dicom import DICOM_EXTENSIONS, is_dicom
from dqaudit.errors import InputError

if TYPE_CHECKING:  # pandas is not loaded for `dqaudit --help`
    import pandas as pd

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
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


def normal_text(text) -> str:
    """A label, class folder or id as its meaning: spaces around it dropped, Unicode in one
    normal form (NFC: an ``é`` typed as one code point or as ``e`` + accent is one class). The
    one normalisation at every door (folder names, manifest cells, corrections); case is kept,
    ``case_variants`` reports it."""
    return unicodedata.normalize("NFC", str(text).strip())


def case_variants(classes) -> list[list[str]]:
    """Groups of classes that differ only in case (``frog``/``Frog``): likely one class
    spelled two ways, reported at the scan and never merged silently."""
    groups: dict[str, list[str]] = {}
    for c in classes:
        groups.setdefault(str(c).casefold(), []).append(str(c))
    return [sorted(g) for g in groups.values() if len(g) > 1]


def printable(text: str) -> str:
    """``text`` with each byte of a file name that is not UTF-8 (Python's surrogate escapes)
    written as ``\\xNN``: storable in Parquet, CSV, HTML and FiftyOne. Ids are made printable at
    ingest; paths when they are written (``original_path`` turns them back)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", "backslashreplace")


def original_path(text: str) -> str:
    """The path that ``printable`` wrote as ``text`` (``text`` itself when that file exists)."""
    if "\\x" not in text or os.path.exists(text):
        return text
    raw = re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes([int(m.group(1), 16)]),
                 text.encode("utf-8"))
    return os.fsdecode(raw)


def file_digest(path: str | os.PathLike) -> str:
    """40 hex digits: BLAKE2b-160 of the file's bytes. The identity of an image wherever it
    lies: the embedding cache's key, the order of an audit, the fingerprint's file part."""
    digest = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digests(paths: list[str], *, workers: int = 8, unreadable: str = "") -> list[str]:
    """``file_digest`` of every path (``unreadable`` for a file that cannot be read: the embed
    stage then reports why), read on ``workers`` threads (hashlib releases the GIL)."""
    def one(path):
        try:
            return file_digest(path)
        except OSError:
            return unreadable

    if len(paths) < 64 or workers <= 1:
        return [one(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, paths, chunksize=64))


def canonical_order(*, digests: list[str], labels: np.ndarray, ids: list[str]) -> np.ndarray:
    """(N,) the permutation that sorts samples by (given label, file digest, id).

    Every seeded stage (fold splits, subsamples, injection, the verification draw) then sees
    the samples in an order fixed by their content and labels, not by where the files lie:
    a class-folder tree and a manifest of the same images give the same results. ``ids``
    only break ties between byte-identical files with the same label.
    """
    return np.array(sorted(range(len(ids)), key=lambda i: (int(labels[i]), digests[i], ids[i])),
                    dtype=np.int64)


def is_dicom_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is read as DICOM: by content (``dicom.is_dicom``), for any file not
    named as another image format (PACS exports often have no extension)."""
    return Path(path).suffix.lower() not in IMAGE_EXTENSIONS and is_dicom(path)


def cheap_file_problem(path: Path) -> str | None:
    """A reason to skip the file that needs no decoding, or None."""
    if path.is_dir():
        return "a folder, not an image file"
    if path.suffix.lower() not in IMAGE_EXTENSIONS and not is_dicom_file(path):
        if path.suffix.lower() in DICOM_EXTENSIONS:
            return "not a DICOM file (no DICM marker after the 128-byte preamble)"
        return f"not an image file (extension {path.suffix or 'none'!r}, and not DICOM)"
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"cannot read file ({exc.strerror})"
    if size == 0:
        return "empty file (0 bytes)"
    return None


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
        return bool((self.label_counts.sum(axis=1) > 1).any())

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=self.n_classes)
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


def sample_ids(values: list[str], samples: pd.DataFrame, *,
               fallbacks: list[str] | None) -> list[str | None]:
    """The sample id each value names (else its ``fallbacks`` entry), by meaning rather than
    by text: the id itself (spaces around it and Unicode normal form aside), or the sample's
    file by its absolute path, its path as the manifest or folder gives it (``./a.jpg`` =
    ``a.jpg``), or any spelling that resolves to the same file; None where nothing matches.
    Files are resolved (``realpath``, a system call per folder) only when a value is not found
    by its spelling."""
    ids, paths = samples["id"].astype(str).tolist(), samples["path"].astype(str).tolist()
    spelled: dict[str, str] = {}
    for sid, path in zip(ids, paths):
        for key in (normal_text(sid), normal_text(path)):
            spelled.setdefault(key, sid)
            spelled.setdefault(os.path.normpath(key), sid)
    resolved: dict[str, str] = {}

    def find(value) -> str | None:
        v = normal_text(value)
        if not v:
            return None
        hit = spelled.get(v) or spelled.get(os.path.normpath(v))
        if hit is None:
            if not resolved:
                for sid, path in zip(ids, paths):
                    resolved.setdefault(os.path.realpath(original_path(path)), sid)
            hit = resolved.get(os.path.realpath(v))
        return hit

    return [find(v) or (find(f) if fallbacks is not None else None)
            for v, f in zip(values, fallbacks if fallbacks is not None else values)]
