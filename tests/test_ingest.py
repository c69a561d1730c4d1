import numpy as np
import pandas as pd
import pytest
from conftest import COLORS, make_image

from dqaudit.errors import InputError
from dqaudit.io.ingest import load_dataset


def test_class_tree(class_tree):
    data = load_dataset(class_tree)
    assert len(data) == 12
    assert data.classes == ["blue", "green", "red"]
    assert data.class_counts() == {"blue": 4, "green": 4, "red": 4}
    assert data.label_counts.sum() == 12 and (data.label_counts.sum(1) == 1).all()
    assert all(p.startswith(str(class_tree)) for p in data.paths)
    assert data.ids[0] == "blue/blue_0.png"
    assert set(data.splits) == {""}


def test_split_layout(tmp_path):
    root = tmp_path / "d"
    for split in ("train", "test"):
        for name, color in COLORS.items():
            make_image(root / split / name / "a.png", color)
    data = load_dataset(root)
    assert len(data) == 6 and data.n_classes == 3
    assert sorted(set(data.splits)) == ["test", "train"]


def test_manifest_csv_and_parquet(tmp_path, class_tree):
    rows = [{"file": f"tree/{c}/{c}_{k}.png", "y": c, "subset": "train" if k < 3 else "val"}
            for c in COLORS for k in range(4)]
    df = pd.DataFrame(rows)
    df.to_csv(tmp_path / "m.csv", index=False)
    df.to_parquet(tmp_path / "m.parquet")
    for name in ("m.csv", "m.parquet"):
        data = load_dataset(tmp_path / name, label_column="y", split_column="subset")
        assert len(data) == 12 and data.n_classes == 3
        assert (data.splits == "val").sum() == 3
        assert data.ids[0] == "tree/red/red_0.png"


def test_manifest_count_columns(tmp_path, class_tree):
    rows = []
    for c in COLORS:
        for k in range(4):
            counts = {f"n_{o}": (3 if o == c else 0) for o in COLORS}
            counts["n_blue"] += 1 if c != "blue" else 0
            rows.append({"path": f"tree/{c}/{c}_{k}.png", **counts})
    pd.DataFrame(rows).to_csv(tmp_path / "counts.csv", index=False)
    data = load_dataset(tmp_path / "counts.csv")
    assert data.has_multiple_annotations
    assert data.label_counts.shape == (12, 3)
    assert data.label_counts.sum(1).tolist() == [4] * 8 + [3] * 4
    # label = majority of the counts
    assert [data.classes[i] for i in data.labels[:4]] == ["red"] * 4


def test_manifest_one_row_per_annotation(tmp_path, class_tree):
    p = "tree/red/red_0.png"
    q = "tree/blue/blue_0.png"
    pd.DataFrame({"path": [p, p, p, q, q], "label": ["red", "green", "red", "red", "blue"]}
                 ).to_csv(tmp_path / "ann.csv", index=False)
    data = load_dataset(tmp_path / "ann.csv")
    assert len(data) == 2
    red = data.classes.index("red")
    assert data.labels[0] == red and data.label_counts[0].tolist() == [0, 1, 2]
    # a 1-1 tie goes to the newest annotation (the last row), as in the corrections ledger
    assert data.classes[data.labels[1]] == "blue"


@pytest.mark.parametrize("case", ["missing_dir", "empty", "single_class", "unknown_column",
                                  "missing_paths", "no_class_folders"])
def test_bad_input_errors(tmp_path, class_tree, case):
    if case == "missing_dir":
        src, kw, needle = tmp_path / "nope", {}, "no such file"
    elif case == "empty":
        (tmp_path / "e" / "a").mkdir(parents=True)
        (tmp_path / "e" / "b").mkdir(parents=True)
        src, kw, needle = tmp_path / "e", {}, "no image files"
    elif case == "single_class":
        make_image(tmp_path / "s" / "only" / "a.png", (1, 2, 3))
        src, kw, needle = tmp_path / "s", {}, "only one class"
    elif case == "unknown_column":
        pd.DataFrame({"path": ["tree/red/red_0.png"], "label": ["red"]}).to_csv(
            tmp_path / "m.csv", index=False)
        src, kw, needle = tmp_path / "m.csv", {"label_column": "nope"}, "no label column 'nope'"
    elif case == "missing_paths":
        pd.DataFrame({"path": ["tree/red/red_0.png", "gone.png"], "label": ["red", "blue"]}
                     ).to_csv(tmp_path / "m.csv", index=False)
        src, kw, needle = tmp_path / "m.csv", {}, "do not exist"
    else:
        (tmp_path / "flat").mkdir()
        make_image(tmp_path / "flat" / "a.png", (1, 2, 3))
        src, kw, needle = tmp_path / "flat", {}, "no class folders"
    with pytest.raises(InputError) as err:
        load_dataset(src, **kw)
    message = str(err.value)
    assert needle in message and "\n" not in message
    assert str(src.name) in message


def test_cheap_problems_are_skipped_not_fatal(class_tree):
    (class_tree / "red" / "empty.jpg").write_bytes(b"")
    (class_tree / "red" / "notes.txt").write_text("hello")
    data = load_dataset(class_tree)
    assert len(data) == 12
    reasons = {s["path"].rsplit("/", 1)[1]: s["reason"] for s in data.skipped}
    assert reasons["empty.jpg"].startswith("empty file")
    assert reasons["notes.txt"].startswith("not an image file")


def test_input_is_never_modified(class_tree):
    before = {p: p.stat().st_mtime_ns for p in class_tree.rglob("*")}
    load_dataset(class_tree)
    assert {p: p.stat().st_mtime_ns for p in class_tree.rglob("*")} == before


def test_subset_keeps_alignment(class_tree):
    data = load_dataset(class_tree)
    keep = np.arange(len(data)) % 2 == 0
    sub = data.subset(keep, extra_skipped=[{"path": "x", "reason": "y"}])
    assert len(sub) == 6 and sub.ids == data.ids[::2]
    assert (sub.labels == data.labels[::2]).all() and sub.skipped[-1]["reason"] == "y"
