"""Outputs: the only stage that writes files (samples table, summary.json, skipped.csv, arrays).

Files are written to a temporary name and renamed, so a killed run never leaves a half-written
table that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from dqaudit.errors import DqauditError
from dqaudit.files import printable, replacing
from dqaudit.imaging.dicom import DicomRead

SAMPLES_PARQUET = "samples.parquet"
SAMPLES_CSV = "samples.csv"
SUMMARY_JSON = "summary.json"
SKIPPED_CSV = "skipped.csv"
EMBEDDINGS_NPY = "embeddings.npy"
LABEL_COUNTS_NPY = "label_counts.npy"
PROBS_NPY = "probs.npy"
IMAGE_STATS_NPY = "image_stats.npy"
REGIONS_NPY = "regions.npy"  # a multi-label audit with --regions: (N, R, D) float16


def review_order_column(samples: pd.DataFrame) -> str:
    """The column that orders review: ``review_score``, or ``priority`` in audits written
    before that column existed."""
    return "review_score" if "review_score" in samples.columns else "priority"


def write_json(path: Path, data: dict) -> None:
    with replacing(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def samples_for_csv(samples: pd.DataFrame) -> pd.DataFrame:
    """List-valued columns (``issues``) become ``;``-joined strings."""
    out = samples.copy()
    for col in out.columns:
        if len(out) and isinstance(out[col].iloc[0], (list, tuple, np.ndarray)):
            out[col] = out[col].map(lambda v: ";".join(map(str, v)))
    return out


def write_samples(out_dir: Path, samples: pd.DataFrame) -> None:
    with replacing(out_dir / SAMPLES_PARQUET) as tmp:
        samples.to_parquet(tmp, index=False)
    with replacing(out_dir / SAMPLES_CSV) as tmp:
        samples_for_csv(samples).to_csv(tmp, index=False, float_format="%.6g")


def write_csv(path: Path, table: pd.DataFrame, **options) -> None:
    """``table`` as a CSV at ``path``, written to a temporary name and renamed."""
    with replacing(Path(path)) as tmp:
        table.to_csv(tmp, index=False, **options)


def write_skipped(out_dir: Path, skipped: list[dict]) -> None:
    rows = [{"path": printable(str(r["path"])), "reason": r["reason"]} for r in skipped]
    write_csv(out_dir / SKIPPED_CSV, pd.DataFrame(rows, columns=["path", "reason"]))


def write_array(out_dir: Path, name: str, array: np.ndarray) -> None:
    with replacing(out_dir / name) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


# ------------------------------------------------------------------ one writer, one run

LOCK_FILE = ".dqaudit.lock"
_held: dict[str, list] = {}  # folder -> [open lock file, depth]: re-entrant within a process


@contextmanager
def locked(out_dir: Path):
    """Hold the audit folder's lock for the block: a second command writing the same folder
    (another process) is refused with a message, instead of the last writer silently winning.
    Re-entrant within one process. The lock file is removed when the block ends (the folder a
    user zips holds no lock), and so is a folder this block created and left empty (a failed
    first scan leaves no ``--out`` behind)."""
    import fcntl

    out = Path(out_dir)
    key = str(out.resolve())
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    created = not out.exists()
    for _ in range(20):
        try:  # the door check: a folder that cannot be written fails here, before any work
            out.mkdir(parents=True, exist_ok=True)
            fh = open(out / LOCK_FILE, "a+")
        except OSError as exc:
            raise DqauditError(f"{out}: cannot write there ({exc.strerror}); choose a folder "
                               "you can write to") from None
        try:
            # a POSIX record lock, owned by this process: unlike flock's, it is not inherited
            # by forked children (DataLoader workers, a database server), which would otherwise
            # keep the folder locked after this command has finished
            fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise DqauditError(f"{out} is being written by another dqaudit command "
                               f"({holder}); wait for it to finish, or use another folder"
                               ) from None
        try:  # the file locked must still be the folder's: its holder removes it on release
            same = os.stat(out / LOCK_FILE).st_ino == os.fstat(fh.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        fh.close()
    else:
        raise DqauditError(f"{out}: its lock file keeps changing; is another program removing "
                           f"{LOCK_FILE}?")
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}")
    fh.flush()
    _held[key] = [fh, 1]
    try:
        yield
    finally:
        del _held[key]
        try:
            (out / LOCK_FILE).unlink()  # while still held: the next holder makes a new one
        except FileNotFoundError:
            pass
        fh.close()  # closing releases the lock
        if created:
            try:
                out.rmdir()  # only if empty: a failed first command leaves nothing
            except OSError:
                pass


def file_stamp(path: Path) -> str:
    """A cheap identity of a file's content: its size and a hash of its first and last MiB
    (summary.json records one per data file, so a folder mixing two runs is detected)."""
    size = path.stat().st_size
    digest = hashlib.blake2b(str(size).encode(), digest_size=12)
    with open(path, "rb") as fh:
        digest.update(fh.read(1 << 20))
        if size > 2 << 20:
            fh.seek(-(1 << 20), os.SEEK_END)
            digest.update(fh.read())
    return f"{size}:{digest.hexdigest()}"


def check_stamps(out_dir: Path, summary: dict) -> None:
    """An error naming the fix when a data file is not the one summary.json was written with
    (a write that was killed half way, or files copied in from another run)."""
    for name, stamp in (summary.get("files") or {}).items():
        path = Path(out_dir) / name
        if not path.exists() or file_stamp(path) != stamp:
            raise DqauditError(f"{out_dir}: {name} is not the file this audit's summary.json "
                               "was written with (an interrupted write, or a file from another "
                               "run); re-run `dqaudit scan` into this folder")


def read_summary(out_dir: Path) -> dict:
    path = Path(out_dir) / SUMMARY_JSON
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise DqauditError(damaged(path)) from None
    if not isinstance(summary, dict):
        raise DqauditError(damaged(path))
    return summary


def dicom_read(summary: dict) -> DicomRead:
    """How the audit of ``summary`` read its DICOM files (its embed config's window and frame;
    the defaults for an audit written before they existed)."""
    return DicomRead.of(((summary.get("config") or {}).get("embed")) or {})


def read_samples(out_dir: Path) -> pd.DataFrame:
    path = Path(out_dir) / SAMPLES_PARQUET
    try:
        return pd.read_parquet(path)
    except FileNotFoundError:
        raise
    except Exception:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise DqauditError(damaged(path)) from None


def damaged(path: Path) -> str:
    return (f"{path}: damaged (cut short or edited, it cannot be read); run `dqaudit scan` "
            f"into {path.parent} again (the embedding cache makes it quick; the corrections "
            "ledger is re-applied)")


# ------------------------------------------------------------------ all or nothing

ROLLBACK_DIR = ".rollback"
_READY = "READY"
_open_transactions: dict[str, int] = {}


@contextmanager
def transaction(out_dir: Path, names: tuple[str, ...]):
    """Change the audit folder's files ``names`` all or not at all: they are copied aside
    first, and a command killed inside the block leaves that copy, which ``recover`` (run by
    ``Audit.load``) puts back. Re-entrant: a nested block joins the outer one."""
    out = Path(out_dir)
    key = str(out.resolve())
    if key in _open_transactions:
        _open_transactions[key] += 1
        try:
            yield
        finally:
            _open_transactions[key] -= 1
        return
    recover(out)
    aside = out / ROLLBACK_DIR
    shutil.rmtree(aside, ignore_errors=True)
    aside.mkdir()
    present = [n for n in names if (out / n).exists()]
    for name in present:
        shutil.copy2(out / name, aside / name)
    write_json(aside / _READY, {"files": list(names), "present": present})
    _open_transactions[key] = 1
    try:
        yield
        ok = True
    except BaseException:
        ok = False
        raise
    finally:
        del _open_transactions[key]
        if ok:
            shutil.rmtree(aside, ignore_errors=True)
        else:  # an error (not a kill): undo at once
            recover(out)


def recover(out_dir: Path) -> bool:
    """Put back the files of a transaction that did not finish (see ``transaction``); True
    when there was one. A copy without its READY marker never started changing anything."""
    aside = Path(out_dir) / ROLLBACK_DIR
    marker = aside / _READY
    if not marker.exists():
        shutil.rmtree(aside, ignore_errors=True)
        return False
    record = json.loads(marker.read_text())
    for name in record["files"]:
        target = Path(out_dir) / name
        if name in record["present"]:
            with replacing(target) as tmp:
                shutil.copy2(aside / name, tmp)
        elif target.exists():
            target.unlink()
    shutil.rmtree(aside, ignore_errors=True)
    return True


SEPARATORS = (",", ";", "\t", "|")


def separator(path: Path) -> str:
    """The separator of a CSV a user wrote (a manifest, corrections, predictions), by one
    rule: the one of ``SEPARATORS`` its header line holds most often (a comma when none or a
    tie), a tab for ``.tsv``."""
    if path.suffix.lower() == ".tsv":
        return "\t"
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        header = f.readline()
    counts = [header.count(c) for c in SEPARATORS]
    return SEPARATORS[int(np.argmax(counts))] if max(counts) > 0 else ","


def read_user_csv(path) -> pd.DataFrame:
    """A CSV the user wrote (corrections, verified labels), every value a string; a file that
    is missing, empty or not UTF-8 is an error that names the fix."""
    path = Path(path)
    if not path.is_file():
        raise DqauditError(f"{path}: no such file")
    try:
        return pd.read_csv(path, sep=separator(path), dtype=str, keep_default_na=False,
                           encoding="utf-8")
    except UnicodeDecodeError:
        raise DqauditError(f"{path} is not UTF-8 text; save it as UTF-8 (in Excel: CSV UTF-8)"
                           ) from None
    except pd.errors.EmptyDataError:
        raise DqauditError(f"{path} is empty; it needs a header row, e.g. id,label") from None
    except pd.errors.ParserError as exc:
        raise DqauditError(f"{path} is not a readable CSV: {str(exc).splitlines()[0]}") from None
