"""Embed: image files -> (N, D) float32 L2-normalised embeddings, cached on disk."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .cache import EmbeddingCache, default_cache_dir, file_key
from .encoders import (DEFAULT_ENCODER, ENCODERS, Encoder, Preprocessing, auto_image_size,
                       load_encoder)

__all__ = ["EmbeddingResult", "embed_images", "load_encoder", "Encoder", "Preprocessing",
           "ENCODERS", "DEFAULT_ENCODER", "default_batch_size", "auto_image_size"]


@dataclass
class EmbeddingResult:
    """Embeddings of N files.

    embeddings: (N, D) float32, L2-normalised rows; rows of failed files are zero.
    ok: (N,) bool, False where the file could not be decoded.
    failures: ``{"path", "reason"}`` for each failed file.
    info: model, device, dimension, counts and timings, for summary.json and the report.
    """

    embeddings: np.ndarray
    ok: np.ndarray
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
) -> EmbeddingResult:
    """Embed every file in ``paths`` with ``model`` on ``device`` (already resolved).

    Cached embeddings are reused; new ones are written to the cache every ``shard_size`` images
    so an interrupted run resumes where it stopped.
    """
    import torch

    from .loader import ImageFolderDataset, collate

    t0 = time.perf_counter()
    encoder = load_encoder(model) if isinstance(model, str) else model
    n = len(paths)
    emb = np.zeros((n, encoder.dim), dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    failures: list[dict] = []

    keys = [file_key(p) for p in paths]
    cache = EmbeddingCache(cache_dir or default_cache_dir(), encoder.cache_key()) if use_cache \
        else None
    cached = cache.load(keys) if cache else {}
    todo: list[int] = []
    for i, k in enumerate(keys):
        vec = cached.get(k)
        if vec is not None and vec.shape == (encoder.dim,):
            emb[i] = vec
            ok[i] = True
        else:
            todo.append(i)
    n_cached = n - len(todo)

    batch_size = batch_size or default_batch_size(device)
    workers = default_num_workers(device) if num_workers is None else num_workers
    forward_seconds = 0.0
    t_embed = time.perf_counter()
    if todo:
        module = encoder.module.to(device)
        is_cuda = device.startswith("cuda")
        if not is_cuda and hasattr(module, "to"):
            module = module.to(memory_format=torch.channels_last)
        prep = encoder.preprocessing
        mean = torch.tensor(prep.mean, device=device).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(prep.std, device=device).view(1, 3, 1, 1) * 255.0
        loader = torch.utils.data.DataLoader(
            ImageFolderDataset(paths, todo, prep), batch_size=batch_size, shuffle=False,
            num_workers=workers, collate_fn=collate, pin_memory=is_cuda,
            persistent_workers=False, prefetch_factor=4 if workers > 0 else None,
            worker_init_fn=_worker_init if workers > 0 else None)
        bar = _progress(len(todo), encoder.name, device, enabled=progress)
        pending_keys: list[str] = []
        pending_vecs: list[np.ndarray] = []
        try:
            with torch.inference_mode():
                for idx, batch, failed in loader:
                    for i, reason in failed:
                        failures.append({"path": paths[i], "reason": reason})
                    if batch is not None:
                        tf = time.perf_counter()
                        x = batch.to(device, non_blocking=True).float()
                        x = ((x - mean) / std).contiguous(
                            memory_format=torch.channels_last)
                        with torch.autocast("cuda", dtype=torch.float16, enabled=is_cuda):
                            feats = encoder.forward(x)
                            if encoder.flip_tta:
                                feats = feats.float() + encoder.forward(torch.flip(x, dims=[3]))
                        feats = torch.nn.functional.normalize(feats.float(), dim=1).cpu().numpy()
                        forward_seconds += time.perf_counter() - tf
                        rows = idx.numpy()
                        emb[rows] = feats
                        ok[rows] = True
                        if cache:
                            pending_keys.extend(keys[r] for r in rows)
                            pending_vecs.append(feats)
                            if len(pending_keys) >= shard_size:
                                cache.write(pending_keys, np.concatenate(pending_vecs))
                                pending_keys, pending_vecs = [], []
                    bar.update(len(idx) + len(failed))
        finally:
            # an interrupted run keeps what it finished: the next run resumes from here
            if cache and pending_keys:
                cache.write(pending_keys, np.concatenate(pending_vecs))
            bar.close()
    seconds = time.perf_counter() - t_embed
    n_computed = len(todo) - len(failures)
    info = {
        "model": encoder.name,
        "model_identity": encoder.identity,
        "embedding_dim": encoder.dim,
        "image_size": encoder.preprocessing.image_size,
        "flip_tta": encoder.flip_tta,
        "device": device,
        "batch_size": batch_size,
        "num_workers": workers,
        "n_files": n,
        "n_cached": n_cached,
        "n_embedded": n_computed,
        "n_failed": len(failures),
        "embed_seconds": round(seconds, 3),
        "images_per_second": round(n_computed / seconds, 1) if n_computed and seconds > 0 else None,
        "forward_seconds": round(forward_seconds, 3),
        "total_seconds": round(time.perf_counter() - t0, 3),
    }
    return EmbeddingResult(embeddings=emb, ok=ok, failures=failures, info=info)


def _worker_init(_worker_id: int) -> None:
    import torch

    torch.set_num_threads(1)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, model: str, device: str, *, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"embed [{model} on {device}]", unit="img", file=sys.stderr,
                dynamic_ncols=True, smoothing=0.1)
