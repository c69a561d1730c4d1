"""What a DICOM file's header says, read without its pixels and without patient values: the
record of a file (``header_record``, ``describe``: codes and sizes only), its size, whether it
may carry burned-in patient text (``burned_in``), and the reasons a file is skipped
(``DicomSkip``, named by keywords, never by header values)."""

from __future__ import annotations

import os
import warnings

# modalities whose images commonly carry burned-in patient text (PS3.15 E.1.1 asks to check
# them): ultrasound, secondary capture and other, endoscopy, external-camera photography,
# document and slide-microscopy captures
BURNED_IN_MODALITIES = frozenset({"US", "OT", "SC", "ES", "XC", "DOC", "SM", "GM"})


SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"


def quiet_pydicom():
    """pydicom's warnings and log lines can quote header values: silenced while reading."""
    import logging

    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("ignore")
    logger = logging.getLogger("pydicom")
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.CRITICAL + 1)
    logger.propagate = False

    def restore():
        logger.setLevel(level)
        logger.propagate = propagate
        ctx.__exit__(None, None, None)

    return restore


def header_record(path: str | os.PathLike) -> dict | None:
    """What the audit records of a DICOM file, from its header alone (no pixels decoded):
    modality, photometric interpretation, bits, transfer syntax, frames, burned-in text; None
    when the header cannot be read. Nothing from the patient, study or institution."""
    import pydicom

    restore = quiet_pydicom()
    try:
        return describe(pydicom.dcmread(path, stop_before_pixels=True))
    except Exception:  # noqa: BLE001 - the embed stage reports the file's problem
        return None
    finally:
        restore()


def describe(ds) -> dict:
    """The attributes this audit records of a DICOM dataset, and nothing else: modality,
    photometric interpretation, bits, transfer syntax, frames, whether text may be burned in."""
    return {"modality": text_of(ds, "Modality"),
            "photometric": text_of(ds, "PhotometricInterpretation").upper(),
            "bits_stored": int_of(ds, "BitsStored", 0),
            "transfer_syntax": syntax_name(ds),
            "frames": int_of(ds, "NumberOfFrames", 1),
            "burned_in": burned_in(ds)}


def header_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) of a DICOM image from its header (Columns, Rows); None if unreadable."""
    import pydicom

    restore = quiet_pydicom()
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True,
                             specific_tags=["Rows", "Columns"])
        return int(ds.Columns), int(ds.Rows)
    except Exception:  # noqa: BLE001 - the embed stage reports the file's problem
        return None
    finally:
        restore()


def burned_in(ds) -> bool:
    """Whether the image may carry burned-in text: the header says so (BurnedInAnnotation YES),
    or it does not say NO and the modality or SOP class commonly carries it."""
    said = text_of(ds, "BurnedInAnnotation").upper()
    if said in ("YES", "NO"):
        return said == "YES"
    sop = str(ds.get("SOPClassUID", ""))
    return text_of(ds, "Modality").upper() in BURNED_IN_MODALITIES or \
        sop.startswith(SECONDARY_CAPTURE_PREFIX)


def first_number(value) -> float:
    try:
        return float(value[0]) if not isinstance(value, (str, bytes)) and len(value) else \
            float(value)
    except TypeError:
        return float(value)


def int_of(ds, keyword: str, default: int) -> int:
    try:
        value = ds.get(keyword, default)
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        raise DicomSkip(invalid(keyword)) from None


def text_of(ds, keyword: str) -> str:
    value = ds.get(keyword, "")
    return str(value).strip() if value is not None else ""


def syntax_name(ds) -> str:
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    return getattr(ts, "name", None) or "unknown transfer syntax"


def sop_name(ds) -> str:
    sop = ds.get("SOPClassUID") or (ds.file_meta.get("MediaStorageSOPClassUID")
                                    if hasattr(ds, "file_meta") else None)
    if str(sop) == MEDIA_STORAGE_DIRECTORY:
        return "a DICOMDIR: the index of a DICOM volume; the images it lists are audited as " \
               "files of the tree or manifest"
    name = getattr(sop, "name", "") if sop is not None else ""
    return name if name and name != str(sop) else "unknown SOP class"


MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # a DICOMDIR


class DicomSkip(Exception):
    """A DICOM file that cannot be audited; ``str()`` is its reason for skipped.csv, written
    by this module and free of header values."""


def invalid(keywords: str) -> str:
    return f"DICOM header value not valid for its VR ({keywords}); the file was left as it is"
