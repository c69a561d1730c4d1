"""Region features for label sets (``scan --regions``): each image's quadrants and halves
embedded beside the whole (``embed.REGIONS``), a class scored by the region that shows it best
(``scoring.regions``), kept in the audit folder for every re-rank."""

import json
from dataclasses import asdict
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from dqaudit.api import Audit
from dqaudit.cli import main
from dqaudit.embed import REGIONS, embed_images, load_encoder
from dqaudit.errors import InputError
from dqaudit.scoring.multilabel import flagged_pairs
from dqaudit.scoring.regions import SET_REGIONS, RegionProbe, region_posteriors, set_folds

REPO = Path(__file__).resolve().parents[1]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def auc(score, truth):
    """Probability that a random positive scores above a random negative."""
    pos, neg = score[truth], score[~truth]
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def diluted_scenes(n=400, c=4, d=16, parts=4, seed=0):
    """Views of scenes of ``parts`` regions: each present class shows in one region (its
    direction plus noise); the whole-image view (first) is the mean of the regions, where a
    class present in one of four regions is diluted by the others."""
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(c, d)) * 1.5
    sets = rng.random((n, c)) < 0.3
    regions = rng.normal(size=(n, parts, d))
    for i in range(n):
        slots = rng.permutation(parts)
        for k, cls in enumerate(np.flatnonzero(sets[i])):
            regions[i, slots[k % parts]] += dirs[cls]
    views = np.concatenate([regions.mean(axis=1, keepdims=True), regions], axis=1)
    return views.astype(np.float32), sets


def test_a_class_shown_in_one_region_is_found_better_than_by_the_whole_image():
    views, sets = diluted_scenes()
    config = RegionProbe(weight_decay=1.0, dim=16)
    pooled = region_posteriors(views, sets, config=config, seed=0, device="cpu",
                               suspects=flagged_pairs)
    whole = region_posteriors(views[:, :1], sets, config=config, seed=0, device="cpu",
                               suspects=flagged_pairs)
    assert pooled.shape == sets.shape and np.isfinite(pooled).all()
    pooled_auc = np.mean([auc(pooled[:, k], sets[:, k]) for k in range(sets.shape[1])])
    whole_auc = np.mean([auc(whole[:, k], sets[:, k]) for k in range(sets.shape[1])])
    assert pooled_auc > whole_auc + 0.02, (pooled_auc, whole_auc)
    # seeded: the same folds and fits give the same posteriors
    again = region_posteriors(views, sets, config=config, seed=0, device="cpu",
                               suspects=flagged_pairs)
    np.testing.assert_allclose(again, pooled, atol=1e-6)


def test_a_samples_own_set_never_reaches_the_model_that_scores_it(monkeypatch):
    import dqaudit.scoring.regions as regions_module

    views, sets = diluted_scenes(n=200)
    config = RegionProbe(weight_decay=1.0, dim=16)
    base = region_posteriors(views, sets, config=config, seed=0, device="cpu",
                               suspects=flagged_pairs)
    # the same fold splits for both runs (they are drawn from the sets)
    splits = {r: set_folds(sets, n_folds=5, seed=r) for r in range(3)}
    monkeypatch.setattr(regions_module, "set_folds",
                        lambda _sets, *, n_folds, seed: splits[seed])
    flipped = sets.copy()
    flipped[7] = ~flipped[7]
    other = region_posteriors(views, flipped, config=config, seed=0, device="cpu",
                               suspects=flagged_pairs)
    np.testing.assert_allclose(other[7], base[7], atol=1e-5)
    assert not np.allclose(other, base, atol=1e-5)  # the flip moved the models trained on it


def test_folds_hold_every_class():
    views, sets = diluted_scenes(n=120)
    folds = set_folds(sets, n_folds=5, seed=3)
    for f in range(5):
        assert sets[folds == f].any(axis=0).all()


def test_region_embeddings_are_checked_against_the_embeddings():
    views, sets = diluted_scenes(n=60)
    labels = [list(np.flatnonzero(r)) for r in sets]
    whole, regions = views[:, 0], views[:, 1:]
    with pytest.raises(InputError, match=r"expected \(60, R, 16\)"):
        Audit.from_arrays(labels, embeddings=whole, region_embeddings=regions[:, :, :8],
                          multi_label=True)
    with pytest.raises(InputError, match="beside embeddings"):
        Audit.from_arrays(labels, pred_probs=np.full(sets.shape, 0.5),
                          region_embeddings=regions, multi_label=True)
    bad = regions.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        Audit.from_arrays(labels, embeddings=whole, region_embeddings=bad, multi_label=True)
    with pytest.raises(InputError, match="multi-label"):
        Audit.from_arrays(sets.argmax(axis=1), embeddings=whole, region_embeddings=regions)


@pytest.fixture
def small_sets(tmp_path):
    """60 images of the multi-label sample, with their manifest."""
    data = tmp_path / "ml"
    shutil.copytree(REPO / "sample_data" / "multilabel", data)
    manifest = pd.read_csv(data / "manifest.csv", keep_default_na=False)
    manifest.head(60).to_csv(data / "manifest.csv", index=False)
    return data


def test_scan_with_regions_keeps_them_for_every_rerank(small_sets, tmp_path):
    out = tmp_path / "audit"
    res = run("scan", small_sets / "manifest.csv", "--multi-label", "--regions", "--out", out,
              "--model", "lite0", "--num-workers", "0", "--no-report", "--json", "--quiet")
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["embed"]["regions"] is True
    assert summary["embedding"]["regions"] == len(REGIONS)
    # the region model's settings are recorded with the run
    assert summary["score_parameters"]["region_model"] == asdict(SET_REGIONS)
    regions = np.load(out / "regions.npy")
    assert regions.shape[:2] == (60, len(REGIONS)) and regions.dtype == np.float16
    # a region's embedding is that crop of the image, embedded as the whole images are
    samples = pd.read_parquet(out / "samples.parquet")
    path = samples["path"].iat[3]
    image = Image.open(path).convert("RGB")
    w, h = image.size
    left, top, right, bottom = REGIONS[5]
    crop = tmp_path / "crop.png"
    image.crop((round(left * w), round(top * h), round(right * w), round(bottom * h))).save(crop)
    encoder = load_encoder("lite0", image_size=summary["embedding"]["image_size"])
    alone = embed_images([str(crop)], model=encoder, num_workers=0, use_cache=False,
                         progress=False).embeddings[0]
    np.testing.assert_allclose(regions[3, 5], alone, atol=2e-3)
    # a correction re-ranks with the regions kept in the folder
    sid = samples["id"].iat[0]
    fix = tmp_path / "fix.csv"
    pd.DataFrame({"id": [sid], "label": ["(none)"]}).to_csv(fix, index=False)
    res = run("relabel", "apply", out, fix)
    assert res.exit_code == 0, res.output
    audit = Audit.load(out)
    assert audit.regions is not None and audit.regions.shape == regions.shape
    assert audit.summary["label_changes"] == 1


def test_regions_where_they_cannot_serve_is_one_line(small_sets, class_tree, tmp_path):
    res = run("scan", class_tree, "--regions", "--out", tmp_path / "a", "--no-report")
    assert res.exit_code != 0 and "--regions serves multi-label audits" in res.output
    emb = tmp_path / "e.npy"
    np.save(emb, np.zeros((60, 4), np.float32))
    res = run("scan", small_sets / "manifest.csv", "--multi-label", "--regions", "--embeddings",
              emb, "--out", tmp_path / "b", "--no-report")
    assert res.exit_code != 0 and "given embeddings cannot supply" in res.output


def test_whole_image_cache_keys_do_not_change():
    encoder = load_encoder("lite0")
    assert "region" not in encoder.preprocessing.key()


def test_sets_scanned_by_an_older_version_are_refitted_on_a_rerank(small_sets, tmp_path):
    """Scans before 2026-12-07 recorded a multi-label audit's own posteriors as a user's
    pred_probs (its re-ranks kept them); reading such a folder says they were fitted."""
    out = tmp_path / "audit"
    res = run("scan", small_sets / "manifest.csv", "--multi-label", "--out", out, "--model",
              "lite0", "--num-workers", "0", "--no-report", "--quiet")
    assert res.exit_code == 0, res.output
    path = out / "summary.json"
    summary = json.loads(path.read_text())
    summary["posterior_method"] = "pred_probs"  # as the older version wrote it
    path.write_text(json.dumps(summary))
    audit = Audit.load(out)
    assert not audit.user_probs and audit.summary["posterior_method"] == "linear"


def test_a_correction_round_softens_only_the_answers_the_audit_suspects():
    import torch

    from dqaudit.scoring.regions import _corrected

    views, true = diluted_scenes(n=200, seed=1)
    given = true.copy()
    wrong = np.flatnonzero((~true).any(axis=1))[[3, 11, 40]]
    for i in wrong:  # an extra class on three samples (the class no region shows)
        given[i, np.flatnonzero(~true[i])[0]] = True
    folds = set_folds(given, n_folds=4, seed=0)
    config = RegionProbe(weight_decay=1.0, dim=16, correction_rounds=1)
    v = torch.as_tensor(views)
    targets = _corrected(v, given, folds, config=config, suspects=flagged_pairs).numpy()
    changed = ~np.isclose(targets, given)
    # what the audit's pair flag suspects on the inner posteriors is replaced by them, in (0, 1)
    assert changed.any() and ((targets[changed] > 0) & (targets[changed] < 1)).all()
    for i in wrong:
        extra = given[i] & ~true[i]
        assert changed[i][extra].all() and (targets[i][extra] < 0.5).all()
    # most answers are kept as given
    assert changed.mean() < 0.1
    none = RegionProbe(weight_decay=1.0, dim=16, correction_rounds=0)
    np.testing.assert_array_equal(
        _corrected(v, given, folds, config=none, suspects=flagged_pairs).numpy(), given)
