"""Object-level audits of detection datasets: box maths, COCO/YOLO/FiftyOne ingest, crops,
box checks, the audit, relabel by object id, export, FiftyOne attributes and patches view."""

import base64
import io
import json
import os
import shutil
import uuid

import numpy as np
import pandas as pd
import pytest
from bson import ObjectId
from click.testing import CliRunner
from PIL import Image

from dqaudit import Audit
from dqaudit.cli import main
from dqaudit.config import AuditConfig, EmbedConfig, ReportConfig
from dqaudit.errors import DqauditError, InputError
from dqaudit.imaging.boxes import box_problems, duplicate_boxes, iou, match_predictions
from dqaudit.io.ingest import load_dataset
from dqaudit.io.sample_data import generate_scenes
from dqaudit.report.context import BOX_COLOUR, box_thumbnail

FAST = AuditConfig(clr=None, embed=EmbedConfig(model="lite0", num_workers=0),
                   report=ReportConfig(enabled=False))


# --------------------------------------------------------------------------- box maths

def test_iou_of_known_boxes():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 5, 5], [0, 0, 0, 0]])
    np.testing.assert_allclose(iou(a, b)[0], [1.0, 50 / 150, 0.0, 0.0])


def test_box_problems_name_each_reason_and_clip():
    boxes = np.array([[10, 10, 30, 30], [0, 0, 0, 5], [200, 200, 10, 10], [1, 1, 12, 30],
                      [80, 10, 30, 30], [np.nan, 0, 5, 5]])
    clipped, reasons, outside = box_problems(boxes, np.tile([100, 100], (6, 1)))
    assert reasons[0] == "" and reasons[4] == ""
    assert "degenerate" in reasons[1] and "degenerate" in reasons[5]
    assert "wholly outside" in reasons[2]
    assert "too small" in reasons[3]
    assert outside.tolist() == [False, False, True, False, True, False]
    np.testing.assert_allclose(clipped[4], [80, 10, 20, 30])


def test_duplicate_boxes_pair_within_an_image_only():
    boxes = np.array([[0, 0, 10, 10], [0.5, 0, 10, 10], [0, 0, 10, 10], [50, 50, 10, 10]])
    partner, best = duplicate_boxes(boxes, np.array(["a", "a", "b", "a"], dtype=object))
    assert partner.tolist() == [1, 0, -1, -1]
    assert best[0] == pytest.approx(best[1]) and best[0] > 0.9


def test_match_predictions_greedy_by_confidence():
    gt = np.array([[0, 0, 10, 10], [50, 50, 10, 10]])
    pred = np.array([[0, 0, 10, 10], [1, 0, 10, 10], [80, 80, 5, 5]])
    g, p = match_predictions(gt, ["a", "b"], pred, ["b", "a", "a"], [0.6, 0.9, 0.99])
    # class-agnostic: the 0.9 prediction takes box 0, the 0.6 one finds nothing left
    assert g.tolist() == [True, False] and p.tolist() == [False, True, False]
    g, p = match_predictions(gt, ["a", "b"], pred, ["b", "a", "a"], [0.6, 0.9, 0.99],
                             classwise=True)
    assert g.tolist() == [True, False] and p.tolist() == [False, True, False]


# --------------------------------------------------------------------------- ingest

@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    info = generate_scenes(root, n_images=24, seed=3)
    return root, info


def truth_of(root):
    doc = json.loads((root / "scenes.json").read_text())
    return {str(a["id"]): a for a in doc["annotations"]}


def test_coco_boxes_become_samples_with_their_checks(scenes):
    root, info = scenes
    data = load_dataset(root / "scenes.json")
    truth = truth_of(root)
    assert data.unit == "object" and len(data) == info["n_boxes"] - 1  # the 5 px box
    assert data.source["kind"] == "coco" and data.source["n_images"] == 24
    (tiny,) = [s for s in data.skipped if "too small" in s["reason"]]
    assert "box" in tiny["path"]
    ob = data.objects.set_index(pd.Index(data.ids))
    edge = [i for i, a in truth.items() if a["box_issue"] == "box_outside"]
    assert ob.loc[edge, "box_outside"].all() and ob["box_outside"].sum() == 1
    twice = sorted(i for i, a in truth.items() if a["box_issue"] == "duplicate_box")
    assert sorted(ob.index[ob["duplicate_box_of"] != ""]) == twice
    assert ob.loc[twice[0], "duplicate_box_of"] == twice[1]
    # labels are the annotation's category, crops are images of the box with its context
    for i in data.ids[:5]:
        a = truth[i]
        assert data.classes[data.labels[data.ids.index(i)]] in {a["true_label"]} | (
            {c for c in data.classes} if a["corrupted"] else set())
    with Image.open(data.paths[0]) as crop:
        assert crop.size[0] == crop.size[1]  # squared with context
    # the report shows a box in its image with the box drawn (magenta at its edge)
    row = ob.iloc[0]
    uri = box_thumbnail(row["image_path"], row[["box_x", "box_y", "box_w", "box_h"]].tolist())
    thumb = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB")
    arr = np.asarray(thumb)
    assert (np.all(arr == BOX_COLOUR, axis=2)).sum() > 2 * min(thumb.size)


def test_crops_are_cached_by_image_box_and_margin(scenes):
    root, _ = scenes
    first = load_dataset(root / "scenes.json")
    stamp = {p: os.stat(p).st_mtime_ns for p in first.paths[:10]}
    again = load_dataset(root / "scenes.json")
    assert again.paths == first.paths
    assert all(os.stat(p).st_mtime_ns == t for p, t in stamp.items())
    wider = load_dataset(root / "scenes.json", box_margin=0.5)
    assert not set(wider.paths) & set(first.paths)


def test_yolo_folder_gives_the_same_boxes_as_coco(scenes, tmp_path):
    root, _ = scenes
    doc = json.loads((root / "scenes.json").read_text())
    names = [c["name"] for c in doc["categories"]]
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "data.yaml").write_text("names: [" + ", ".join(names) + "]\n")
    sizes = {}
    for img in doc["images"]:
        src = root / img["file_name"]
        (tmp_path / "images" / "train" / src.name).write_bytes(src.read_bytes())
        sizes[img["id"]] = (img["width"], img["height"], src.stem)
    lines: dict = {}
    for a in doc["annotations"]:
        w, h, stem = sizes[a["image_id"]]
        x, y, bw, bh = a["bbox"]
        lines.setdefault(stem, []).append(
            f"{a['category_id'] - 1} {(x + bw / 2) / w} {(y + bh / 2) / h} {bw / w} {bh / h}")
    for stem, rows in lines.items():
        (tmp_path / "labels" / "train" / f"{stem}.txt").write_text("\n".join(rows) + "\nbad\n")
    coco = load_dataset(root / "scenes.json")
    yolo = load_dataset(tmp_path)
    assert yolo.source["kind"] == "yolo" and len(yolo) == len(coco)
    assert set(yolo.splits) == {"train"}
    assert sorted(yolo.labels.tolist()) == sorted(coco.labels.tolist())
    assert any(s["reason"].startswith("not 'class") for s in yolo.skipped)


def test_bad_detection_inputs_name_the_fix(tmp_path, scenes):
    bad = tmp_path / "bad.json"
    bad.write_text("{\"images\": []}")
    with pytest.raises(InputError, match="not a COCO instances file"):
        load_dataset(bad)
    bad.write_text("{not json")
    with pytest.raises(InputError, match="cannot read it as JSON"):
        load_dataset(bad)
    root, _ = scenes
    moved = tmp_path / "moved.json"
    moved.write_text((root / "scenes.json").read_text())
    with pytest.raises(InputError, match="--image-root"):
        load_dataset(moved)
    assert len(load_dataset(moved, image_root=root)) > 0
    with pytest.raises(InputError, match="--from-fiftyone"):
        load_dataset(root / "scenes.json", pred_field="predictions")
    # two images with one id: their boxes would be cut from the wrong file
    twin = json.loads((root / "scenes.json").read_text())
    twin["images"].append(dict(twin["images"][0], file_name=twin["images"][1]["file_name"]))
    (tmp_path / "twin.json").write_text(json.dumps(twin))
    with pytest.raises(InputError, match="image id 1 is given to more than one image"):
        load_dataset(tmp_path / "twin.json", image_root=root)
    # a YOLO export without its images/ folder
    (tmp_path / "yolo" / "labels").mkdir(parents=True)
    (tmp_path / "yolo" / "data.yaml").write_text("names: [a, b]\n")
    with pytest.raises(InputError, match="keeps its images in"):
        load_dataset(tmp_path / "yolo")
    # a category no box uses is not a class of the audit
    extra = json.loads((root / "scenes.json").read_text())
    extra["categories"].append({"id": 99, "name": "unused"})
    (tmp_path / "extra.json").write_text(json.dumps(extra))
    assert "unused" not in load_dataset(tmp_path / "extra.json", image_root=root).classes
    # per-box problems are listed with their reason and the rest is audited
    work = tmp_path / "work"
    shutil.copytree(root, work)
    doc = json.loads((work / "scenes.json").read_text())
    (work / doc["images"][0]["file_name"]).write_bytes(b"not an image")
    doc["images"][1]["width"] = 999
    second = [a for a in doc["annotations"] if a["image_id"] == doc["images"][2]["id"]]
    second[0]["bbox"] = "oops"
    (work / "scenes.json").write_text(json.dumps(doc))
    data = load_dataset(work / "scenes.json")
    reasons = [s["reason"] for s in data.skipped]
    per_image = lambda k: sum(a["image_id"] == doc["images"][k]["id"]  # noqa: E731
                              for a in doc["annotations"])
    assert reasons.count("its image cannot be read: not a decodable image (unknown or corrupt "
                         "format)") == per_image(0)
    assert sum("size in the annotations" in r for r in reasons) == per_image(1)
    assert "degenerate box (a coordinate is not a number)" in reasons
    clean = load_dataset(root / "scenes.json")
    assert len(data) + len(data.skipped) == len(clean) + len(clean.skipped)  # none lost
    assert len(data) < len(clean)


# --------------------------------------------------------------------------- the audit

@pytest.fixture(scope="module")
def scanned(scenes, tmp_path_factory):
    root, _ = scenes
    out = tmp_path_factory.mktemp("audit") / "a"
    res = CliRunner().invoke(main, ["scan", str(root / "scenes.json"), "--out", str(out), "-q",
                                    "--model", "lite0", "--num-workers", "0", "--no-pdf",
                                    "--no-clr"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return root, out


def test_scan_flags_the_corrupted_boxes_and_the_box_checks(scanned):
    root, out = scanned
    truth = truth_of(root)
    samples = pd.read_parquet(out / "samples.parquet")
    corrupted = samples["id"].map(lambda i: truth[i]["corrupted"]).to_numpy()
    flagged = samples["issues"].map(lambda v: "label_error" in v).to_numpy()
    # shapes are easy: most corrupted boxes are found, few clean ones are flagged
    assert flagged[corrupted].mean() >= 0.6 and flagged[~corrupted].mean() <= 0.1
    issues = samples["issues"].map(list)
    assert issues.map(lambda v: "duplicate_box" in v).sum() == 2
    assert issues.map(lambda v: "box_outside" in v).sum() == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"]["source"]["unit"] == "object"
    assert summary["issue_counts"]["duplicate_box"] == 2
    assert "too small" in open(out / "skipped.csv").read()
    html = (out / "report.html").read_text()
    assert "Box checks" in html and "boxes of 24 images" in html


def test_relabel_by_object_id_keeps_the_boxes_and_exports_coco(scanned, tmp_path):
    root, out = scanned
    work = tmp_path / "a"
    shutil.copytree(out, work)
    audit = Audit.load(work)
    assert audit.dataset.unit == "object"
    row = audit.samples.sort_values("review_score", ascending=False).iloc[0]
    pd.DataFrame({"id": [row["id"]], "label": [row["suggested_label"]]}).to_csv(
        tmp_path / "c.csv", index=False)
    res = CliRunner().invoke(main, ["relabel", "apply", str(work), str(tmp_path / "c.csv"),
                                    "--annotator", "ana"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    after = Audit.load(work)
    queue = after.review_queue(budget=3)
    assert row["id"] not in set(queue["id"])  # reviewed
    assert {"image_id", "box_x", "box_w"} <= set(queue.columns)
    assert all(os.path.exists(p) for p in queue["thumbnail"])
    changed = after.samples.set_index("id").loc[row["id"]]
    assert changed["label"] == row["suggested_label"]
    assert changed["box_w"] == row["box_w"] and changed["image_id"] == row["image_id"]
    assert after.dataset.objects is not None
    with pytest.raises(DqauditError, match="--to coco"):
        after.export(to="folder", dest=str(tmp_path / "f"))
    after.export(to="coco", dest=str(tmp_path / "clean.json"))
    doc = json.loads((tmp_path / "clean.json").read_text())
    ann = next(a for a in doc["annotations"] if str(a["id"]) == row["id"])
    names = {c["id"]: c["name"] for c in doc["categories"]}
    assert names[ann["category_id"]] == row["suggested_label"]
    assert len(doc["annotations"]) == len(after.samples)
    # the cleaned file is a dataset dqaudit reads again
    assert len(load_dataset(tmp_path / "clean.json")) == len(after.samples)


def test_verified_estimate_at_box_level(scanned, tmp_path):
    root, out = scanned
    work = tmp_path / "a"
    shutil.copytree(out, work)
    truth = truth_of(root)
    run = lambda *a: CliRunner().invoke(main, [str(v) for v in a],  # noqa: E731
                                        catch_exceptions=False)
    assert run("verify", work, "--size", 30).exit_code == 0
    sample = pd.read_csv(work / "verify_sample.csv", dtype=str, keep_default_na=False)
    assert sample["image_path"].str.endswith(".jpg").all()
    sample["verified_label"] = sample["id"].map(lambda i: truth[i]["true_label"])
    sample.to_csv(tmp_path / "checked.csv", index=False)
    res = run("verify", work, "--apply", tmp_path / "checked.csv", "--json")
    assert res.exit_code == 0, res.output
    verified = json.loads((work / "summary.json").read_text())["verified"]
    wrong = (sample["verified_label"] != sample["given_label"]).sum()
    assert verified["n_verified"] == 30 and verified["n_errors_found"] == wrong
    assert verified["ci_low_at_draw"] <= verified["estimate_at_draw"] <= verified["ci_high_at_draw"]


# --------------------------------------------------------------------------- FiftyOne

def scene_boxes(fo, root) -> list[tuple[str, list]]:
    """Per image of the scenes in ``root``: its path and its boxes as FiftyOne Detections
    (scenes.json's boxes, relative to the 256 px image)."""
    doc = json.loads((root / "scenes.json").read_text())
    cats = {c["id"]: c["name"] for c in doc["categories"]}
    return [(str(root / img["file_name"]),
             [fo.Detection(label=cats[a["category_id"]], bounding_box=[v / 256 for v in a["bbox"]])
              for a in doc["annotations"] if a["image_id"] == img["id"]])
            for img in doc["images"]]


def scenes_dataset(fo, name: str, root):
    """FiftyOne dataset ``name`` of the scenes, their boxes in ``ground_truth``."""
    ds = fo.Dataset(name)
    ds.add_samples([fo.Sample(filepath=path, ground_truth=fo.Detections(detections=gt))
                    for path, gt in scene_boxes(fo, root)], progress=False)
    return ds


@pytest.fixture
def fo_name():
    from dqaudit.io.fiftyone_io import import_fiftyone

    fo = import_fiftyone()
    name = f"dqaudit-test-{uuid.uuid4().hex[:8]}"
    yield name
    if fo.dataset_exists(name):
        fo.delete_dataset(name)


def test_fiftyone_detections_audit_writes_attributes_views_and_predictions(scenes, fo_name,
                                                                            tmp_path):
    from fiftyone import ViewField as F

    from dqaudit.cli.app import (
        apply_label,
        draw_verification_for,
        selected_objects,
        verify_selected,
    )
    from dqaudit.io.fiftyone_io import import_fiftyone
    from dqaudit.io.fiftyone_runs import delete_results

    fo = import_fiftyone()
    root, _ = scenes
    ds = fo.Dataset(fo_name)
    samples = []
    for k, (path, gt) in enumerate(scene_boxes(fo, root)):
        pred = [fo.Detection(label=d.label, bounding_box=d.bounding_box, confidence=0.99)
                for d in gt]
        if k == 0:  # one box the detector does not see, one object nobody boxed
            pred = pred[1:] + [fo.Detection(label="star", bounding_box=[0.9, 0.9, 0.05, 0.05],
                                            confidence=0.98)]
        samples.append(fo.Sample(filepath=path, tags=["train"],
                                 ground_truth=fo.Detections(detections=gt),
                                 predictions=fo.Detections(detections=pred)))
    ds.add_samples(samples, progress=False)
    first_box = ds.first().ground_truth.detections[0].id
    audit = Audit.scan(fo_name, from_fiftyone=True, label_field="ground_truth",
                       pred_field="predictions", config=FAST, out_dir=tmp_path / "a",
                       quiet=True)
    assert audit.dataset.unit == "object" and first_box in set(audit.samples["id"])
    assert "possible_spurious" in list(audit.samples.set_index("id").loc[first_box, "issues"])
    assert audit.summary["issue_counts"]["possible_spurious"] == 1
    missing = audit.summary["dataset"]["source"]["predictions"]["possible_missing"]
    assert len(missing) == 1 and missing[0]["label"] == "star"
    ds.reload()
    assert set(ds.list_saved_views()) >= {"dq_suspect_objects", "dq_suspects",
                                           "dq_possible_missing"}
    patches = ds.load_saved_view("dq_suspect_objects")
    n_flagged = int(audit.samples["flagged"].sum())
    assert len(patches) == n_flagged
    scores = patches.values("ground_truth.dq_review_score")
    assert scores == sorted(scores, reverse=True)
    det = ds.filter_labels("ground_truth", F("_id") == ObjectId(first_box)
                           ).first().ground_truth.detections[0]
    row = audit.samples.set_index("id").loc[first_box]
    assert det["dq_noisiness"] == pytest.approx(row["noisiness"])
    assert det["dq_suggested"] == row["suggested_label"]
    assert sum(ds.values("dq_flagged_objects")) == n_flagged
    assert len(ds.load_saved_view("dq_possible_missing")) == 1
    # the App's review acts on boxes: patches picked in dq_suspect_objects, or labels
    top = patches.first()
    picked = selected_objects(patches, [top.id], [], label_field="ground_truth")
    assert picked == [top.ground_truth.id]
    assert selected_objects(ds, [], [{"label_id": first_box, "field": "ground_truth"}],
                            label_field="ground_truth") == [first_box]
    new = next(c for c in audit.dataset.classes if c != top.ground_truth.label)
    assert apply_label(ds, [], new, object_ids=picked) == 1
    det = ds.filter_labels("ground_truth", F("_id") == ObjectId(picked[0])
                           ).first().ground_truth.detections[0]
    assert det.label == new and det["dq_previous_label"] == top.ground_truth.label
    assert Audit.load(tmp_path / "a").samples.set_index("id").at[picked[0], "label"] == new
    # the verification sample: the images holding its boxes are tagged, a box is verified
    drawn = draw_verification_for(ds, size=8)
    table = pd.read_csv(drawn["csv"], dtype=str, keep_default_na=False)
    assert {"image_path", "box_x", "box_w"} <= set(table.columns)  # which box to check
    holding = set(audit.samples.set_index("id").loc[table["id"], "image_path"])
    assert set(ds.match_tags("dq_verify").values("filepath")) == holding
    res = verify_selected(ds, [], None, object_ids=[table["id"].iloc[0]])
    assert res["recorded"] == 1 and not res["estimated"]
    removed = delete_results(fo_name)
    assert "ground_truth.detections.dq_noisiness" in removed["fields"]
    assert "dq_noisiness" not in ds.first().ground_truth.detections[0].field_names


def test_coco_scan_into_fiftyone_adds_the_boxes(scanned, fo_name, tmp_path):
    from dqaudit.io.fiftyone_io import import_fiftyone

    fo = import_fiftyone()
    root, out = scanned
    audit = Audit.load(out)
    audit.out_dir = None  # write FiftyOne only
    written = audit.to_fiftyone(fo_name)
    assert written["unit"] == "object"
    ds = fo.load_dataset(fo_name)
    assert len(ds) == 24 and ds.count("ground_truth.detections") == len(audit.samples)
    ids = set(ds.values("ground_truth.detections.dq_object_id", unwind=True))
    assert ids == set(audit.samples["id"])
    assert len(ds.load_saved_view("dq_suspect_objects")) == int(audit.samples["flagged"].sum())


def test_the_app_audits_a_detections_field_box_by_box(scenes, fo_name, tmp_path):
    import fiftyone.operators as foo

    from dqaudit.io.fiftyone_io import import_fiftyone

    fo = import_fiftyone()
    root, _ = scenes
    ds = scenes_dataset(fo, fo_name, root)
    result = foo.execute_operator("@dqaudit/dqaudit/run_audit", ctx={
        "dataset": ds, "view": ds.view(),
        "params": {"label_field": "ground_truth", "model": "lite0", "device": "cpu",
                   "pdf": False, "clr": False, "out_dir": str(tmp_path / "app")}}).result
    assert result["suspects_view"] == "dq_suspect_objects"
    assert result["n_samples"] == ds.count("ground_truth.detections") - 1  # the 5 px box
    ds.reload()
    assert len(ds.load_saved_view("dq_suspect_objects")) == result["flagged_count"]


def test_a_sub_audit_of_a_view_writes_its_boxes_under_its_own_names(scenes, fo_name, tmp_path):
    from dqaudit.cli.app import audit_fiftyone
    from dqaudit.io.fiftyone_io import import_fiftyone

    fo = import_fiftyone()
    root, _ = scenes
    ds = scenes_dataset(fo, fo_name, root)
    part = ds.limit(16)
    audit = audit_fiftyone(part, run="first16", config=FAST, out_dir=tmp_path / "a",
                           quiet=True)
    assert audit.dataset.unit == "object"
    ds.reload()
    assert "dq_first16_suspect_objects" in ds.list_saved_views()
    assert "dq_suspect_objects" not in ds.list_saved_views()  # the whole dataset's: untouched
    audited = [d for s in part for d in s.ground_truth.detections]
    assert all(d["dq_first16_noisiness"] is not None for d in audited if d.id in
               set(audit.samples["id"]))
    outside = [d for s in ds.skip(16) for d in s.ground_truth.detections]
    assert all(d.get_field("dq_first16_noisiness") is None for d in outside)
