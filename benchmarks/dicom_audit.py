"""DICOM input: every file audited, MONOCHROME1 = MONOCHROME2, scores as good as on PNG, speed.

CIFAR-10N images (grey, as radiographs are) with a human noisy label set are written twice:
as 8-bit PNGs and as DICOM files made with pydicom (``dqaudit.io.sample_dicom.write_dicom``:
16-bit stored values with rescale slope/intercept and window tags; a quarter MONOCHROME1,
a fifth signed, a third without extension; every transfer syntax in turn: explicit, implicit,
RLE, JPEG baseline, JPEG lossless, JPEG-LS, JPEG 2000; made-up patient data in every
identifying attribute). Both are scanned as a user would (``Audit.scan`` of a manifest) and
compared: files audited, AUROC of ``noisiness`` for "label != clean", the embed stage's
rate. Apart from that: the same pixels stored as MONOCHROME1 and MONOCHROME2 embedded alike
(cosine), and the embed rate on 512 x 512 images (PNG, uncompressed DICOM, JPEG 2000 DICOM).

    python benchmarks/dicom_audit.py --n 2000 --seeds 0 1 --noise random1 random2 [--json f]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cifar10n_table, report  # noqa: E402

from dqaudit.api import Audit  # noqa: E402
from dqaudit.config import AuditConfig, EmbedConfig, ReportConfig  # noqa: E402
from dqaudit.io.sample_dicom import SYNTAXES, write_dicom  # noqa: E402


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positive.astype(int), score))


def write_sets(df: pd.DataFrame, root: Path, *, noise: str) -> tuple[Path, Path]:
    """PNG and DICOM copies of the grey images, and a manifest for each."""
    png_rows, dcm_rows = [], []
    for k, row in enumerate(df.itertuples()):
        with Image.open(row.path) as img:
            grey = np.asarray(img.convert("L"))
        png = root / "png" / f"{k:05d}.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grey, "L").save(png)
        name = f"{k:05d}" + ("" if k % 3 == 2 else ".dcm")
        write_dicom(root / "dcm" / name, grey, syntax=SYNTAXES[k % len(SYNTAXES)],
                    photometric="MONOCHROME1" if k % 4 == 1 else "MONOCHROME2",
                    signed=(k % 5 == 3 and SYNTAXES[k % len(SYNTAXES)] != "jpeg-baseline"),
                    seed=k)
        png_rows.append({"path": f"png/{k:05d}.png", "label": getattr(row, noise),
                         "clean": row.clean})
        dcm_rows.append({"path": f"dcm/{name}", "label": getattr(row, noise), "clean": row.clean})
    pd.DataFrame(png_rows).to_csv(root / "png.csv", index=False)
    pd.DataFrame(dcm_rows).to_csv(root / "dcm.csv", index=False)
    return root / "png.csv", root / "dcm.csv"


def scan(manifest: Path, out: Path, *, seed: int, model: str) -> dict:
    config = AuditConfig(seed=seed, embed=EmbedConfig(model=model, use_cache=False),
                         clr=None, report=ReportConfig(enabled=False))
    t0 = time.perf_counter()
    audit = Audit.scan(manifest, out_dir=out, config=config, quiet=True)
    seconds = time.perf_counter() - t0
    truth = pd.read_csv(manifest).set_index("path")["clean"]
    samples = audit.samples
    rel = [str(Path(p).relative_to(manifest.parent)) for p in samples["path"]]
    wrong = (samples["label"].to_numpy() != truth.loc[rel].to_numpy())
    return {"n_files": int(len(truth)), "n_audited": int(len(samples)),
            "n_skipped": int(audit.summary["n_skipped"]),
            "auroc_noisiness": round(auroc(samples["noisiness"].to_numpy(), wrong), 4),
            "embed_images_per_second": audit.summary["embedding"]["images_per_second"],
            "scan_seconds": round(seconds, 1)}


def mono_cosine(df: pd.DataFrame, root: Path, *, n: int, model: str) -> dict:
    """The same pixels stored as MONOCHROME1 and as MONOCHROME2, embedded: cosine per image."""
    from dqaudit.embed import embed_images, load_encoder

    paths = {"MONOCHROME1": [], "MONOCHROME2": []}
    for k, row in enumerate(df.head(n).itertuples()):
        with Image.open(row.path) as img:
            grey = np.asarray(img.convert("L"))
        for ph in paths:
            paths[ph].append(str(write_dicom(root / "mono" / f"{ph}_{k:05d}.dcm", grey,
                                             photometric=ph, syntax=SYNTAXES[k % 7],
                                             seed=k)))
    enc = load_encoder(model, image_size=64)
    e1 = embed_images(paths["MONOCHROME1"], model=enc, use_cache=False, progress=False)
    e2 = embed_images(paths["MONOCHROME2"], model=enc, use_cache=False, progress=False)
    cos = np.sum(e1.embeddings * e2.embeddings, axis=1)
    return {"n": n, "min_cosine": round(float(cos.min()), 6),
            "mean_cosine": round(float(cos.mean()), 6)}


def speed(df: pd.DataFrame, root: Path, *, n: int, model: str) -> dict:
    """The decode workers' cost per image (``loader.decode``, ms, one core) of the same pictures
    at 512 and 2048 px as PNG, JPEG and DICOM (uncompressed 16-bit, RLE, JPEG 2000, JPEG-LS),
    and the embed stage's rate (images/s, cold cache) at 512 px for PNG and DICOM."""
    from dqaudit.embed import embed_images, load_encoder
    from dqaudit.embed.encoders import Preprocessing
    from dqaudit.embed.loader import decode

    prep = Preprocessing(image_size=224, mean=(0.5,) * 3, std=(0.5,) * 3)
    out = {"decode_ms": {}, "embed_images_per_second_512px": {}}
    for side in (512, 2048):
        sets = {k: [] for k in ("png", "jpeg", "dicom", "dicom_rle", "dicom_jpeg2000",
                                "dicom_jpeg_ls")}
        for k, row in enumerate(df.head(n if side == 512 else 20).itertuples()):
            with Image.open(row.path) as img:
                grey = img.convert("L").resize((side, side), Image.Resampling.BICUBIC)
            base = root / f"speed{side}" / f"{k:05d}"
            base.parent.mkdir(parents=True, exist_ok=True)
            grey.save(f"{base}.png")
            grey.save(f"{base}.jpg", quality=90)
            sets["png"].append(f"{base}.png")
            sets["jpeg"].append(f"{base}.jpg")
            g = np.asarray(grey)
            for name, syntax in (("dicom", "explicit"), ("dicom_rle", "rle"),
                                 ("dicom_jpeg2000", "jpeg2000"), ("dicom_jpeg_ls", "jpeg-ls")):
                sets[name].append(str(write_dicom(f"{base}_{syntax}.dcm", g, syntax=syntax)))
        out["decode_ms"][side] = {}
        for name, paths in sets.items():
            t0 = time.perf_counter()
            for p in paths[:20]:
                decode(p, prep, stats=True)
            out["decode_ms"][side][name] = round(1000 * (time.perf_counter() - t0)
                                                 / len(paths[:20]), 1)
        if side == 512:
            enc = load_encoder(model, image_size=224)
            for name in ("png", "dicom", "dicom_jpeg2000"):
                res = embed_images(sets[name], model=enc, use_cache=False, progress=False)
                out["embed_images_per_second_512px"][name] = res.info["images_per_second"]
    out["n_embed"] = n
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--noise", nargs="+", default=["random1", "random2"])
    ap.add_argument("--model", default="lite0+lite2")
    ap.add_argument("--speed-n", type=int, default=200)
    ap.add_argument("--json")
    args = ap.parse_args()
    table = cifar10n_table()
    result = {"runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            df = table.sample(n=args.n, random_state=seed).reset_index(drop=True)
            for noise in args.noise:
                root = Path(tmp) / f"s{seed}_{noise}"
                png, dcm = write_sets(df, root, noise=noise)
                run = {"seed": seed, "noise": noise,
                       "png": scan(png, root / "audit_png", seed=seed, model=args.model),
                       "dicom": scan(dcm, root / "audit_dcm", seed=seed, model=args.model)}
                run["auroc_difference"] = round(run["dicom"]["auroc_noisiness"]
                                                - run["png"]["auroc_noisiness"], 4)
                result["runs"].append(run)
                print(run, flush=True)
        result["mono1_vs_mono2"] = mono_cosine(table, Path(tmp), n=200, model="lite0")
        result["speed_lite0"] = speed(table, Path(tmp), n=args.speed_n, model="lite0")
    report(result, args.json)


if __name__ == "__main__":
    main()
