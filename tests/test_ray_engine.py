"""The embed stage on a local Ray cluster: same embeddings and cache as the local engine."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from dqaudit.errors import DqauditError

ray = pytest.importorskip("ray")


@pytest.fixture
def ray_tree(class_tree):
    (class_tree / "red" / "broken.png").write_bytes(b"\x89PNG not really")
    return class_tree


def test_ray_engine_matches_the_local_engine_and_shares_its_cache(ray_tree, tmp_path):
    from dqaudit.embed import embed_images, load_encoder
    from dqaudit.embed.ray_engine import embed_images_ray

    paths = sorted(str(p) for p in ray_tree.rglob("*.png"))
    local = embed_images(paths, model=load_encoder("lite0", image_size=64), use_cache=False,
                         num_workers=0, progress=False)
    cache = tmp_path / "shared-cache"
    remote = embed_images_ray(paths, model="lite0", image_size=64, num_cpus=2, batch_size=4,
                              cache_dir=cache, shard_size=5, progress=False)
    assert not ray.is_initialized()  # the local cluster it started is shut down
    assert remote.info["engine"] == "ray" and remote.info["n_embedded"] == 12
    np.testing.assert_array_equal(remote.ok, local.ok)
    np.testing.assert_allclose(remote.embeddings, local.embeddings, atol=1e-4)
    assert remote.failures == local.failures and len(remote.failures) == 1
    # the local engine resumes from the shards the Ray run wrote (same cache keys)
    again = embed_images(paths, model=load_encoder("lite0", image_size=64), cache_dir=cache,
                         num_workers=0, progress=False)
    assert again.info["n_cached"] == 12 and again.info["n_embedded"] == 0
    np.testing.assert_array_equal(again.embeddings[again.ok], remote.embeddings[remote.ok])
    # and a Ray run with everything cached starts no cluster at all
    cached = embed_images_ray(paths, model="lite0", image_size=64, cache_dir=cache,
                              progress=False)
    assert cached.info["n_cached"] == 12 and not ray.is_initialized()


def test_scan_with_the_ray_engine(class_tree, tmp_path):
    from dqaudit.cli import main

    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["scan", str(class_tree), "--out", str(out), "--engine", "ray",
                                    "--no-clr", "--no-report", "--image-size", "64", "--quiet"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["embedding"]["engine"] == "ray"
    assert summary["embedding"]["n_embedded"] == 12
    assert summary["score_parameters"]["knn"]["method"] == "exact"
    local = tmp_path / "local"
    res = CliRunner().invoke(main, ["scan", str(class_tree), "--out", str(local), "--no-clr",
                                    "--no-report", "--image-size", "64", "--quiet", "--no-cache",
                                    "--num-workers", "0"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(np.load(out / "embeddings.npy"), np.load(local / "embeddings.npy"),
                               atol=1e-4)


def test_ray_engine_refuses_gpus_the_cluster_lacks(class_tree):
    from dqaudit.embed.ray_engine import embed_images_ray

    paths = sorted(str(p) for p in class_tree.rglob("*.png"))
    with pytest.raises(DqauditError, match="has 0 GPUs"):
        embed_images_ray(paths, model="lite0", image_size=64, num_cpus=1,
                         num_gpus_per_worker=1, use_cache=False, progress=False)
    assert not ray.is_initialized()
