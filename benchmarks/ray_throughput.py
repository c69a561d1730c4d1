"""Embed-stage throughput of the Ray engine against the local engine, same images, same run.

Both embed the same CIFAR-10N JPEGs with the bundled encoder (160 px, flip TTA), cache off.
The Ray engine starts a local cluster (all CPUs of this machine, or --ray-address), decodes in
Ray Data tasks and encodes in --encoders actor(s). On a CPU-only machine the two compete for
the same cores, so this measures the engine's overhead; on GPU nodes the encoders move to the
GPUs and decoding spreads over the CPUs of the cluster.

    .venv/bin/python benchmarks/ray_throughput.py [--n 1000] [--ray-address auto]
"""

from __future__ import annotations

import argparse
import json
import time

import common
import numpy as np


def main() -> None:
    from dqaudit.embed import embed_images, load_encoder
    from dqaudit.embed.loader import decode

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--ray-address", default=None)
    ap.add_argument("--num-gpus-per-worker", type=float, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    paths = list(common.cifar10n_table()["path"])[: args.n]
    from dqaudit.embed.ray_engine import embed_images_ray

    rows = {}
    enc = load_encoder("lite0", image_size=160)
    # decode alone, one core: how many images/s one CPU worker can feed an encoder
    t = time.perf_counter()
    for p in paths:
        decode(p, enc.preprocessing)
    rows["decode_only_1_core"] = round(len(paths) / (time.perf_counter() - t), 1)

    t = time.perf_counter()
    local = embed_images(paths, model=enc, use_cache=False, progress=False)
    rows["local"] = round(len(paths) / (time.perf_counter() - t), 1)

    t = time.perf_counter()
    remote = embed_images_ray(paths, model="lite0", image_size=160, use_cache=False,
                              address=args.ray_address,
                              num_gpus_per_worker=args.num_gpus_per_worker, progress=False)
    wall = time.perf_counter() - t
    rows["ray_including_cluster_start"] = round(len(paths) / wall, 1)
    rows["ray_pipeline_only"] = remote.info["images_per_second"]
    rows["max_abs_difference"] = float(np.abs(remote.embeddings - local.embeddings).max())
    print(json.dumps(rows, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
