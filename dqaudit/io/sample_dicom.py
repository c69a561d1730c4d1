"""DICOM files made here, with made-up patients: the writer the tests and benchmarks use, and
``dqaudit sample-data --dicom`` (the shapes of ``sample_data``, as a small radiology set).

Never real patient data: every identifying attribute (PS3.15 Annex E's basic profile: name,
ID, birth date, accession number, institution, physicians, study ids) carries a value of
``MADE_UP`` that a test can look for in everything an audit writes.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from dqaudit.io.sample_data import CLASSES, draw_shape

# distinctive made-up values, one per identifying attribute: none may reach an audit's output
MADE_UP = {
    "PatientName": "Quorblax^Zindelwyn",
    "PatientID": "ZQX-77113-PID",
    "PatientBirthDate": "19010203",
    "AccessionNumber": "ACCZQX99871",
    "InstitutionName": "Frobnitz Memorial Infirmary",
    "ReferringPhysicianName": "Vexwoldt^Ambrosine",
    "StudyID": "STZQX4412",
    "StudyDescription": "Wibblethorpe chest survey",
    "OperatorsName": "Plimsoll^Xandor",
    "StudyDate": "19020304",
    "StudyTime": "101112",
}
SYNTAXES = ("explicit", "implicit", "rle", "jpeg-baseline", "jpeg-lossless", "jpeg-ls",
            "jpeg2000")
SLOPE, INTERCEPT = 2.0, -1024.0  # modality units m = 2 x - 1024 (Hounsfield-like)


def write_dicom(path: str | os.PathLike, grey: np.ndarray, *, photometric: str = "MONOCHROME2",
                syntax: str = "explicit", signed: bool = False, window: bool = True,
                modality: str = "CR", burned_in: str | None = None, frames: int = 1,
                rgb: np.ndarray | None = None, planar: int = 0, seed: int = 0) -> Path:
    """Write one DICOM file of ``grey`` ((H, W) uint8, the picture a viewer should show).

    Stored as 12-bit values through a modality LUT (slope 2, intercept -1024; signed with
    ``signed``), with a window that shows ``grey`` again (``window``), inverted for
    MONOCHROME1; 8-bit for JPEG baseline. ``rgb`` ((H, W, 3) uint8) writes a colour image
    instead (``planar`` configuration). ``frames`` > 1: the picture is the middle frame, the
    others noise. ``syntax``: one of ``SYNTAXES``."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        ComputedRadiographyImageStorage,
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        JPEG2000Lossless,
        JPEGBaseline8Bit,
        JPEGLosslessSV1,
        JPEGLSLossless,
        RLELossless,
        UltrasoundImageStorage,
        generate_uid,
    )

    rng = np.random.default_rng(seed)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    sop = UltrasoundImageStorage if modality == "US" else ComputedRadiographyImageStorage
    ds.file_meta.MediaStorageSOPClassUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    for key, value in MADE_UP.items():
        setattr(ds, key, value)
    ds.Modality = modality
    ds.SeriesNumber, ds.InstanceNumber = 1, seed + 1
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in
    h, w = grey.shape
    ds.Rows, ds.Columns = h, w
    if rgb is not None:
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 3, "RGB"
        ds.PlanarConfiguration = planar
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
        pixels = rgb.transpose(2, 0, 1) if planar else rgb
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    elif syntax == "jpeg-baseline":
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
        if window:
            ds.WindowCenter, ds.WindowWidth = 128, 256  # shows the stored values as they are
        stored = grey if photometric == "MONOCHROME2" else 255 - grey
        buf = io.BytesIO()
        Image.fromarray(stored.astype(np.uint8), "L").save(buf, format="JPEG", quality=95)
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].is_undefined_length = True
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    else:
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        m = grey.astype(np.float64) * 8.0 + INTERCEPT  # modality values of the picture
        if photometric == "MONOCHROME1":
            m = (255 * 8.0 + 2 * INTERCEPT) - m  # the same picture, low values bright
        x = np.rint((m - INTERCEPT) / SLOPE)
        if signed:
            ds.PixelRepresentation, offset = 1, 1024
            x = x - offset
            ds.RescaleIntercept = INTERCEPT + SLOPE * offset
        else:
            ds.PixelRepresentation = 0
            ds.RescaleIntercept = INTERCEPT
        ds.RescaleSlope = SLOPE
        ds.RescaleType = "US"
        if window:
            lo, hi = (INTERCEPT, INTERCEPT + 255 * 8.0)
            if photometric == "MONOCHROME1":
                lo, hi = 255 * 8.0 + 2 * INTERCEPT - hi, 255 * 8.0 + 2 * INTERCEPT - lo
            ds.WindowCenter, ds.WindowWidth = (lo + hi) / 2 + 0.5, hi - lo + 1
        dtype = np.int16 if signed else np.uint16
        stack = [x.astype(dtype)]
        if frames > 1:
            noise = [rng.integers(0, 1000, x.shape).astype(dtype) for _ in range(frames - 1)]
            stack = noise[: frames // 2] + stack + noise[frames // 2:]
            ds.NumberOfFrames = frames
        ds.PixelData = np.ascontiguousarray(np.stack(stack) if frames > 1 else stack[0]).tobytes()
        target = {"rle": RLELossless, "jpeg-ls": JPEGLSLossless, "jpeg2000": JPEG2000Lossless,
                  "jpeg-lossless": JPEGLosslessSV1}.get(syntax)
        if syntax in ("rle", "jpeg2000"):
            ds.compress(target)
        elif target is not None:
            _gdcm_compress(ds, target)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if syntax == "implicit":
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out


def _gdcm_compress(ds, target) -> None:
    """JPEG lossless and JPEG-LS through GDCM (pydicom 3 encodes neither itself)."""
    import tempfile

    import gdcm
    import pydicom

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "a.dcm"), os.path.join(tmp, "b.dcm")
        pydicom.dcmwrite(src, ds, enforce_file_format=True)
        reader = gdcm.ImageReader()
        reader.SetFileName(src)
        if not reader.Read():
            raise RuntimeError("GDCM could not read the file it was given")
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(
            gdcm.TransferSyntax.JPEGLSLossless if "LS" in target.name
            else gdcm.TransferSyntax.JPEGLosslessProcess14_1))
        change.SetInput(reader.GetImage())
        if not change.Change():
            raise RuntimeError(f"GDCM could not encode {target.name}")
        writer = gdcm.ImageWriter()
        writer.SetFileName(dst)
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        if not writer.Write():
            raise RuntimeError("GDCM could not write the encoded file")
        encoded = pydicom.dcmread(dst)
    ds.file_meta.TransferSyntaxUID = encoded.file_meta.TransferSyntaxUID
    ds.PixelData = encoded.PixelData
    ds["PixelData"].is_undefined_length = True


def generate_dicom(out_dir: str | os.PathLike, *, per_class: int = 12, noise_rate: float = 0.1,
                   seed: int = 0) -> dict:
    """``out_dir/images/`` of DICOM files and ``manifest.csv`` (path, label, true_label,
    corrupted, form): the shapes in grey, stored 16-bit with rescale and window, a quarter as
    MONOCHROME1, a third without an extension, each compressed transfer syntax at least once,
    a multi-frame file, an ultrasound image with burned-in text; and three files that cannot be
    audited (a report without pixels, a truncated file, a PNG named .dcm)."""
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    rows = []
    k = 0
    for kind in CLASSES:
        for j in range(per_class):
            grey = np.asarray(draw_shape(kind, rng).convert("L"))
            photometric = "MONOCHROME1" if k % 4 == 1 else "MONOCHROME2"
            syntax = SYNTAXES[k % len(SYNTAXES)]
            name = f"images/{kind}_{j:03d}" + ("" if k % 3 == 2 else ".dcm")
            extra = {}
            if k == 5:
                extra = {"frames": 3}
                syntax = "rle"  # GDCM's JPEG-LS encoder refused this multi-frame file
            elif k == 9:
                extra = {"modality": "US", "burned_in": "YES"}
                grey = _burn_in(grey)
            elif k == 13:
                extra = {"signed": True}
            elif k == 17:
                extra = {"rgb": np.asarray(draw_shape(kind, rng)), "planar": 1}
                syntax = "explicit"
            write_dicom(out / name, grey, photometric=photometric, syntax=syntax, seed=k,
                        **extra)
            rows.append({"path": name, "true_label": kind,
                         "form": f"{syntax} " + ("RGB planar" if "rgb" in extra else photometric)
                         + (" US burned-in" if extra.get("burned_in") else "")
                         + (" 3 frames" if "frames" in extra else "")
                         + (" signed" if extra.get("signed") else "")})
            k += 1
    df = pd.DataFrame(rows)
    labels = df["true_label"].to_numpy(dtype=object).copy()
    flip = rng.choice(len(df), size=int(round(noise_rate * len(df))), replace=False)
    for i in flip:
        others = [c for c in CLASSES if c != labels[i]]
        labels[i] = others[rng.integers(len(others))]
    df["label"] = labels
    df["corrupted"] = df["label"] != df["true_label"]
    bad = _bad_files(out, rng)
    df = pd.concat([df, pd.DataFrame(bad)], ignore_index=True)
    df = df[["path", "label", "true_label", "corrupted", "form"]]
    df.to_csv(out / "manifest.csv", index=False)
    return {"n_files": len(df), "n_corrupted": int(df["corrupted"].sum()),
            "n_unauditable": len(bad), "classes": list(CLASSES)}


def _burn_in(grey: np.ndarray) -> np.ndarray:
    img = Image.fromarray(grey, "L")
    ImageDraw.Draw(img).text((2, 2), "ZQX-77113", fill=255)
    return np.asarray(img)


def _bad_files(out: Path, rng) -> list[dict]:
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import BasicTextSRStorage, ExplicitVRLittleEndian, generate_uid

    rows = []
    label = CLASSES[0]
    # a structured report: a DICOM object without pixels
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = BasicTextSRStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = BasicTextSRStorage, generate_uid()
    for key, value in MADE_UP.items():
        setattr(ds, key, value)
    ds.Modality = "SR"
    (out / "images").mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(out / "images/report.dcm", ds, enforce_file_format=True)
    rows.append({"path": "images/report.dcm", "form": "no pixel data"})
    # a truncated file: half of an image's pixel data
    grey = np.asarray(draw_shape(label, rng).convert("L"))
    whole = write_dicom(out / "images/truncated.dcm", grey).read_bytes()
    (out / "images/truncated.dcm").write_bytes(whole[: len(whole) - grey.size])
    rows.append({"path": "images/truncated.dcm", "form": "truncated"})
    # a PNG named .dcm
    draw_shape(label, rng).save(out / "images/not_dicom.dcm", format="PNG")
    rows.append({"path": "images/not_dicom.dcm", "form": "not DICOM"})
    for row in rows:
        row.update(label=label, true_label=label, corrupted=False)
    return rows
