"""Object-level audit against the image-level audit of the same images, with real human noise.

Scenes are composed from ../shared/data/cifar10n: every CIFAR image pasted once, at a random
size (32-96 px) and place, 3-6 per 256 px canvas of a random colour with noise; its box is
labelled with the image's `aggre`, `random1` or `worst` label, and `clean` is the truth. The
scenes are written as COCO JSON (one file per noise set, the same boxes), and with
--fiftyone as a FiftyOne dataset as well (its audit must give the same flags as the COCO's).
Each box-level audit (`dqaudit scan scenes_<set>.json`, CLR injection off: this measures the
flags) is set beside the image-level audit of the same 5,000 images with the same labels:
flag precision, recall and F1 of label_error against label != clean, AUPRC of the
label-error probability. Repeated for each box margin (--margins) and scene seed (--seeds).

    python benchmarks/detect_boxes.py --out /tmp/boxes --json boxes.json
    python benchmarks/detect_boxes.py --out /tmp/sizes --sizes 4,6,8,12,16,32 --margins 0 \
        --seeds 0 --sets random1 --json sizes.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import average_precision_score, precision_recall_fscore_support

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CLASSES, cifar10n_table, labeled_images  # noqa: E402

SETS = ("aggre", "random1", "worst")
CANVAS = 256


def compose(df, out: Path, *, seed: int, sides: tuple[int, int] = (32, 96)) -> list[dict]:
    """Paste every image of ``df`` once into scenes, at sides ``sides`` (lowest, highest)
    px; returns one record per box."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(df))
    (out / "images").mkdir(parents=True, exist_ok=True)
    records, k, scene = [], 0, 0
    while k < len(order):
        n = int(rng.integers(3, 7))
        bg = rng.integers(0, 256, 3)
        canvas = np.clip(bg[None, None] + rng.normal(0, 18, (CANVAS, CANVAS, 3)), 0, 255)
        img = Image.fromarray(canvas.astype(np.uint8), "RGB")
        placed = []
        for _ in range(n):
            if k >= len(order):
                break
            for _attempt in range(50):  # boxes may not overlap: each box is one image
                side = int(rng.integers(sides[0], sides[1] + 1))
                x, y = (int(v) for v in rng.integers(0, CANVAS - side + 1, 2))
                if all(x + side <= px or px + ps <= x or y + side <= py or py + ps <= y
                       for px, py, ps in placed):
                    break
            else:
                break
            i = int(order[k])
            k += 1
            with Image.open(df["path"].iat[i]) as src:
                img.paste(src.convert("RGB").resize((side, side), Image.Resampling.BICUBIC),
                          (x, y))
            placed.append((x, y, side))
            records.append({"row": i, "scene": scene, "bbox": [x, y, side, side]})
        img.save(out / "images" / f"scene_{scene:04d}.png")
        scene += 1
    return records


def write_coco(df, records, out: Path, noise: str) -> Path:
    n_scenes = max(r["scene"] for r in records) + 1
    doc = {"images": [{"id": s + 1, "file_name": f"images/scene_{s:04d}.png", "width": CANVAS,
                       "height": CANVAS} for s in range(n_scenes)],
           "annotations": [{"id": int(df["idx"].iat[r["row"]]), "image_id": r["scene"] + 1,
                            "bbox": r["bbox"], "area": r["bbox"][2] * r["bbox"][3],
                            "iscrowd": 0,
                            "category_id": CLASSES.index(df[noise].iat[r["row"]]) + 1}
                           for r in records],
           "categories": [{"id": j + 1, "name": c} for j, c in enumerate(CLASSES)]}
    path = out / f"scenes_{noise}.json"
    path.write_text(json.dumps(doc))
    return path


def write_fiftyone(df, records, out: Path, noise: str, name: str) -> str:
    from dqaudit.io.fiftyone_io import import_fiftyone

    fo = import_fiftyone()
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    dataset = fo.Dataset(name)
    by_scene: dict[int, list] = {}
    for r in records:
        x, y, w, h = r["bbox"]
        det = fo.Detection(label=df[noise].iat[r["row"]],
                           bounding_box=[x / CANVAS, y / CANVAS, w / CANVAS, h / CANVAS],
                           cifar_idx=int(df["idx"].iat[r["row"]]))
        by_scene.setdefault(r["scene"], []).append(det)
    dataset.add_samples([fo.Sample(filepath=str(out / "images" / f"scene_{s:04d}.png"),
                                   ground_truth=fo.Detections(detections=dets))
                         for s, dets in sorted(by_scene.items())], progress=False)
    return name


def metrics(err: np.ndarray, flags: np.ndarray, prob: np.ndarray) -> dict:
    p, r, f, _ = precision_recall_fscore_support(err, flags, average="binary", zero_division=0)
    return {"precision": round(float(p), 3), "recall": round(float(r), 3), "f1": round(float(f), 3),
            "auprc": round(float(average_precision_score(err, prob)), 3),
            "n_flagged": int(flags.sum())}


def audit_metrics(audit, truth: dict) -> dict:
    s = audit.samples
    err = np.array([truth[i] for i in s["id"]])
    flags = s["issues"].map(lambda v: "label_error" in v).to_numpy()
    return metrics(err, flags, s["label_error_probability"].to_numpy())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for the scenes")
    ap.add_argument("--margins", default="0,0.1,0.25")
    ap.add_argument("--seeds", default="0,1", help="scene composition seeds")
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--limit", type=int, default=0, help="first N images only (a quick run)")
    ap.add_argument("--fiftyone", action="store_true",
                    help="also audit the first seed's scenes as a FiftyOne dataset")
    ap.add_argument("--sizes", default="",
                    help="instead: the box-size sweep, every box pasted at each of these "
                         "sides (px), audited with no size floor (which floor the encoder "
                         "needs: boxes.MIN_BOX_SIDE)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from dqaudit import Audit
    from dqaudit.config import AuditConfig, ReportConfig

    config = replace(AuditConfig(), clr=None, report=ReportConfig(enabled=False))
    df = cifar10n_table()
    if args.limit:
        df = df.head(args.limit).reset_index(drop=True)
    sets = args.sets.split(",")
    if args.sizes:
        return size_sweep(df, args, config, sets)
    margins = [float(m) for m in args.margins.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    result = {"n_images": len(df), "margins": margins, "seeds": seeds, "image": {}, "boxes": []}
    for noise in sets:  # the image-level audit of the same images and labels
        t = time.time()
        data = labeled_images(list(df["path"]), list(df[noise]))
        data.ids = [str(v) for v in df["idx"]]
        audit = Audit.scan(data, config=config, quiet=True)
        truth = dict(zip(data.ids, (df[noise] != df["clean"]).to_numpy()))
        result["image"][noise] = {**audit_metrics(audit, truth),
                                  "seconds": round(time.time() - t, 1)}
        print(f"image  {noise:8s} {result['image'][noise]}", flush=True)
    truth = {noise: dict(zip(map(str, df["idx"]), (df[noise] != df["clean"]).to_numpy()))
             for noise in sets}
    for seed in seeds:
        root = Path(args.out) / f"seed{seed}"
        records = compose(df, root, seed=seed)
        files = {noise: write_coco(df, records, root, noise) for noise in sets}
        for margin in margins:
            for noise in sets:
                t = time.time()
                audit = Audit.scan(str(files[noise]), config=config, quiet=True,
                                   box_margin=margin)
                row = {"seed": seed, "margin": margin, "set": noise,
                       "n_boxes": len(audit.samples), **audit_metrics(audit, truth[noise]),
                       "seconds": round(time.time() - t, 1)}
                row["f1_minus_image"] = round(row["f1"] - result["image"][noise]["f1"], 3)
                result["boxes"].append(row)
                print(f"boxes  {row}", flush=True)
        if args.fiftyone and seed == seeds[0]:
            noise = sets[0]
            name = write_fiftyone(df, records, root, noise, f"dq_bench_scenes_{noise}")
            margin = margins[0]
            audit = Audit.scan(name, config=config, quiet=True, from_fiftyone=True,
                               box_margin=margin)
            to_cifar = _cifar_ids(name)
            tab = audit.samples
            err = np.array([truth[noise][to_cifar[i]] for i in tab["id"]])
            flags = tab["issues"].map(lambda v: "label_error" in v).to_numpy()
            coco = next(r for r in result["boxes"] if r["seed"] == seed and r["set"] == noise
                        and r["margin"] == margin)
            result["fiftyone"] = {"set": noise, "margin": margin, "n_boxes": len(tab),
                                  **metrics(err, flags,
                                            tab["label_error_probability"].to_numpy()),
                                  "coco": {k: coco[k] for k in ("precision", "recall", "f1",
                                                                "auprc", "n_flagged")}}
            print(f"fiftyone {result['fiftyone']}", flush=True)
    summary = {}
    for margin in margins:
        for noise in sets:
            f1 = [r["f1"] for r in result["boxes"] if r["margin"] == margin and r["set"] == noise]
            gap = [r["f1_minus_image"] for r in result["boxes"]
                   if r["margin"] == margin and r["set"] == noise]
            summary[f"{margin:g}/{noise}"] = {"f1_mean": round(float(np.mean(f1)), 3),
                                              "f1_spread": round(float(np.ptp(f1)), 3),
                                              "gap_mean": round(float(np.mean(gap)), 3)}
    result["summary"] = summary
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


def size_sweep(df, args, config, sets) -> None:
    """Box-level flags when every box has the same small side: where the encoder stops
    seeing what a box holds."""
    from dqaudit import Audit

    seed = int(args.seeds.split(",")[0])
    margin = float(args.margins.split(",")[0])
    truth = {noise: dict(zip(map(str, df["idx"]), (df[noise] != df["clean"]).to_numpy()))
             for noise in sets}
    rows = []
    for side in (int(v) for v in args.sizes.split(",")):
        root = Path(args.out) / f"side{side}"
        records = compose(df, root, seed=seed, sides=(side, side))
        for noise in sets:
            t = time.time()
            audit = Audit.scan(str(write_coco(df, records, root, noise)), config=config,
                               quiet=True, box_margin=margin, min_box_side=1)
            row = {"side": side, "set": noise, **audit_metrics(audit, truth[noise]),
                   "base_rate": round(float(np.mean(list(truth[noise].values()))), 3),
                   "image_size": audit.summary["embedding"].get("image_size"),
                   "seconds": round(time.time() - t, 1)}
            rows.append(row)
            print(f"side   {row}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"n_images": len(df), "margin": margin,
                                               "seed": seed, "sizes": rows}, indent=1))


def _cifar_ids(name: str) -> list[str]:
    """The CIFAR index of every box of FiftyOne dataset ``name``, by Detection id."""
    from dqaudit.io.fiftyone_io import import_fiftyone

    fo = import_fiftyone()
    ids, idx = fo.load_dataset(name).values(["ground_truth.detections.id",
                                             "ground_truth.detections.cifar_idx"])
    return dict(zip((i for row in ids for i in row), (str(v) for row in idx for v in row)))


if __name__ == "__main__":
    main()
