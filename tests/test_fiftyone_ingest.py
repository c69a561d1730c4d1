"""Against FiftyOne's real database (set up by scripts/setup.sh), not mocks."""

import uuid

import pytest

from dqaudit.errors import InputError
from dqaudit.io.fiftyone_io import import_fiftyone
from dqaudit.io.ingest import load_dataset


@pytest.fixture
def fo_dataset(class_tree):
    fo = import_fiftyone()
    ds = fo.Dataset(f"dqaudit-test-{uuid.uuid4().hex[:8]}")
    samples = []
    for i, p in enumerate(sorted(class_tree.rglob("*.png"))):
        s = fo.Sample(filepath=str(p), tags=["train" if i % 3 else "test"])
        if i != 0:
            s["ground_truth"] = fo.Classification(label=p.parent.name)
        samples.append(s)
    ds.add_samples(samples)
    yield ds
    ds.delete()


def test_load_fiftyone_dataset(fo_dataset):
    data = load_dataset(fo_dataset.name, from_fiftyone=True)
    assert len(data) == 11 and data.classes == ["blue", "green", "red"]
    assert data.skipped[0]["reason"] == "no label in field 'ground_truth'"
    assert set(data.ids) <= set(fo_dataset.values("id"))
    assert set(data.splits) == {"train", "test"}


def test_fiftyone_errors(fo_dataset):
    with pytest.raises(InputError, match="does not exist"):
        load_dataset("dqaudit-no-such-dataset", from_fiftyone=True)
    with pytest.raises(InputError, match="no field 'labels'"):
        load_dataset(fo_dataset.name, from_fiftyone=True, label_field="labels")


def test_a_saved_view_records_its_name_and_stages(fo_dataset):
    fo = import_fiftyone()
    fo_dataset.save_view("no_green", fo_dataset.match(
        fo.ViewField("ground_truth.label") != "green"))
    data = load_dataset(fo_dataset.name, from_fiftyone=True, saved_view="no_green")
    assert "green" not in data.classes and len(data) == 7
    view = data.source["view"]
    assert view[0] == "saved view 'no_green'" and view[1].startswith("1. Match(")
    assert data.source["location"] == fo_dataset.name
    assert load_dataset(fo_dataset.name, from_fiftyone=True).source["view"] is None


def test_a_classifications_field_is_read_as_label_sets(class_tree):
    """Label sets in FiftyOne (Classifications) are read as sets, --multi-label implied (the
    whole round trip: tests/test_multilabel.py)."""
    fo = import_fiftyone()
    ds = fo.Dataset(f"dqaudit-test-{uuid.uuid4().hex[:8]}")
    try:
        files = sorted(class_tree.rglob("*.png"))
        ds.add_samples([fo.Sample(filepath=str(p), tags=[], tags_set=fo.Classifications(
            classifications=[fo.Classification(label=p.parent.name)])) for p in files])
        data = load_dataset(ds.name, from_fiftyone=True, label_field="tags_set")
        assert data.multi_label and len(data) == len(files)
        assert data.classes == sorted({p.parent.name for p in files})
        assert (data.label_sets.sum(axis=1) == 1).all()
    finally:
        ds.delete()
