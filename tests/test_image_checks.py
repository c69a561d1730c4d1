"""Image checks: scores on images broken on purpose, exact duplicates by decoded pixels, and
the junk rule (a blank image is no label error and gets no suggested label)."""

import json

import numpy as np
import pandas as pd
from click.testing import CliRunner
from conftest import colour_tree
from PIL import Image, ImageFilter, ImageOps

from dqaudit.cli import main
from dqaudit.imaging.image_checks import (
    IMAGE_ISSUES,
    exact_duplicate_groups,
    image_flags,
    image_scores,
    image_stats,
    stat_column,
)


def shape(seed=0, size=64):
    rng = np.random.default_rng(seed)
    arr = np.clip(rng.normal(120, 40, (size, size, 3)), 0, 255).astype(np.uint8)
    arr[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = rng.integers(0, 256, 3)
    return Image.fromarray(arr)


def flags_of(images):
    stats = np.stack([image_stats(im) for im in images])
    return image_flags(image_scores(stats)), stats


def test_each_check_flags_its_corruption_and_spares_the_untouched():
    untouched = [shape(i) for i in range(40)]
    broken = {
        "blank": Image.new("RGB", (64, 64), (0, 0, 0)),
        "dark": untouched[0].point(lambda v: int(v * 0.2)),
        "bright": untouched[1].point(lambda v: min(255, int(v * 3 + 150))),
        "blurry": untouched[2].filter(ImageFilter.GaussianBlur(6)),
        "low_information": ImageOps.posterize(ImageOps.grayscale(untouched[3]), 1).convert(
            "RGB"),
        "grayscale": ImageOps.grayscale(untouched[4]).convert("RGB"),
        "odd_size": untouched[5].resize((512, 32)),
    }
    flags, _ = flags_of(untouched + list(broken.values()))
    n = len(untouched)
    for k, issue in enumerate(broken):
        assert flags[issue][n + k], issue
    for issue in IMAGE_ISSUES:
        assert not flags[issue][:n].any(), issue
    # a blank image is blank, not also dark or low-information
    assert not flags["dark"][n] and not flags["low_information"][n]


def test_grayscale_counts_only_in_a_colour_dataset():
    grays = [ImageOps.grayscale(shape(i)).convert("RGB") for i in range(10)]
    flags, _ = flags_of(grays)
    assert not flags["grayscale"].any()


def test_exact_duplicates_share_their_decoded_pixels():
    a, b = shape(1), shape(2)
    _, stats = flags_of([a, b, a.copy(), b.point(lambda v: v ^ 1), a])
    groups = exact_duplicate_groups(stat_column(stats, "pixel_hash"))
    assert groups.tolist() == [0, -1, 0, -1, 0]
    assert exact_duplicate_groups(np.array([np.nan, np.nan])).tolist() == [-1, -1]


def test_a_scan_finds_broken_images_and_calls_none_a_label_error(tmp_path):
    class_tree = colour_tree(tmp_path / "tree", per_class=6)
    Image.new("RGB", (32, 32), (0, 0, 0)).save(class_tree / "red" / "black.png")
    Image.open(class_tree / "blue" / "blue_1.png").save(class_tree / "green" / "copy.png")
    out = tmp_path / "o"
    res = CliRunner().invoke(main, ["scan", str(class_tree), "--out", str(out), "-q",
                                    "--model", "lite0", "--num-workers", "0", "--no-pdf",
                                    "--no-clr"])
    assert res.exit_code == 0, res.output
    samples = pd.read_parquet(out / "samples.parquet").set_index("id")
    black = samples.loc["red/black.png"]
    assert "blank" in black["issues"] and "label_error" not in black["issues"]
    assert black["suggested_label"] == "" and black["blank_score"] == 1.0
    copy = samples.loc["green/copy.png"]
    assert {"exact_duplicate", "conflicting_duplicate"} <= set(copy["issues"])
    assert copy["exact_dup_group"] == samples.loc["blue/blue_1.png", "exact_dup_group"] >= 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["issue_counts"]["blank"] == 1 and summary["exact_duplicate_groups"] == 1
    assert "Broken images" in (out / "report.html").read_text()
    # the measurements are saved and survive a re-rank
    assert np.load(out / "image_stats.npy").shape == (len(samples), 9)
    fix = pd.DataFrame({"id": ["green/copy.png"], "label": ["blue"]})
    fix.to_csv(tmp_path / "fix.csv", index=False)
    assert CliRunner().invoke(main, ["relabel", "apply", str(out), str(tmp_path / "fix.csv"),
                                     "-q"]).exit_code == 0
    again = pd.read_parquet(out / "samples.parquet").set_index("id")
    assert "blank" in again.loc["red/black.png", "issues"]
    assert "conflicting_duplicate" not in again.loc["green/copy.png", "issues"]


def test_checks_choose_what_a_scan_reports(class_tree, tmp_path):
    Image.new("RGB", (32, 32), (0, 0, 0)).save(class_tree / "red" / "black.png")
    out = tmp_path / "o"
    res = CliRunner().invoke(main, ["scan", str(class_tree), "--out", str(out), "-q",
                                    "--model", "lite0", "--num-workers", "0", "--no-report",
                                    "--checks", "images"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    counts = summary["issue_counts"]
    assert counts["blank"] == 1 and counts["label_error"] == 0 and counts["duplicate"] == 0
    assert summary["clr"] is None and summary["config"]["score"]["checks"] == ["images"]
    bad = CliRunner().invoke(main, ["scan", str(class_tree), "--out", str(tmp_path / "b"),
                                    "--checks", "labels,pixels"])
    assert bad.exit_code == 3 and "unknown check 'pixels'" in bad.output
