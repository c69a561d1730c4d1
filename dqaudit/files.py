"""Files and their names: the one atomic write (``replacing``), image files recognised and
checked cheaply, content digests, how a path is spelled in the outputs (``printable``,
``original_path``), the one normalisation of user text (``normal_text``) and the sample a
user's text names (``sample_ids``)."""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from dqaudit.imaging.dicom import DICOM_EXTENSIONS, is_dicom

if TYPE_CHECKING:
    import pandas as pd


@contextmanager
def replacing(path: Path):
    """Yield a temporary name beside ``path`` (unique per process and call, so concurrent
    writers never share one) that replaces ``path`` when the block succeeds; on failure the
    temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)


def normal_text(text) -> str:
    """A label, class folder or id as its meaning: spaces around it dropped, Unicode in one
    normal form (NFC: an ``é`` typed as one code point or as ``e`` + accent is one class). The
    one normalisation at every door (folder names, manifest cells, corrections); case is kept,
    ``case_variants`` reports it."""
    return unicodedata.normalize("NFC", str(text).strip())


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
