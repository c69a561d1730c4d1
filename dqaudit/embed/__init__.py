"""Embed: image files -> (N, D) float32 L2-normalised embeddings, cached on disk."""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field, replace

import numpy as np

from dqaudit.embed.cache import EmbeddingCache, default_cache_dir
from dqaudit.embed.encoders import (
    DEFAULT_ENCODER,
    ENCODERS,
    Encoder,
    Preprocessing,
    auto_image_size,
    load_encoder,
)
from dqaudit.embed.gpu_decode import RawJpegDataset, collate_raw, decode_batch
from dqaudit.embed.loader import ImageFolderDataset, collate
from dqaudit.errors import DqauditError
from dqaudit.files import file_digests
from dqaudit.imaging.image_checks import N_STATS

__all__ = ["EmbeddingResult", "embed_images", "load_encoder", "Encoder", "Preprocessing",
           "ENCODERS", "DEFAULT_ENCODER", "default_batch_size", "auto_image_size", "REGIONS",
           "embed_regions"]


@dataclass
class EmbeddingResult:
    """Embeddings of N files.

    embeddings: (N, D) float32, L2-normalised rows; rows of failed files are zero.
    ok: (N,) bool, False where the file could not be decoded.
    stats: (N, N_STATS) float64 ``loader.image_stats`` per file, measured by the decode
        workers (NaN where the file could not be decoded).
    failures: ``{"path", "reason"}`` for each failed file.
    info: model, device, dimension, counts and timings, for summary.json and the report.
    """

    embeddings: np.ndarray
    ok: np.ndarray
    stats: np.ndarray
    failures: list[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)


def default_batch_size(device: str) -> int:
    return {"cuda": 256, "mps": 64}.get(device.split(":")[0], 32)


def default_num_workers(device: str) -> int:
    cpus = os.cpu_count() or 1
    if device.startswith("cuda"):
        return min(8, cpus)
    # on CPU the model wants the cores; one decode worker keeps ahead of it (see benchmarks)
    return 1 if cpus <= 4 else min(4, cpus // 4)


def embed_images(
    paths: list[str],
    *,
    model: str | Encoder = DEFAULT_ENCODER,
    device: str = "cpu",
    batch_size: int | None = None,
    num_workers: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    shard_size: int = 1024,
    progress: bool = True,
    keys: list[str] | None = None,
    decoder: str = "cpu",
) -> EmbeddingResult:
    """Embed every file in ``paths`` with ``model`` on ``device`` (already resolved).

    Cached embeddings are reused; new ones are written to the cache every ``shard_size`` images
    so an interrupted run resumes where it stopped. ``keys``: the files' cache keys
    (``files.file_digest``) when already computed. ``decoder``: ``cpu`` (the DataLoader
    workers decode) or ``nvjpeg`` (JPEGs decoded on the CUDA device, ``embed.gpu_decode``).
    """
    import torch

    t0 = time.perf_counter()
    encoder = load_encoder(model) if isinstance(model, str) else model
    if decoder != encoder.decoder:
        encoder = replace(encoder, decoder=decoder)
    state = start_embedding(paths, encoder, cache_dir=cache_dir, use_cache=use_cache, keys=keys)
    emb, ok, failures, keys, cache, todo = (state.embeddings, state.ok, state.failures,
                                             state.keys, state.cache, state.todo)
    stats = state.stats

    batch_size = batch_size or default_batch_size(device)
    workers = default_num_workers(device) if num_workers is None else num_workers
    forward_seconds = decode_seconds = 0.0
    t_embed = time.perf_counter()
    if todo:
        module = encoder.module.to(device)
        if hasattr(module, "to"):
            # channels-last weights: 1.7x the forward rate of contiguous ones on an H100 in fp16,
            # about 1.5x on this project's 2-core CPU (benchmarks/RESULTS.md)
            module = module.to(memory_format=torch.channels_last)
        gpu = decoder == "nvjpeg"
        dataset = (RawJpegDataset if gpu else ImageFolderDataset)(paths, todo,
                                                                  encoder.preprocessing)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size,
            shuffle=False, num_workers=workers, collate_fn=collate_raw if gpu else collate,
            pin_memory=device.startswith("cuda") and not gpu, persistent_workers=False,
            prefetch_factor=4 if workers > 0 else None,
            worker_init_fn=_worker_init if workers > 0 else None)
        bar = progress_bar(len(todo), encoder.name, device, enabled=progress)
        writer = ShardWriter(cache, keys, shard_size)
        try:
            for item in loader:
                if gpu:
                    tf = time.perf_counter()
                    idx, batch, measured, failed = decode_batch(item, paths,
                                                                encoder.preprocessing, device)
                    decode_seconds += time.perf_counter() - tf
                else:
                    idx, batch, measured, failed = item
                for i, reason in failed:
                    failures.append({"path": paths[i], "reason": reason})
                if batch is not None:
                    tf = time.perf_counter()
                    feats = encode_batch(encoder, batch, device)
                    forward_seconds += time.perf_counter() - tf
                    rows = np.asarray(idx)
                    emb[rows] = feats
                    stats[rows] = measured
                    ok[rows] = True
                    writer.add(rows, feats, measured)
                bar.update(len(idx) + len(failed))
        finally:
            # an interrupted run keeps what it finished: the next run resumes from here
            writer.flush()
            bar.close()
    seconds = time.perf_counter() - t_embed
    n_computed = len(todo) - len(failures)
    info = {
        "engine": "local",
        "model": encoder.name,
        "model_identity": encoder.identity,
        "backend": encoder.backend,
        "decoder": encoder.decoder,
        "embedding_dim": encoder.dim,
        "image_size": encoder.preprocessing.image_size,
        "flip_tta": encoder.flip_tta,
        "device": device,
        "batch_size": batch_size,
        "num_workers": workers,
        "n_files": len(paths),
        "n_cached": state.n_cached,
        "n_embedded": n_computed,
        "n_failed": len(failures),
        "embed_seconds": round(seconds, 3),
        "images_per_second": round(n_computed / seconds, 1) if n_computed and seconds > 0 else None,
        "forward_seconds": round(forward_seconds, 3),
        "gpu_decode_seconds": round(decode_seconds, 3),
        "total_seconds": round(time.perf_counter() - t0, 3),
    }
    return EmbeddingResult(embeddings=emb, ok=ok, stats=stats, failures=failures, info=info)


# The parts of an image embedded beside the whole for region features (multi-label audits,
# ``scoring.regions``): the four quadrants and the two halves each way, (left, top, right,
# bottom) as fractions. An object a quarter of the image's area fills at least a quarter of one
# of them; a whole-image embedding dilutes it (benchmarks/RESULTS.md, "Multi-label audits").
REGIONS = ((0.0, 0.0, 0.5, 0.5), (0.5, 0.0, 1.0, 0.5), (0.0, 0.5, 0.5, 1.0),
           (0.5, 0.5, 1.0, 1.0), (0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0),
           (0.0, 0.0, 1.0, 0.5), (0.0, 0.5, 1.0, 1.0))


def embed_regions(paths: list[str], *, model: Encoder, device: str, batch_size: int | None,
                  num_workers: int | None, cache_dir, use_cache: bool, progress: bool,
                  keys: list[str] | None) -> tuple[np.ndarray, dict]:
    """((N, R, D) float32 embeddings of every region of ``REGIONS`` of each file, the run's
    info). The files are those whose whole image embedded already; each region is cached as
    an embedding of its own (the preprocessing's ``region`` is part of the cache key). Regions
    are decoded on the CPU."""
    out, seconds, computed = None, 0.0, 0
    bar = progress_bar(len(paths) * len(REGIONS), f"{model.name} regions", device,
                       enabled=progress)
    for r, box in enumerate(REGIONS):
        encoder = replace(model, decoder="cpu",
                          preprocessing=replace(model.preprocessing, region=box))
        res = embed_images(paths, model=encoder, device=device, batch_size=batch_size,
                           num_workers=num_workers, cache_dir=cache_dir, use_cache=use_cache,
                           progress=False, keys=keys, decoder="cpu")
        bar.update(len(paths))
        if res.failures:
            raise DqauditError(f"{res.failures[0]['path']}: a region of this image could not be "
                               f"embedded ({res.failures[0]['reason']}); run without --regions")
        if out is None:
            out = np.zeros((len(paths), len(REGIONS), res.embeddings.shape[1]), np.float32)
        out[:, r] = res.embeddings
        seconds += res.info["embed_seconds"]
        computed += res.info["n_embedded"]
    bar.close()
    return out, {"regions": len(REGIONS), "n_region_embeddings": computed,
                 "region_seconds": round(seconds, 3)}


@dataclass
class _Start:
    """Where an embedding run starts: cached rows filled in, the rest to do."""

    embeddings: np.ndarray
    ok: np.ndarray
    stats: np.ndarray
    failures: list
    keys: list
    cache: EmbeddingCache | None
    todo: list
    n_cached: int


def start_embedding(paths: list[str], encoder: Encoder, *, cache_dir, use_cache: bool,
           keys: list[str] | None = None) -> _Start:
    n = len(paths)
    emb = np.zeros((n, encoder.dim), dtype=np.float32)
    stats = np.full((n, N_STATS), np.nan)
    ok = np.zeros(n, dtype=bool)
    cache = EmbeddingCache(cache_dir or default_cache_dir(), encoder.cache_key()) if use_cache \
        else None
    if cache is None:
        keys = [""] * n
    elif keys is None:
        keys = file_digests(paths)
    cached = cache.load(keys) if cache else {}
    todo: list[int] = []
    for i, k in enumerate(keys):
        vec, measured = cached.get(k, (None, None))
        # a row cached before the image statistics existed is embedded again, to measure them
        if vec is not None and vec.shape == (encoder.dim,) and measured is not None \
                and measured.shape == (N_STATS,):
            emb[i] = vec
            stats[i] = measured
            ok[i] = True
        else:
            todo.append(i)
    return _Start(emb, ok, stats, [], keys, cache, todo, n - len(todo))


FLUSH_SECONDS = 5.0  # a killed scan loses at most this much embedding work


class ShardWriter:
    """Buffers new embeddings and writes a cache shard every ``shard_size`` rows or
    ``FLUSH_SECONDS``, whichever comes first (a SIGKILL, which runs no cleanup, then loses
    seconds, not the run). A cache that cannot be written is read, not written, with a
    warning."""

    def __init__(self, cache: EmbeddingCache | None, keys: list[str], shard_size: int):
        self.cache, self.keys, self.shard_size = cache, keys, shard_size
        self.pending_keys: list[str] = []
        self.pending_vecs: list[np.ndarray] = []
        self.pending_stats: list[np.ndarray] = []
        self.last = time.monotonic()

    def add(self, rows: np.ndarray, feats: np.ndarray, stats: np.ndarray) -> None:
        if self.cache is None:
            return
        hashed = np.array([bool(self.keys[r]) for r in rows])  # "": could not be hashed
        self.pending_keys.extend(self.keys[r] for r in np.asarray(rows)[hashed])
        self.pending_vecs.append(feats[hashed])
        self.pending_stats.append(np.asarray(stats)[hashed])
        if len(self.pending_keys) >= self.shard_size or \
                time.monotonic() - self.last >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        self.last = time.monotonic()
        if self.cache is not None and self.pending_keys:
            try:
                self.cache.write(self.pending_keys, np.concatenate(self.pending_vecs),
                                 np.concatenate(self.pending_stats))
            except OSError as exc:
                logging.getLogger("dqaudit").warning(
                    f"dqaudit: embedding cache {self.cache.dir} cannot be written "
                    f"({exc.strerror}); carrying on without caching (--cache-dir DIR to use "
                    "another)")
                self.cache = None
            self.pending_keys, self.pending_vecs, self.pending_stats = [], [], []


def encode_batch(encoder: Encoder, batch, device: str) -> np.ndarray:
    """(B, 3, S, S) uint8 images -> (B, D) float32 L2-normalised embeddings.

    The one forward path of every engine (local DataLoader and Ray actors): normalisation on
    the device, channels-last, fp16 autocast on CUDA, optional flip test-time augmentation.
    """
    import torch

    is_cuda = device.startswith("cuda")
    prep = encoder.preprocessing
    mean = torch.tensor(prep.mean, device=device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(prep.std, device=device).view(1, 3, 1, 1) * 255.0
    with torch.inference_mode():
        x = torch.as_tensor(batch).to(device, non_blocking=True).float()
        x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.float16, enabled=is_cuda):
            feats = encoder.forward(x)
            if encoder.flip_tta:
                feats = feats.float() + encoder.forward(torch.flip(x, dims=[3]))
        return torch.nn.functional.normalize(feats.float(), dim=1).cpu().numpy()


def _worker_init(_worker_id: int) -> None:
    import torch

    torch.set_num_threads(1)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, model: str, device: str, *, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"embed [{model} on {device}]", unit="img", file=sys.stderr,
                dynamic_ncols=True, smoothing=0.1)
