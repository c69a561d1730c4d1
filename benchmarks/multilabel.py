"""Multi-label audits on real human label noise: composites of CIFAR-10N images (issue #37).

Each composite image is made of ``k`` CIFAR-10N images; its given set is the union of their
human labels (``random1``, one annotator each, 17.6% wrong), its true set the union of their
clean labels, so every wrong set comes from a real annotator's mistake (a mistake another part
covers is no mistake of the set). Layouts vary the number and size of the parts:

- ``halves``: two images side by side (64 x 32);
- ``quarters``: a 2 x 2 grid of four images (64 x 64);
- ``big_small``: one image filling a 64 x 64 canvas, a second one 24 x 24 in its corner;
- ``scatter``: two images of random sizes (24-48 px) at random places on a black 96 x 96
  canvas, not overlapping: parts that no fixed grid of regions lines up with.

On the same embeddings (dqaudit's default encoder, as `dqaudit scan` computes them):

- dqaudit: ``Audit.from_arrays(label_sets, embeddings=...)`` (one-vs-rest cross-fitted robust
  probes, per-class confident learning, scoring.multilabel);
- cleanlab: ``cleanlab.filter.find_label_issues(labels, pred_probs, multi_label=True)`` on
  one-vs-rest logistic-regression probabilities, 5-fold ``cross_val_predict``.

Measured per layout and seed: sample-level F1 of the flag against "given set != true set",
(sample, class) F1 of dqaudit's missing / extra pairs, the gold-free share of wrong sets against
the truth, and the verified interval's coverage of the true share over repeated draws
(``--draws``, size ``--verify-size``). With ``--regions`` also dqaudit's region model
(``dqaudit scan --regions``: the regions of ``embed.REGIONS`` embedded as crop files here, the
same pixels ``embed.embed_regions`` crops, passed as ``region_embeddings``), against cleanlab on
the same region embeddings (the whole image's joined with the mean and the max of its regions',
each block L2-normalised).

    .venv/bin/python benchmarks/multilabel.py [--n 3000] [--seeds 0 1 2] [--draws 200] \
        [--layouts halves quarters big_small scatter] [--regions | --regions-only]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import common
import numpy as np
from PIL import Image

LAYOUTS = ("halves", "quarters", "big_small", "scatter")
PARTS = {"halves": 2, "quarters": 4, "big_small": 2, "scatter": 2}
CACHE = Path.home() / ".cache" / "dqaudit" / "bench" / "multilabel"


def compose(images: list[Image.Image], layout: str, rng) -> Image.Image:
    if layout == "scatter":
        out, placed = Image.new("RGB", (96, 96)), []
        for im in images:
            for _ in range(200):  # a free place (two parts of at most 48 px always fit)
                s = int(rng.integers(24, 49))
                x0, y0 = (int(v) for v in rng.integers(0, 96 - s + 1, size=2))
                if all(x0 + s <= a or a + b <= x0 or y0 + s <= c or c + b <= y0
                       for a, c, b in placed):
                    break
            placed.append((x0, y0, s))
            out.paste(im.resize((s, s)), (x0, y0))
    elif layout == "halves":
        out = Image.new("RGB", (64, 32))
        for k, im in enumerate(images):
            out.paste(im.resize((32, 32)), (32 * k, 0))
    elif layout == "quarters":
        out = Image.new("RGB", (64, 64))
        for k, im in enumerate(images):
            out.paste(im.resize((32, 32)), (32 * (k % 2), 32 * (k // 2)))
    else:
        out = images[0].resize((64, 64))
        out.paste(images[1].resize((24, 24)), (40, 40))
    return out


def make_set(table, layout: str, n: int, seed: int) -> dict:
    """Composite files (cached), their given and true sets (N, 10) and part indices."""
    rng = np.random.default_rng([seed, LAYOUTS.index(layout)])
    k = PARTS[layout]
    parts = np.stack([rng.choice(len(table), size=k, replace=False) for _ in range(n)])
    folder = CACHE / f"{layout}-{seed}-{n}"
    folder.mkdir(parents=True, exist_ok=True)
    # the folder's name is not its content: the parts it was composed of are kept beside the
    # images, and a folder holding other parts (an experiment's) is refused, not read
    key = folder / "parts.npy"
    if key.exists() and not np.array_equal(np.load(key), parts):
        raise SystemExit(f"{folder} holds composites of other parts; delete it (and "
                         f"crops8-{folder.name}) and run again")
    if not key.exists():
        np.save(key, parts)
    root = common.SHARED / "cifar10n"
    paths = []
    place = np.random.default_rng([seed, LAYOUTS.index(layout), 1])  # scatter's places
    for i, idx in enumerate(parts):
        path = folder / f"{i:05d}.png"
        image = compose([Image.open(root / table["file"].iat[j]).convert("RGB") for j in idx],
                        layout, place)  # composed even when cached: the places stay in step
        if not path.exists():
            image.save(path)
        paths.append(str(path))
    index = {c: j for j, c in enumerate(common.CLASSES)}
    given = np.zeros((n, 10), dtype=bool)
    true = np.zeros((n, 10), dtype=bool)
    for i, idx in enumerate(parts):
        for j in idx:
            given[i, index[table["random1"].iat[j]]] = True
            true[i, index[table["clean"].iat[j]]] = True
    return {"paths": paths, "given": given, "true": true}


def region_embeddings(paths: list[str], layout: str, seed: int) -> np.ndarray:
    """(N, R, D): the embeddings of the regions ``embed.REGIONS`` of each image, each region
    saved as a crop file (cached) and embedded as ``dqaudit scan`` embeds images."""
    from dqaudit.embed import REGIONS

    folder = CACHE / f"crops8-{layout}-{seed}-{len(paths)}"
    folder.mkdir(parents=True, exist_ok=True)
    crops = []
    for i, p in enumerate(paths):
        image = None
        for r, (left, top, right, bottom) in enumerate(REGIONS):
            path = folder / f"{i:05d}-{r}.png"
            if not path.exists():
                image = image or Image.open(p).convert("RGB")
                w, h = image.size
                image.crop((round(left * w), round(top * h), round(right * w),
                            round(bottom * h))).save(path)
            crops.append(str(path))
    return common.embed(crops).reshape(len(paths), len(REGIONS), -1)


def pooled_features(whole: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """The features cleanlab's logistic regression gets from the same region embeddings:
    [whole, mean of the regions, max of them], each block L2-normalised."""
    def unit(a):
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    return np.hstack([unit(whole), unit(regions.mean(axis=1)),
                      unit(regions.max(axis=1))]) / np.sqrt(3)


def f1(pred: np.ndarray, truth: np.ndarray) -> dict:
    tp = int((pred & truth).sum())
    p = tp / max(int(pred.sum()), 1)
    r = tp / max(int(truth.sum()), 1)
    return {"f1": round(2 * p * r / max(p + r, 1e-12), 4), "precision": round(p, 4),
            "recall": round(r, 4), "n_flagged": int(pred.sum())}


def cleanlab_flags(x: np.ndarray, given: np.ndarray, seed: int) -> np.ndarray:
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.multiclass import OneVsRestClassifier

    probs = cross_val_predict(OneVsRestClassifier(LogisticRegression(max_iter=1000)), x,
                              given.astype(int), cv=KFold(5, shuffle=True, random_state=seed),
                              method="predict_proba")
    labels = [list(np.flatnonzero(r)) for r in given]
    return find_label_issues(labels=labels, pred_probs=probs, multi_label=True)


def coverage(audit, true_sets: np.ndarray, *, draws: int, size: int, seed: int) -> dict:
    """The verified interval over repeated draws, on the audit's values (workflows.verify)."""
    from dqaudit.dataset import set_text
    from dqaudit.workflows import verify

    classes = audit.dataset.classes
    truth = {sid: set_text(r, classes) or "(none)" for sid, r in zip(audit.samples["id"],
                                                                     true_sets)}
    wrong_share = float(np.mean([set_text(r, classes) != g for r, g in
                                 zip(true_sets, audit.samples["label"])]))
    cover, widths = [], []
    for d in range(draws):
        summary = {k: v for k, v in audit.summary.items() if k != "verification"}
        drawn = verify.draw_sample(samples=audit.samples, summary=summary, probs=audit.probs,
                                   frame=None, sample=None, size=size, seed=1000 * seed + d,
                                   uniform_share=audit.config.verify.uniform_share, split=None,
                                   half_width=None)
        summary["verification"] = drawn["design"]
        sample = drawn["sample"]
        sample["verified_label"] = [truth[i] for i in sample["id"]]
        res = verify.estimate_verified(sample, samples=audit.samples, summary=summary,
                                       frame=drawn["frame"], sample=sample,
                                       ledger=audit.ledger, changelog=audit.changelog,
                                       estimator=audit.config.verify.estimator)["verified"]
        cover.append(res["ci_low_at_draw"] <= wrong_share <= res["ci_high_at_draw"])
        widths.append((res["ci_high_at_draw"] - res["ci_low_at_draw"]) / 2)
    return {"coverage": round(float(np.mean(cover)), 3),
            "median_half_width": round(float(np.median(widths)), 4), "draws": draws,
            "size": size}


def run_case(table, layout: str, seed: int, args) -> dict:
    from dqaudit.api import Audit
    from dqaudit.config import AuditConfig, ReportConfig
    from dqaudit.scoring.calibration import expected_calibration_error

    data = make_set(table, layout, args.n, seed)
    t = time.time()
    whole = common.embed(data["paths"])
    embed_s = time.time() - t
    given, true = data["given"], data["true"]
    wrong = (given != true).any(axis=1)
    wrong_pairs = given != true
    out = {"layout": layout, "seed": seed, "n": args.n,
           "true_wrong_set_share": round(float(wrong.mean()), 4),
           "true_wrong_pair_share": round(float(wrong_pairs.mean()), 4),
           "embed_seconds": round(embed_s, 1)}
    # (region embeddings, cleanlab's features)
    variants = {} if args.regions_only else {"whole": (None, whole)}
    if args.regions or args.regions_only:
        t = time.time()
        regions = region_embeddings(data["paths"], layout, seed)
        out["region_embed_seconds"] = round(time.time() - t, 1)
        variants["regions"] = (regions, pooled_features(whole, regions))
    config = AuditConfig(seed=seed, clr=None, report=ReportConfig(enabled=False))
    for name, (regions, x) in variants.items():
        t = time.time()
        audit = Audit.from_arrays([list(np.flatnonzero(r)) for r in given], embeddings=whole,
                                  region_embeddings=regions,
                                  classes=[str(j) for j in range(10)], config=config)
        seconds = time.time() - t
        s = audit.samples
        flag = s["issues"].map(lambda v: "label_error" in list(v)).to_numpy()
        col = {c: j for j, c in enumerate(audit.dataset.classes)}
        pairs = np.zeros_like(given)
        for i, (miss, extra) in enumerate(zip(s["missing_labels"], s["extra_labels"])):
            for c in [v for v in (miss + ";" + extra).split(";") if v]:
                pairs[i, col[c]] = True
        prob = s["label_error_probability"].to_numpy(dtype=float)
        ours = {"flag": f1(flag, wrong), "pairs": f1(pairs, wrong_pairs),
                "ece": round(float(expected_calibration_error(prob, wrong)), 4),
                "missing": f1(pairs & ~given, wrong_pairs & ~given),
                "extra": f1(pairs & given, wrong_pairs & given),
                "gold_free_wrong_set_share": audit.summary["multi_label"]["wrong_set_share"],
                "gold_free_wrong_set_range": audit.summary["multi_label"]["wrong_set_range"],
                "independent_wrong_set_share":
                    audit.summary["multi_label"]["independent_wrong_set_share"],
                "gold_free_wrong_pair_share": audit.summary["multi_label"]["wrong_pair_share"],
                "seconds": round(seconds, 1)}
        if args.draws:
            ours["verified"] = coverage(audit, true, draws=args.draws, size=args.verify_size,
                                        seed=seed)
        out[f"dqaudit_{name}"] = ours
        cl = cleanlab_flags(x, given, seed)
        out[f"cleanlab_{name}"] = {"flag": f1(cl, wrong)}
        out[f"margin_{name}"] = round(ours["flag"]["f1"] - out[f"cleanlab_{name}"]["flag"]["f1"],
                                      4)
        print(layout, seed, name, "F1 ours", ours["flag"]["f1"], "cleanlab",
              out[f"cleanlab_{name}"]["flag"]["f1"], "pairs", ours["pairs"]["f1"],
              "ece", ours["ece"], "share", ours["gold_free_wrong_set_share"], "truth",
              out["true_wrong_set_share"],
              ours.get("verified", ""), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--layouts", nargs="+", default=list(LAYOUTS))
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--verify-size", type=int, default=300)
    ap.add_argument("--regions", action="store_true")
    ap.add_argument("--regions-only", action="store_true",
                    help="measure only the --regions variant (the whole-image one unchanged)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    table = common.cifar10n_table()
    results = [run_case(table, layout, seed, args) for layout in args.layouts
               for seed in args.seeds]
    common.report({"cases": results, "args": vars(args)}, args.json)


if __name__ == "__main__":
    main()
