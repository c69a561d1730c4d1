"""Shared fixtures: tiny image datasets built on the fly (tests never read ../shared)."""

import os

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
# FiftyOne reads its config at import: point it at this repo's plugin before any test imports it
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["FIFTYONE_PLUGINS_DIR"] = os.path.join(REPO, "plugins")


# property tests run examples(n) cases: a few hundred in all in the README's test command,
# thousands when benchmarks/fuzz_inputs.py raises DQAUDIT_FUZZ
FUZZ = max(1, int(os.environ.get("DQAUDIT_FUZZ", "1")))


def examples(n: int) -> int:
    return n * FUZZ


def blobs(*, n_per_class: int, d: int, spread: float, seed: int = 0):
    """Embeddings of 3 classes: (n, d) float32 Gaussian clusters around centres drawn at
    ``spread`` times the unit scale, and the (n,) labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, d)) * spread
    y = np.repeat(np.arange(3), n_per_class)
    x = centres[y] + rng.normal(size=(len(y), d))
    return x.astype(np.float32), y


def make_image(path, color, size=32, mode="RGB", fmt=None, seed=0):
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(color)[None, None, :] + rng.normal(0, 20, (size, size, 3)), 0, 255)
    img = Image.fromarray(arr.astype(np.uint8), "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)
    return path


COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def colour_tree(root, per_class=4, classes=COLORS):
    """root/<class>/<class>_<k>.png: one noisy colour per class, ``per_class`` images each."""
    for c, (name, color) in enumerate(classes.items()):
        for k in range(per_class):
            make_image(root / name / f"{name}_{k}.png", color, seed=10 * c + k)
    return root


@pytest.fixture
def class_tree(tmp_path):
    """root/<class>/*.png: 3 classes x 4 images."""
    return colour_tree(tmp_path / "tree")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch, tmp_path_factory):
    monkeypatch.setenv("DQAUDIT_CACHE_DIR", str(tmp_path / "cache"))
    # converted models (OpenVINO) are shared by the session: converting lite0 takes seconds
    monkeypatch.setenv("DQAUDIT_MODEL_CACHE", str(tmp_path_factory.getbasetemp() / "models"))
