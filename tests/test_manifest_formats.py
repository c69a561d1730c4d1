"""A manifest reads the same as CSV and as Parquet, whatever its cells hold: missing labels and
splits, numbers as class names, integer columns with gaps (stored as floats in Parquet), and
spaces around values. A property over generated tables, not one case per file."""

import pandas as pd
import pytest
from conftest import examples, make_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dqaudit.io.manifest import load_manifest

LABELS = st.one_of(st.none(), st.sampled_from(["cat", "dog", " cat", "dog ", "3", "7", ""]))
SPLITS = st.one_of(st.none(), st.sampled_from(["train", "test", "val", "", " Train"]))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    return [make_image(root / f"{k}.png", (20 * k, 90, 160), size=16, seed=k).name
            for k in range(8)], root


def read(path):
    data = load_manifest(path)
    return (data.ids, data.labels.tolist(), data.classes, data.splits.tolist(),
            data.label_counts.tolist(), sorted((s["path"], s["reason"]) for s in data.skipped))


@settings(max_examples=examples(40), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.integers(0, 7), LABELS, SPLITS), min_size=4, max_size=12),
       numeric=st.booleans())
def test_csv_and_parquet_of_one_table_read_alike(images, tmp_path, rows, numeric):
    names, root = images
    table = pd.DataFrame({"path": [names[i] for i, _, _ in rows],
                          "label": [lab for _, lab, _ in rows],
                          "split": [s for _, _, s in rows]})
    if numeric:  # class ids as numbers: an integer column with gaps is float in Parquet
        table["label"] = [int(lab) if isinstance(lab, str) and lab.strip().isdigit() else None
                          for lab in table["label"]]
        table["label"] = table["label"].astype("float64")
    csv, parquet = root / "m.csv", root / "m.parquet"
    table.to_csv(csv, index=False, float_format="%.0f")
    table.to_parquet(parquet, index=False)
    outcomes = []
    for path in (csv, parquet):
        try:
            outcomes.append(("ok", read(path)))
        except Exception as exc:  # both must fail alike, with the project's own error
            assert type(exc).__name__ == "InputError", repr(exc)
            outcomes.append(("error", str(exc).replace(str(path), "M")))
    assert outcomes[0] == outcomes[1]
