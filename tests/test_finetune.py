"""Cross-fitted fine-tuning (scoring.finetune): no sample's label reaches the model that scores
it, runs resume per fold, and the scan records which posteriors it used and why. Tiny lite0
networks on a few coloured squares, on the CPU."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from dqaudit.api import Audit
from dqaudit.cli import main
from dqaudit.config import AuditConfig, ScoreConfig
from dqaudit.dataset import LabeledImages, one_hot
from dqaudit.errors import DqauditError, InputError
from dqaudit.pipeline import choose_posteriors
from dqaudit.scoring import finetune
from dqaudit.scoring.finetune import FinetuneConfig, finetune_posteriors
from dqaudit.scoring.finetune_net import random_crops
from dqaudit.scoring.posteriors import stratified_folds

COLOURS = np.array([[220, 30, 30], [30, 200, 40], [30, 40, 220]])


def squares(n_per_class=8, size=32, seed=0):
    """(N, 3, S, S) uint8 noisy colour squares and their (N,) labels."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n_per_class)
    images = np.clip(COLOURS[labels][:, :, None, None] + rng.normal(0, 40, (len(labels), 3,
                                                                         size, size)), 0, 255)
    return images.astype(np.uint8), labels


TINY = dict(epochs=2, batch_size=8)


class Killed(Exception):
    """Stands for a kill in the middle of a fold."""


@pytest.mark.parametrize("mode", ["last", "all"])
def test_a_samples_own_label_never_reaches_the_model_that_scores_it(mode):
    images, labels = squares()
    folds = stratified_folds(labels, n_folds=3, seed=0)
    config = FinetuneConfig(train=mode, **TINY)
    base = finetune_posteriors(images, one_hot(labels, 3), folds, encoder="lite0",
                               config=config, progress=False, seed=0)
    assert base.probs.shape == (24, 3) and np.allclose(base.probs.sum(1), 1)
    # flip the labels of every sample of fold 0: fold 0's probabilities must not move at all,
    # the other folds' models (which trained on those labels) must
    flipped = labels.copy()
    held = folds == 0
    flipped[held] = (labels[held] + 1) % 3
    other = finetune_posteriors(images, one_hot(flipped, 3), folds, encoder="lite0",
                                config=config, progress=False, seed=0)
    np.testing.assert_array_equal(other.probs[held], base.probs[held])
    assert not np.allclose(other.probs[~held], base.probs[~held])


def test_the_same_seed_gives_the_same_probabilities_and_another_seed_others():
    images, labels = squares()
    folds = stratified_folds(labels, n_folds=3, seed=0)
    run = lambda seed: finetune_posteriors(  # noqa: E731
        images, one_hot(labels, 3), folds, encoder="lite0", config=FinetuneConfig(**TINY),
        seed=seed, progress=False).probs
    first = run(0)
    np.testing.assert_array_equal(first, run(0))
    assert not np.array_equal(first, run(1))


def test_a_killed_run_resumes_at_the_next_fold(tmp_path, monkeypatch):
    images, labels = squares()
    folds = stratified_folds(labels, n_folds=3, seed=0)
    kwargs = dict(encoder="lite0", seed=0, config=FinetuneConfig(**TINY), checkpoint_dir=tmp_path,
                  progress=False)
    fitted = []
    real = finetune._fit_fold

    def dies_on_third_fold(*args, fold, **kw):
        if fold[0] == 2 and not fitted.count("died"):
            fitted.append("died")
            raise Killed
        fitted.append(fold[0])
        return real(*args, fold=fold, **kw)

    monkeypatch.setattr(finetune, "_fit_fold", dies_on_third_fold)
    with pytest.raises(Killed):
        finetune_posteriors(images, one_hot(labels, 3), folds, **kwargs)
    assert fitted == [0, 1, "died"]
    resumed = finetune_posteriors(images, one_hot(labels, 3), folds, **kwargs)
    assert fitted == [0, 1, "died", 2]  # folds 0 and 1 came from their checkpoints
    monkeypatch.setattr(finetune, "_fit_fold", real)
    fresh = finetune_posteriors(images, one_hot(labels, 3), folds, encoder="lite0",
                                config=FinetuneConfig(**TINY), progress=False, seed=0)
    np.testing.assert_array_equal(resumed.probs, fresh.probs)
    # other labels are another run: nothing is reused
    fitted[:] = ["died"]  # no more kills
    monkeypatch.setattr(finetune, "_fit_fold", dies_on_third_fold)
    finetune_posteriors(images, one_hot((labels + 1) % 3, 3), folds, **kwargs)
    assert fitted == ["died", 0, 1, 2]


def test_random_crops_stay_inside_the_image():
    theta = random_crops(2000, min_area=0.35, rng=np.random.default_rng(0))
    w, h = np.abs(theta[:, 0, 0]), theta[:, 1, 1]
    assert (np.abs(theta[:, 0, 2]) + w <= 1 + 1e-6).all()
    assert (np.abs(theta[:, 1, 2]) + h <= 1 + 1e-6).all()
    assert (w * h >= 0.35 * 0.74).all() and 0.4 < (theta[:, 0, 0] < 0).mean() < 0.6


def test_bad_settings_name_the_fix():
    with pytest.raises(DqauditError, match="valid: auto, all, last"):
        FinetuneConfig(train="some")
    with pytest.raises(DqauditError, match="valid: linear, graph, ensemble, finetune"):
        ScoreConfig(posterior_method="deep")
    images, labels = squares(n_per_class=4)
    with pytest.raises(InputError, match="expected"):
        finetune_posteriors(images[:5], one_hot(labels, 3), np.zeros(12, int), seed=0)


def test_finetune_needs_the_image_files(tmp_path):
    paths = []
    for i in range(6):
        (tmp_path / f"{i}.png").write_bytes(b"x")
        paths.append(str(tmp_path / f"{i}.png"))
    data = LabeledImages.from_labels(np.arange(6) % 2, paths=paths, source={"kind": "folder"})
    asked = AuditConfig(score=ScoreConfig(posterior_method="finetune"))
    ours = {"image_size": 160, "model": "lite0+lite2"}
    assert choose_posteriors(data, asked, embed_info=ours)["method"] == "finetune"
    for info in (None, {"model": "user embeddings (x.npy)", "image_size": None}):
        with pytest.raises(InputError, match="--posteriors linear"):
            choose_posteriors(data, asked, embed_info=info)
    (tmp_path / "3.png").unlink()  # moved since the scan
    with pytest.raises(InputError, match="files still in place"):
        choose_posteriors(data, asked, embed_info=ours)
    assert choose_posteriors(data, AuditConfig(), embed_info=None) == {
        "method": "linear", "reason": "the default"}


def test_scan_with_finetuned_posteriors_records_them(tmp_path, class_tree):
    from conftest import colour_tree

    colour_tree(class_tree, per_class=8)
    out = tmp_path / "audit"
    res = CliRunner().invoke(main, ["scan", str(class_tree), "--out", str(out), "--no-pdf",
                                    "--no-clr", "--posteriors", "finetune",
                                    "--finetune-epochs", "2", "--model", "lite0"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    block = summary["posteriors"]
    assert summary["posterior_method"] == "finetune" and block["method"] == "finetune"
    assert block["finetune"]["train"] == "last" and len(block["finetune"]["epochs_chosen"]) == 5
    assert summary["config"]["score"]["finetune"]["epochs"] == 2
    method = (out / "report.html").read_text()
    assert "the encoder itself, fine-tuned" in method and "robust logistic" not in method
    probs = np.load(out / "probs.npy")
    assert probs.shape == (24, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    # the checkpoints beside the embedding cache make a re-rank with unchanged labels cheap,
    # and the re-rank fine-tunes again (on the labels it is given), never keeps stale ones
    audit = Audit.load(out)
    labels = list(audit.samples["label"])
    labels[0] = "green" if labels[0] != "green" else "red"
    audit.rescore(labels=labels)
    assert audit.summary["posteriors"]["method"] == "finetune"
    assert not np.allclose(np.load(out / "probs.npy"), probs)


def test_a_default_scan_says_which_posteriors_it_used(tmp_path, class_tree):
    out = tmp_path / "audit"
    res = CliRunner().invoke(main, ["scan", str(class_tree), "--out", str(out), "--no-report",
                                    "--no-clr"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["posteriors"] == {"requested": "linear", "method": "linear",
                                     "reason": "the default"}


def test_other_encoders_fine_tune_every_layer_and_refuse_the_last_stages_mode(tmp_path):
    """timm (and open_clip) encoders take the generic path: the encoder's own forward with a
    head, every layer trained; ``last`` is for the lite encoders and says so."""
    import timm
    import torch

    torch.manual_seed(0)
    weights = tmp_path / "resnet10t.pth"
    torch.save(timm.create_model("resnet10t", pretrained=False, num_classes=0).state_dict(),
               weights)
    images, labels = squares(n_per_class=5)
    folds = stratified_folds(labels, n_folds=3, seed=0)
    encoder = f"timm:resnet10t//{weights}"
    res = finetune_posteriors(images, one_hot(labels, 3), folds, encoder=encoder,
                              config=FinetuneConfig(train="all", **TINY), progress=False, seed=0)
    assert res.probs.shape == (15, 3) and np.isfinite(res.probs).all()
    assert res.info["train"] == "all" and res.info["encoder"] == encoder
    with pytest.raises(InputError, match="--finetune-train all"):
        finetune_posteriors(images, one_hot(labels, 3), folds, encoder=encoder,
                            config=FinetuneConfig(train="last", **TINY), progress=False, seed=0)
