"""The embed stage on Ray Data, for datasets beyond one machine's GPU.

Pipeline: the paths still to embed (the cache is consulted first, with the same keys as the
local engine) -> ``map_batches`` decode tasks on CPU workers (``loader.decode``, the local
engine's decoder) -> ``map_batches`` encoder actors, each holding one encoder and calling
``encode_batch``, the local engine's forward path, on its GPU (or CPU) -> the driver streams
the results back and writes cache shards every ``shard_size`` rows, so a killed run resumes
where it stopped, under either engine.

Ray is an optional extra (``pip install "dqaudit[ray]"``). Without an address Ray starts a
local cluster, so the same command runs on a laptop; ``address="auto"`` or ``"HOST:PORT"``
joins an existing cluster (every node needs dqaudit installed and the image paths readable).
"""

from __future__ import annotations

import os
import time

import numpy as np

from dqaudit.embed import (
    EmbeddingResult,
    ShardWriter,
    default_batch_size,
    encode_batch,
    progress_bar,
    start_embedding,
)
from dqaudit.embed.encoders import DEFAULT_ENCODER, load_encoder
from dqaudit.embed.loader import decode, describe_failure
from dqaudit.errors import DqauditError
from dqaudit.imaging.image_checks import N_STATS


def _require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise DqauditError('--engine ray needs Ray Data; install it with: '
                           'pip install "dqaudit[ray]"') from exc
    return ray


def _decode_batch(batch: dict, preprocessing) -> dict:
    """CPU stage: paths -> (B, 3, S, S) uint8 images; failures get a zero image and a reason."""
    size = preprocessing.image_size
    images = np.zeros((len(batch["index"]), 3, size, size), dtype=np.uint8)
    stats = np.full((len(batch["index"]), N_STATS), np.nan)
    errors = []
    for j, path in enumerate(batch["path"]):
        try:
            images[j], stats[j] = decode(str(path), preprocessing, stats=True)
            errors.append("")
        except Exception as exc:  # a per-file problem, never fatal (as in the local engine)
            errors.append(describe_failure(exc))
    return {"index": batch["index"], "image": images, "stats": stats,
            "error": np.array(errors, dtype=object)}


class _EncodeActor:
    """GPU (or CPU) stage: one encoder per actor, loaded once."""

    def __init__(self, spec: dict, device: str, threads: int):
        import torch

        # Ray pins OMP_NUM_THREADS to the actor's CPU share; a CPU encoder gets that many
        # torch threads explicitly (measured: 1 thread runs lite0 at 2/3 the 2-thread rate)
        torch.set_num_threads(max(1, threads))
        self.device = device
        self.encoder = load_encoder(spec["model"], image_size=spec["image_size"],
                                    flip_tta=spec["flip_tta"])
        module = self.encoder.module.to(device)
        if not device.startswith("cuda"):
            module.to(memory_format=torch.channels_last)

    def __call__(self, batch: dict) -> dict:
        good = np.array([not e for e in batch["error"]], dtype=bool)
        emb = np.zeros((len(good), self.encoder.dim), dtype=np.float32)
        if good.any():
            emb[good] = encode_batch(self.encoder, batch["image"][good], self.device)
        return {"index": batch["index"], "embedding": emb, "stats": batch["stats"],
                "error": batch["error"]}


def _quiet_ray_data(ray) -> None:
    """dqaudit shows its own progress bar; Ray Data's bars and periodic logs would repeat it."""
    import logging

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def embed_images_ray(
    paths: list[str],
    *,
    model: str = DEFAULT_ENCODER,
    image_size: int | None = None,
    flip_tta: bool = True,
    address: str | None = None,
    num_encoders: int | None = None,
    num_gpus_per_worker: float | None = None,
    num_cpus: int | None = None,
    batch_size: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    shard_size: int = 1024,
    progress: bool = True,
    keys: list[str] | None = None,
) -> EmbeddingResult:
    """Embed ``paths`` on a Ray cluster; same result and cache as ``embed_images``.

    ``address``: None starts (or reuses) a local Ray instance with ``num_cpus`` CPUs; "auto" or
    "HOST:PORT" joins a running cluster. ``num_encoders`` encoder actors run at once [default:
    one per GPU in the cluster, else 1]; each takes ``num_gpus_per_worker`` GPUs [default: 1
    when the cluster has GPUs, else 0 (CPU encoders)].
    """
    ray = _require_ray()
    t0 = time.perf_counter()
    encoder = load_encoder(model, image_size=image_size, flip_tta=flip_tta)
    state = start_embedding(paths, encoder, cache_dir=cache_dir, use_cache=use_cache, keys=keys)
    emb, ok, failures, stats = state.embeddings, state.ok, state.failures, state.stats

    todo = np.asarray(state.todo, dtype=np.int64)
    started_here = False
    if len(todo) and not ray.is_initialized():
        kwargs = {"address": address} if address else {"num_cpus": num_cpus}
        ray.init(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                 configure_logging=False, **kwargs)
        started_here = True
    gpus = float(ray.cluster_resources().get("GPU", 0)) if len(todo) else 0.0
    if num_gpus_per_worker is None:
        num_gpus_per_worker = 1.0 if gpus >= 1 else 0.0
    if len(todo) and num_gpus_per_worker > 0 and gpus < num_gpus_per_worker:
        if started_here:
            ray.shutdown()
        raise DqauditError(f"--num-gpus-per-worker {num_gpus_per_worker:g} but the Ray cluster "
                           f"has {gpus:g} GPUs; pass --num-gpus-per-worker 0 for CPU encoders")
    if num_encoders is None:
        num_encoders = max(1, int(gpus // num_gpus_per_worker)) if num_gpus_per_worker else 1
    device = "cuda" if num_gpus_per_worker > 0 else "cpu"
    batch_size = batch_size or default_batch_size(device)
    # A CPU encoder reserves one CPU (so decode tasks can still be scheduled beside it) but
    # runs torch on a node's cores shared among the encoders: decoding is cheap (about 1,300
    # CIFAR-sized JPEGs/s per core here, against 48/s for the encoder on 2 cores).
    encoder_threads = 1
    if len(todo) and device == "cpu":
        node_cpus = max([n["Resources"].get("CPU", 1) for n in ray.nodes() if n["Alive"]] or [1])
        encoder_threads = max(1, int(node_cpus // num_encoders))

    t_embed = time.perf_counter()
    try:
        if len(todo):
            import pyarrow as pa

            _quiet_ray_data(ray)

            # blocks of a few batches each, so decode tasks spread over the CPU workers
            blocks = max(1, min(-(-len(todo) // (4 * batch_size)), 1000))
            ds = ray.data.from_arrow([
                pa.table({"index": part, "path": [paths[i] for i in part]})
                for part in np.array_split(todo, blocks)])
            ds = ds.map_batches(_decode_batch, fn_args=(encoder.preprocessing,),
                                batch_size=batch_size, batch_format="numpy", num_cpus=1)
            spec = {"model": model, "image_size": encoder.preprocessing.image_size,
                    "flip_tta": flip_tta}
            ds = ds.map_batches(_EncodeActor,
                                fn_constructor_args=(spec, device, encoder_threads),
                                batch_size=batch_size, batch_format="numpy",
                                num_gpus=num_gpus_per_worker or None,
                                num_cpus=None if num_gpus_per_worker else 1,
                                compute=ray.data.ActorPoolStrategy(size=num_encoders))
            bar = progress_bar(len(todo), f"{encoder.name} (ray)", device, enabled=progress)
            writer = ShardWriter(state.cache, state.keys, shard_size)
            failed: list[tuple[int, str]] = []
            try:
                for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                    rows = np.asarray(batch["index"], dtype=np.int64)
                    errors = batch["error"]
                    good = np.array([not e for e in errors], dtype=bool)
                    failed.extend(zip(rows[~good].tolist(), errors[~good].tolist()))
                    if good.any():
                        emb[rows[good]] = batch["embedding"][good]
                        stats[rows[good]] = batch["stats"][good]
                        ok[rows[good]] = True
                        writer.add(rows[good], batch["embedding"][good], batch["stats"][good])
                    bar.update(len(rows))
            finally:
                writer.flush()
                bar.close()
            failures.extend({"path": paths[i], "reason": str(reason)} for i, reason in
                            sorted(failed))
    finally:
        if started_here:
            ray.shutdown()
    seconds = time.perf_counter() - t_embed
    n_computed = len(todo) - len(failures)
    info = {
        "engine": "ray",
        "ray_address": address or "local",
        "num_encoders": num_encoders,
        "num_gpus_per_worker": num_gpus_per_worker,
        "model": encoder.name,
        "model_identity": encoder.identity,
        "embedding_dim": encoder.dim,
        "image_size": encoder.preprocessing.image_size,
        "flip_tta": encoder.flip_tta,
        "device": device,
        "batch_size": batch_size,
        "n_files": len(paths),
        "n_cached": state.n_cached,
        "n_embedded": n_computed,
        "n_failed": len(failures),
        "embed_seconds": round(seconds, 3),
        "images_per_second": round(n_computed / seconds, 1) if n_computed and seconds > 0 else None,
        "total_seconds": round(time.perf_counter() - t0, 3),
    }
    return EmbeddingResult(embeddings=emb, ok=ok, stats=stats, failures=failures, info=info)
