"""DICOM in, patient data never out: the display pipeline, detection by content, bad files as
rows of skipped.csv, burned-in text withheld, and a grep of everything an audit writes for the
made-up patient of every fixture."""

import hashlib
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from dqaudit.cli import main
from dqaudit.imaging import dicom
from dqaudit.imaging.dicom import DicomRead, DicomSkip, read_dicom
from dqaudit.io.sample_data import draw_shape
from dqaudit.io.sample_dicom import MADE_UP, SYNTAXES, generate_dicom, write_dicom

FILE = DicomRead(window="file", frame="middle")


@pytest.fixture(scope="module")
def grey():
    return np.asarray(draw_shape("star", np.random.default_rng(3)).convert("L"))


def picture(path, read=FILE):
    img, record = read_dicom(path, read)
    return np.asarray(img).astype(int), record


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_every_transfer_syntax_shows_the_picture_through_its_own_window(tmp_path, grey, syntax):
    """Stored 12-bit through the modality LUT, windowed by the file's own window: the picture
    comes back exactly (lossless syntaxes) or within JPEG's error (baseline, 8-bit);
    MONOCHROME1 (inverted storage) shows the same picture as MONOCHROME2, signed as unsigned."""
    tol = 8 if syntax == "jpeg-baseline" else 0
    for photometric in ("MONOCHROME2", "MONOCHROME1"):
        for signed in ((False,) if syntax == "jpeg-baseline" else (False, True)):
            path = write_dicom(tmp_path / f"{photometric}{signed}.dcm", grey, syntax=syntax,
                               photometric=photometric, signed=signed)
            pixels, record = picture(path)
            assert pixels.shape == grey.shape + (3,)
            assert np.abs(pixels[..., 0] - grey).max() <= tol, (photometric, signed)
            assert record["photometric"] == photometric and record["window"] == "file"


def test_windows_frames_and_colour(tmp_path, grey):
    path = write_dicom(tmp_path / "a.dcm", grey)
    # minmax stretches the picture's own range; a narrow explicit window saturates
    stretched, rec = picture(path, DicomRead(window="minmax", frame="middle"))
    assert rec["window"] == "minmax" and stretched.min() == 0 and stretched.max() == 255
    narrow, rec = picture(path, DicomRead(window="0,100", frame="middle"))
    assert rec["window"] == "0,100" and (narrow[..., 0] == 255).mean() > (grey > 140).mean() - .01
    # no window in the file: the image's range
    _, rec = picture(write_dicom(tmp_path / "b.dcm", grey, window=False))
    assert rec["window"] == "minmax"
    # a window the file gives but that cannot be used (width 0): the image's own range too,
    # over the values it holds (not over every value its bits could hold)
    import pydicom

    unusable = write_dicom(tmp_path / "w0.dcm", grey)
    ds = pydicom.dcmread(unusable)
    ds.WindowWidth = 0
    ds.save_as(unusable)
    shown, rec = picture(unusable)
    assert rec["window"] == "minmax" and np.array_equal(shown, stretched)
    # multi-frame: the middle frame is the picture, first and numbered frames as asked
    multi = write_dicom(tmp_path / "m.dcm", grey, frames=3, syntax="rle")
    middle, rec = picture(multi)
    assert rec["frames"] == 3 and rec["frame"] == 1 and np.array_equal(middle[..., 0], grey)
    assert picture(multi, DicomRead(window="file", frame="first"))[1]["frame"] == 0
    assert picture(multi, DicomRead(window="file", frame="2"))[1]["frame"] == 2
    with pytest.raises(DicomSkip, match="frame 7 asked for, but the file has 3"):
        picture(multi, DicomRead(window="file", frame="7"))
    rgb = np.asarray(draw_shape("ring", np.random.default_rng(0)))
    for planar in (0, 1):
        shown, rec = picture(write_dicom(tmp_path / f"c{planar}.dcm", grey, rgb=rgb,
                                         planar=planar))
        assert np.array_equal(shown, rgb) and rec["window"] == "colour"
    # YBR_FULL colour comes out as RGB (within the colour conversion's rounding)
    from pydicom.pixels import convert_color_space

    ybr = write_dicom(tmp_path / "ybr.dcm", grey, rgb=rgb)
    ds = pydicom.dcmread(ybr)
    ds.PixelData = convert_color_space(rgb, "RGB", "YBR_FULL").tobytes()
    ds.PhotometricInterpretation = "YBR_FULL"
    ds.save_as(ybr)
    shown, rec = picture(ybr)
    assert rec["photometric"] == "YBR_FULL" and np.abs(shown - rgb).max() <= 2
    for bad in ("wide", "1,0", "nan,5"):
        with pytest.raises(ValueError, match="window"):
            DicomRead(window=bad, frame="middle")
    with pytest.raises(ValueError, match="frame"):
        DicomRead(window="file", frame="-1")


def test_linear_and_sigmoid_windows_follow_the_standard():
    m = np.array([-1000.0, 39.5, 40.0, 239.0, 240.0, 1000.0])
    v = dicom._window(m, 40.0, 400.0, sigmoid=False)
    # C.11.2.1.2.1: 0 at or below c - 0.5 - (w-1)/2, 255 above c - 0.5 + (w-1)/2
    assert v[0] == 0 and v[-1] == 255 and v[4] == 255 and abs(int(v[1]) - 128) <= 1
    s = dicom._window(np.array([40.0]), 40.0, 400.0, sigmoid=True)
    assert abs(int(s[0]) - 128) <= 1


def test_dicom_is_recognised_by_content_in_a_class_tree(tmp_path, grey):
    tree = tmp_path / "tree"
    rng = np.random.default_rng(0)
    for kind in ("circle", "cross"):
        for k in range(6):
            g = np.asarray(draw_shape(kind, rng).convert("L"))
            # PACS exports: no extension at all, or .dcm
            write_dicom(tree / kind / (f"IM{k:04d}" if k % 2 else f"{k}.dcm"), g, seed=k)
    # a class folder holding a DICOM volume: DICOMDIR and the files it lists in nested folders
    import pydicom
    from pydicom.fileset import FileSet

    volume = FileSet()
    for k in range(6):
        g = np.asarray(draw_shape("ring", rng).convert("L"))
        volume.add(pydicom.dcmread(write_dicom(tmp_path / "staging" / f"{k}.dcm", g, seed=k)))
    volume.write(tree / "ring")
    (tree / "circle" / "fake.dcm").write_bytes(b"\x89PNG not dicom")
    (tree / "circle" / "notes.txt").write_text("a note")
    out = tmp_path / "audit"
    res = CliRunner().invoke(main, ["scan", str(tree), "--out", str(out), "-q", "--no-pdf",
                                    "--no-clr", "--num-workers", "0", "--model", "lite0"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_samples"] == 18 and summary["dicom"]["n_files"] == 18
    reasons = dict(pd.read_csv(out / "skipped.csv")[["path", "reason"]].values)
    assert "a DICOMDIR: the index of a DICOM volume" in reasons[str(tree / "ring" / "DICOMDIR")]
    assert "no DICM marker" in reasons[str(tree / "circle" / "fake.dcm")]
    assert "not an image file" in reasons[str(tree / "circle" / "notes.txt")]


def test_files_that_cannot_be_audited_are_rows_with_a_reason(tmp_path, grey, monkeypatch):
    generate_dicom(tmp_path / "d", per_class=4, noise_rate=0)
    # a value not valid in its VR (a DS that is no number), in an attribute the pixel pipeline
    # needs: the file's bytes edited, as a faulty modality would write them
    bad_vr = write_dicom(tmp_path / "d" / "images" / "bad_vr.dcm", grey)
    raw = bad_vr.read_bytes()
    assert raw.count(b"-3.5") == 1  # the window centre written by write_dicom
    bad_vr.write_bytes(raw.replace(b"-3.5", b"x3.5"))
    manifest = pd.read_csv(tmp_path / "d" / "manifest.csv")
    manifest.loc[len(manifest)] = {"path": "images/bad_vr.dcm", "label": "circle",
                                   "true_label": "circle", "corrupted": False, "form": "bad VR"}
    manifest.to_csv(tmp_path / "d" / "manifest.csv", index=False)
    before = {p: p.read_bytes() for p in (tmp_path / "d").rglob("*") if p.is_file()}
    out = tmp_path / "audit"
    res = CliRunner().invoke(main, ["scan", str(tmp_path / "d" / "manifest.csv"), "--out",
                                    str(out), "-q", "--no-pdf", "--no-clr", "--num-workers", "0",
                                    "--model", "lite0"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    reasons = {Path(p).name: r for p, r in pd.read_csv(out / "skipped.csv")[["path", "reason"]]
               .values}
    assert reasons["report.dcm"] == "DICOM object without pixel data (Basic Text SR Storage)"
    assert reasons["truncated.dcm"].startswith("truncated DICOM pixel data")
    assert "no DICM marker" in reasons["not_dicom.dcm"]
    assert "WindowCenter" in reasons["bad_vr.dcm"] and "not valid for its VR" in reasons[
        "bad_vr.dcm"]
    assert len(reasons) == 4, reasons
    assert json.loads((out / "summary.json").read_text())["n_samples"] == 24
    # nothing in the input changed
    assert before == {p: p.read_bytes() for p in (tmp_path / "d").rglob("*") if p.is_file()}
    # a compressed file whose decoder is missing names the package to install
    jpeg = write_dicom(tmp_path / "j.dcm", grey, syntax="jpeg-lossless")

    def no_decoder(ds, index):
        raise RuntimeError("Unable to decode the pixel data as the following plugins are "
                           "missing dependencies: gdcm, pylibjpeg")

    monkeypatch.setattr(dicom, "_pixels", no_decoder)
    with pytest.raises(DicomSkip, match="decoder is not installed: pip install python-gdcm"):
        read_dicom(jpeg, FILE)


def _everything_written(out: Path) -> str:
    """All text of every file in the audit folder: PDFs by their text, tables by their cells,
    everything else by its bytes."""
    from pypdf import PdfReader

    parts = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        if path.suffix == ".pdf":
            parts.append(" ".join(page.extract_text() or "" for page in PdfReader(path).pages))
        elif path.suffix == ".parquet":
            parts.append(pd.read_parquet(path).to_csv())
        parts.append(path.read_bytes().decode("latin-1"))
        parts.append(str(path))
    return "\n".join(parts)


def test_no_patient_data_reaches_any_output(tmp_path):
    """Every identifying attribute of every fixture carries a distinctive made-up value; none of
    them appears in anything the audit writes (files, PDF text, the review queue and its
    thumbnails, the FiftyOne dataset), in what it prints, or in its log."""
    from dqaudit.io.fiftyone_io import import_fiftyone

    fo = import_fiftyone()
    data = tmp_path / "dicom"
    generate_dicom(data, per_class=4)
    digests = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in data.rglob("*")
               if p.is_file()}
    out = tmp_path / "audit"
    name = f"dqaudit-dicom-{uuid.uuid4().hex[:8]}"
    try:
        res = subprocess.run([sys.executable, "-m", "dqaudit", "scan",
                              str(data / "manifest.csv"), "--out", str(out), "--model", "lite0",
                              "--num-workers", "0", "--fiftyone", name, "--clr-repeats", "2",
                              "--clr-grid", "0,0.1,0.2"], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-2000:]
        queue = subprocess.run([sys.executable, "-m", "dqaudit", "relabel", "queue", str(out),
                                "--budget", "10"], capture_output=True, text=True)
        assert queue.returncode == 0, queue.stderr[-2000:]
        dataset = fo.load_dataset(name)
        fiftyone_text = json.dumps(dataset.to_dict(), default=str) + json.dumps(
            dataset.info, default=str)
        # the App is shown PNG renderings in the audit folder, the DICOM file's path beside it
        filepaths = dataset.values("filepath")
        assert all(Path(p).suffix == ".png" and Path(p).is_relative_to(out) for p in filepaths)
        assert all(Path(p).exists() for p in filepaths)
        assert set(dataset.values("dq_source_path")) <= {str(p) for p in data.rglob("*")}
        # the App's review acts on the DICOM file the rendering shows
        from dqaudit.cli.app import apply_label

        first = dataset.first()
        apply_label(dataset, [first.id], "star", annotator="tester")
        ledger = pd.read_csv(out / "corrections.csv")
        ids = pd.read_parquet(out / "samples.parquet").set_index("path")["id"]
        assert ledger["id"].tolist() == [ids[first["dq_source_path"]]]
        assert ledger["label"].tolist() == ["star"]
        fiftyone_text += json.dumps(fo.load_dataset(name).to_dict(), default=str)
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)
    written = "\n".join([_everything_written(out), res.stdout, res.stderr, queue.stdout,
                         queue.stderr, fiftyone_text])
    # a made-up value anywhere in the outputs; a number (a date, a time) only as a number of
    # its own, not as the digits inside another one (a timing 0.101112 is no StudyTime)
    def found(variant: str) -> bool:
        if not variant.isdigit():
            return variant in written
        return re.search(rf"(?<![\d.]){variant}(?!\d)", written) is not None

    hits = {key: value for key, value in MADE_UP.items()
            for variant in (value, value.replace("^", " "), value.split("^")[0])
            if found(variant)}
    assert hits == {}
    assert (out / "report.pdf").exists() and (out / "review_queue.csv").exists()
    # the input is never modified, nor written beside
    assert digests == {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in data.rglob("*")
                       if p.is_file()}


def test_burned_in_images_get_no_thumbnail_unless_asked(tmp_path):
    data = tmp_path / "d"
    generate_dicom(data, per_class=4)
    manifest = pd.read_csv(data / "manifest.csv")
    us = manifest.loc[manifest["form"].str.contains("burned-in"), "path"].tolist()
    assert len(us) == 1  # the ultrasound image with burned-in text
    out = tmp_path / "audit"
    run = CliRunner().invoke(main, ["scan", str(data / "manifest.csv"), "--out", str(out), "-q",
                                    "--no-pdf", "--no-clr", "--num-workers", "0", "--model",
                                    "lite0", "--top-n", "100"], catch_exceptions=False)
    assert run.exit_code == 0, run.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dicom"]["burned_in"] == 1 and summary["dicom"]["modalities"]["US"] == 1
    html = (out / "report.html").read_text()
    assert "may carry burned-in patient text (header, ultrasound, secondary capture) are " \
           "withheld" in html
    assert "file paths shown (they can identify patients" in html
    from dqaudit.report.context import Thumbnails

    rec = {"path": str(data / us[0])}
    assert Thumbnails().of(rec) == (None, True)
    uri, withheld = Thumbnails(burned_in=True).of(rec)
    assert uri.startswith("data:image/png") and not withheld
    again = CliRunner().invoke(main, ["report", str(out), "--no-pdf", "--thumbnails",
                                      "burned-in", "--redact", "paths"], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    html = (out / "report.html").read_text()
    assert "are shown, as asked" in html and "file paths not shown (redacted)" in html
    # the cleaned export into FiftyOne shows the audit's pictures too, the DICOM files beside
    from dqaudit.io.fiftyone_io import import_fiftyone

    fo = import_fiftyone()
    name = f"dqaudit-dicom-export-{uuid.uuid4().hex[:8]}"
    try:
        res = CliRunner().invoke(main, ["relabel", "export", str(out), "--to", "fiftyone",
                                        "--dest", name], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        exported = fo.load_dataset(name)
        assert all(Path(p).suffix == ".png" and Path(p).is_relative_to(out)
                   for p in exported.values("filepath"))
        assert sorted(exported.values("dq_source_path")) == sorted(
            str(p) for p in pd.read_parquet(out / "samples.parquet")["path"])
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


def test_sample_data_makes_a_dicom_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if True:
        res = CliRunner().invoke(main, ["sample-data", "d", "--dicom"], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        manifest = pd.read_csv("d/manifest.csv")
        files = [Path("d") / p for p in manifest["path"]]
        assert len(files) == 75 and all(f.exists() for f in files)
        assert sum(dicom.is_dicom(f) for f in files) == 74  # one PNG named .dcm, on purpose
        assert any(f.suffix == "" for f in files)
        forms = " ".join(manifest["form"])
        assert all(s in forms for s in SYNTAXES) and "MONOCHROME1" in forms
