"""CPU inference backends: torch against OpenVINO (fp32, bf16) for the bundled encoders.

On CIFAR-10N images at the scan's settings (lite0+lite2, 160 px, flip TTA): the whole embed
stage's images/s (no cache), the raw forward rate, the cosine between each backend's and
torch's embeddings per image, the 5-fold linear-probe accuracy on the clean labels with each,
and (``--detect``, all 5,000 images) the label-error flag's F1 on the five noise sets with
each (the change reduced precision makes to what the audit finds).

    python benchmarks/cpu_backend.py [--n 1000] [--model lite0+lite2]
        [--backends torch,openvino,openvino-bf16] [--detect]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cifar10n_table, probe_accuracy, report  # noqa: E402

from dqaudit.embed import embed_images, encode_batch, load_encoder  # noqa: E402
from dqaudit.embed.backends import with_backend  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--model", default="lite0+lite2")
    ap.add_argument("--image-size", type=int, default=160)
    ap.add_argument("--backends", default="torch,openvino,openvino-bf16")
    ap.add_argument("--detect", action="store_true",
                    help="also the flag's F1 on the five noise sets (use --n 5000)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    backends = args.backends.split(",")
    df = cifar10n_table().sample(n=args.n, random_state=0)
    paths, y = list(df["path"]), df["clean"].to_numpy()
    result = {"model": args.model, "image_size": args.image_size, "n": args.n}
    embeddings = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            encoder = with_backend(load_encoder(args.model, image_size=args.image_size),
                                   backend, cache_dir=tmp, required=True)
            batch = np.random.default_rng(0).integers(
                0, 256, (32, 3, args.image_size, args.image_size), dtype=np.uint8)
            encode_batch(encoder, batch, "cpu")  # warm up (OpenVINO compiles here)
            t = time.perf_counter()
            for _ in range(3):
                encode_batch(encoder, batch, "cpu")
            raw = 96 / (time.perf_counter() - t)
            t = time.perf_counter()
            res = embed_images(paths, model=encoder, device="cpu", use_cache=False,
                               progress=False)
            stage = len(paths) / (time.perf_counter() - t)
            embeddings[backend] = res.embeddings
            result[backend] = {"raw_forward_images_per_s": round(raw, 1),
                               "embed_stage_images_per_s": round(stage, 1),
                               "probe_accuracy": round(probe_accuracy(res.embeddings, y), 4)}
            if args.detect:
                result[backend]["flag_f1"] = flag_f1(df, res.embeddings)
            print(backend, result[backend], flush=True)
    base = backends[0]
    for backend in backends[1:]:
        cos = (embeddings[base] * embeddings[backend]).sum(axis=1)
        result[backend][f"cosine_to_{base}_min"] = float(cos.min())
        result[backend][f"cosine_to_{base}_median"] = float(np.median(cos))
        for key in ("embed_stage_images_per_s", "raw_forward_images_per_s"):
            result[backend][f"{key}_speedup"] = round(result[backend][key]
                                                      / result[base][key], 2)
    report(result, args.json)


def flag_f1(df, embeddings) -> dict:
    """F1 of the audit's label-error flag against ``label != clean`` on each noise set."""
    import common
    from sklearn.metrics import f1_score

    from dqaudit.scoring.table import score_dataset

    clean = np.array([common.CLASSES.index(c) for c in df["clean"]])
    out = {}
    for ns in common.NOISE_SETS:
        data = common.labeled_images(df["path"], df[ns])
        flags = score_dataset(data, embeddings, seed=0).table["issues"].map(
            lambda v: "label_error" in v).to_numpy()
        out[ns] = round(float(f1_score(data.labels != clean, flags)), 4)
    return out


if __name__ == "__main__":
    main()
