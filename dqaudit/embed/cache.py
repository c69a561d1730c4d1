"""On-disk embedding cache: resumable, and safe against killed runs.

Layout: ``CACHE_DIR/<encoder cache key>/shard-*.npz``, each shard holding ``keys`` (per-file keys:
``files.file_digest``, a hash of the file's bytes) and ``embeddings`` (float32). Shards are
written to a temporary name and renamed into place (atomic on POSIX), so a run killed mid-write
leaves at most a stray ``.tmp`` file, never a shard that loads as valid. A re-run embeds only the
files whose content is new: a moved, renamed or copied dataset hits the cache.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from dqaudit.files import replacing

ENV_CACHE_DIR = "DQAUDIT_CACHE_DIR"


def default_cache_dir() -> Path:
    if os.environ.get(ENV_CACHE_DIR):
        return Path(os.environ[ENV_CACHE_DIR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dqaudit" / "embeddings"


class EmbeddingCache:
    """The shards of one encoder (one cache key)."""

    def __init__(self, root: str | os.PathLike, encoder_key: str):
        self.dir = Path(root) / encoder_key
        self._counter = 0

    def load(self, keys: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        """(embedding, image statistics or None) for whichever of ``keys`` are cached (shards
        written before 2026-12-03 hold no statistics)."""
        wanted = set(keys)
        found: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        if not self.dir.is_dir():
            return found
        for shard in sorted(self.dir.glob("shard-*.npz")):
            try:
                with np.load(shard, allow_pickle=False) as data:
                    shard_keys = data["keys"].astype(str)
                    hit = np.flatnonzero([k in wanted for k in shard_keys])
                    if len(hit):
                        emb = data["embeddings"]
                        stats = data["stats"] if "stats" in data.files else None
                        for j in hit:
                            found[shard_keys[j]] = (emb[j], None if stats is None else stats[j])
            except Exception:  # an unreadable shard is ignored; its files get re-embedded
                continue
        return found

    def write(self, keys: list[str], embeddings: np.ndarray, stats: np.ndarray) -> Path:
        """Atomically add one shard: embeddings and the decode workers' image statistics."""
        assert len(keys) == len(embeddings)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._counter += 1
        name = f"shard-{time.time_ns():x}-{os.getpid()}-{self._counter}.npz"
        final = self.dir / name
        with replacing(final) as tmp, open(tmp, "wb") as fh:  # a full disk leaves no shard
            np.savez(fh, keys=np.array(keys, dtype="S40"),
                     embeddings=embeddings.astype(np.float32),
                     stats=np.asarray(stats, dtype=np.float64))
            fh.flush()
            os.fsync(fh.fileno())
        return final
