"""EXIF orientation: every decode path shows a photo upright, as a viewer does (a phone photo
stored rotated with Orientation=6 used to embed sideways). One opening function
(``embed.loader.open_rgb``) applies it; the property is checked over every orientation, sizes
and contents, through each path that decodes files."""

import io

import numpy as np
from conftest import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from dqaudit.embed.encoders import Preprocessing
from dqaudit.embed.gpu_decode import RawJpegDataset
from dqaudit.embed.loader import TRANSPOSE, decode, open_rgb
from dqaudit.imaging.dicom import DicomRead
from dqaudit.report.context import _open_rgb

READ = DicomRead(window="file", frame="middle")
# the stored pixels of an upright picture under each orientation: the inverse transposes
STORE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
         4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
         6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
         8: Image.Transpose.ROTATE_270}


def upright_picture(w: int, h: int, seed: int) -> Image.Image:
    """A picture whose orientation is unmistakable: smooth gradients plus a bright corner."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, w)[None, :, None]
    y = np.linspace(0, 1, h)[:, None, None]
    arr = 200 * x * rng.uniform(0.5, 1, 3) + 50 * y * rng.uniform(0.5, 1, 3)
    arr[: h // 4, : w // 4] = 255
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def stored(upright: Image.Image, turn: int, fmt: str) -> bytes:
    pixels = upright.transpose(STORE[turn]) if turn in STORE else upright
    exif = Image.Exif()
    exif[0x0112] = turn
    buf = io.BytesIO()
    pixels.save(buf, format=fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG"
                                                         else {}))
    return buf.getvalue()


def test_the_stored_and_shown_transposes_are_inverse():
    img = upright_picture(7, 5, 0)
    for turn, shown in TRANSPOSE.items():
        assert np.array_equal(np.asarray(img.transpose(STORE[turn]).transpose(shown)),
                              np.asarray(img)), turn


@settings(max_examples=examples(60), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(turn=st.integers(1, 8), w=st.integers(8, 90), h=st.integers(8, 90),
       seed=st.integers(0, 10_000), fmt=st.sampled_from(["PNG", "JPEG"]))
def test_every_decode_path_shows_the_picture_upright(tmp_path, turn, w, h, seed, fmt):
    upright = upright_picture(w, h, seed)
    path = tmp_path / f"p{turn}_{w}_{h}_{seed}.{fmt.lower()}"
    path.write_bytes(stored(upright, turn, fmt))
    want = np.asarray(upright).astype(int)
    tol = 12 if fmt == "JPEG" else 0  # JPEG's own error, mean absolute
    for shown in (open_rgb(str(path), READ), _open_rgb(str(path), READ)):
        assert shown.size == upright.size
        assert np.abs(np.asarray(shown).astype(int) - want).mean() <= tol
    # the decode workers: the resized input equals the upright picture's
    prep = Preprocessing(image_size=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    arr, stats = decode(str(path), prep, stats=True)
    ref_path = tmp_path / f"ref.{fmt.lower()}"
    ref_path.write_bytes(stored(upright, 1, fmt))
    ref, ref_stats = decode(str(ref_path), prep, stats=True)
    assert np.abs(arr.astype(int) - ref.astype(int)).mean() <= tol
    assert tuple(stats[:2]) == tuple(ref_stats[:2])  # the picture's size as shown
    # the GPU decoder's dataset: a JPEG that needs turning is decoded upright on the CPU
    item = RawJpegDataset([str(path)], [0], prep)[0]
    if fmt == "JPEG" and turn != 1:
        assert item[1] == "pixels" and np.abs(item[2].astype(int) - ref.astype(int)).mean() <= tol
    elif fmt == "JPEG":
        assert item[1] == "jpeg"
