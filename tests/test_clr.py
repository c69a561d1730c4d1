"""Controlled CLR injection: schedule, metrics, batched probes, estimator, CLI."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from dqaudit.cli import main
from dqaudit.estimates.clr import (
    ClrConfig,
    classification_metrics,
    estimate_clr,
    injection_runs,
    nested_corruptions,
    regression,
    stratified_split,
)
from dqaudit.scoring.probes import ProbeConfig, project

GRID = (0.0, 0.01, 0.05, 0.1, 0.2)


def test_nested_schedule_exact_counts_and_containment():
    labels = np.repeat(np.arange(4), 50)
    runs = nested_corruptions(labels, 4, grid=GRID, repeats=3, mode="uniform", seed=0)
    assert runs.shape == (3, len(GRID), 200)
    for r in range(3):
        flipped = [set(np.flatnonzero(runs[r, g] != labels)) for g in range(len(GRID))]
        assert [len(f) for f in flipped] == [round(g * 200) for g in GRID]
        for lower, higher in zip(flipped, flipped[1:]):
            assert lower <= higher  # a higher ratio keeps every lower ratio's flips
        for g in range(1, len(GRID)):  # the same sample gets the same new label
            common = list(flipped[g - 1])
            assert (runs[r, g, common] == runs[r, g - 1, common]).all()
    assert not (runs[0] == runs[1]).all()  # repeats differ


def test_posterior_mode_follows_confusions():
    labels = np.zeros(300, dtype=int)
    labels[150:] = 1
    probs = np.tile([0.6, 0.0, 0.4], (300, 1))
    probs[150:] = [0.1, 0.6, 0.3]
    runs = nested_corruptions(labels, 3, grid=(0.0, 0.5), repeats=2, mode="posterior",
                              seed=0, probs=probs)
    new = runs[:, 1][runs[:, 1] != labels]
    assert set(new[:0].tolist()) <= {1, 2}
    assert (runs[:, 1, :150][runs[:, 1, :150] != 0] == 2).all()  # class 0 only flips to 2
    with pytest.raises(Exception, match="valid: uniform, posterior"):
        nested_corruptions(labels, 3, grid=GRID, repeats=1, mode="adversarial", seed=0)


def test_metrics_match_scikit_learn():
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 100)
    pred = np.where(rng.random((3, 100)) < 0.7, y, rng.integers(0, 4, (3, 100)))
    m = classification_metrics(y, pred, 4)
    for i in range(3):
        p, r, f, _ = precision_recall_fscore_support(y, pred[i], average="weighted",
                                                     zero_division=0)
        np.testing.assert_allclose([m["accuracy"][i], m["precision"][i], m["recall"][i],
                                    m["f1"][i]], [accuracy_score(y, pred[i]), p, r, f])


def test_split_is_stratified_and_seeded():
    labels = np.repeat(np.arange(3), [50, 30, 20])
    train = stratified_split(labels, heldout_fraction=0.2, seed=1)
    assert [(~train[labels == c]).sum() for c in range(3)] == [10, 6, 4]
    assert (stratified_split(labels, heldout_fraction=0.2, seed=1) == train).all()


def test_regression_recovers_a_known_line():
    grid = np.array(GRID)
    values = 0.9 - 0.5 * np.tile(grid, (10, 1)) + np.random.default_rng(0).normal(
        0, 0.001, (10, len(grid)))
    reg = regression(values, grid, seed=0)
    assert reg["slope"] == pytest.approx(-0.5, abs=0.02) and reg["pearson_r"] < -0.99


def test_warm_started_runs_match_cold_converged_fits():
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(4, 16))
    y = np.repeat(np.arange(4), 100)
    x = project(centers[y] + 1.5 * rng.normal(size=(400, 16)), seed=0)
    probe = ProbeConfig(max_iter=300)
    cold = injection_runs(x, y, 4, seed=0, config=ClrConfig(
        grid=GRID, repeats=3, probe=probe, warm_start_iter=None))
    warm = injection_runs(x, y, 4, seed=0, config=ClrConfig(
        grid=GRID, repeats=3, probe=probe, warm_start_iter=40))
    for name in ("accuracy", "f1"):
        # identical ratio-0 runs are fitted once; every run ends at the same optimum
        assert (warm["metrics"][name][:, 0] == warm["metrics"][name][0, 0]).all()
        np.testing.assert_allclose(warm["metrics"][name], cold["metrics"][name], atol=0.0126)
    acc = warm["metrics"]["accuracy"]
    assert acc[:, 0].mean() > acc[:, -1].mean()  # 20% injected noise costs accuracy


def test_large_datasets_run_on_a_stratified_subsample():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 16))
    y = np.repeat(np.arange(4), [300, 200, 100, 50])
    x = project(centers[y] + rng.normal(size=(650, 16)), seed=0)
    cfg = ClrConfig(grid=GRID, repeats=2, bootstrap=50, calibration_repeats=2,
                    probe=ProbeConfig(max_iter=30), max_samples=260)
    res = estimate_clr(x, y, 4, config=cfg, seed=0, device="cpu")
    assert res["n_samples"] == 650 and res["n_samples_used"] == 260
    assert res["n_train"] + res["n_heldout"] == 260
    full = estimate_clr(x, y, 4, config=ClrConfig(grid=GRID, repeats=2, bootstrap=50,
                                                  calibration_repeats=2,
                                                  probe=ProbeConfig(max_iter=30)), seed=0,
                        device="cpu")
    assert full["n_samples_used"] == 650


@pytest.mark.parametrize("noise", [0.0, 0.1])
def test_estimator_on_synthetic_data_with_known_noise(noise):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 16))
    y = np.repeat(np.arange(4), 150)
    x = centers[y] + rng.normal(size=(600, 16))  # overlapping classes: noise hurts
    noisy = y.copy()
    flip = rng.choice(600, int(noise * 600), replace=False)
    noisy[flip] = (y[flip] + rng.integers(1, 4, len(flip))) % 4
    cfg = ClrConfig(grid=GRID, repeats=4, bootstrap=200, probe=ProbeConfig(max_iter=50))
    res = estimate_clr(project(x, seed=0), noisy, 4, config=cfg, seed=0, device="cpu")
    assert abs(res["estimate"] - noise) < 0.03
    assert res["ci_low"] <= res["estimate"] <= res["ci_high"]
    acc = res["curves"]["accuracy"]["mean"]
    assert acc[0] > acc[-1]  # more injected noise, worse held-out accuracy
    assert res["regression"]["accuracy"]["slope"] < 0


def test_scan_reports_clr_and_clr_command_reruns(class_tree, tmp_path):
    out = tmp_path / "o"
    res = CliRunner().invoke(main, ["scan", str(class_tree), "--out", str(out), "-q",
                                    "--num-workers", "0", "--no-pdf", "--clr-repeats", "3",
                                    "--clr-grid", "0,0.1,0.2"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    clr = summary["clr"]
    assert {"estimate", "ci_low", "ci_high", "method", "curves", "regression"} <= set(clr)
    assert clr["curves"]["ratios"] == [0.0, 0.1, 0.2] and clr["repeats"] == 3
    html = (out / "report.html").read_text()
    assert f"{100 * clr['estimate']:.1f}%" in html
    assert clr["n_samples_used"] == clr["n_samples"] == summary["n_samples"]
    assert "subsample" not in html
    res = CliRunner().invoke(main, ["clr", str(out), "--clr-repeats", "4",
                                    "--clr-max-samples", "9"], catch_exceptions=False)
    assert res.exit_code == 0 and "noise: " in res.output and "gold-free" in res.output
    clr = json.loads((out / "summary.json").read_text())["clr"]
    assert clr["repeats"] == 4 and clr["n_samples_used"] == 9 < clr["n_samples"]
    assert "stratified random subsample of 9 of the" in (out / "report.html").read_text()
    res = CliRunner().invoke(main, ["scan", str(class_tree), "--out", str(tmp_path / "n"),
                                    "--no-clr", "--no-report", "-q", "--num-workers", "0"])
    assert json.loads((tmp_path / "n" / "summary.json").read_text())["clr"] is None
    bad = CliRunner().invoke(main, ["clr", str(out), "--clr-grid", "0.1,0.05"])
    assert bad.exit_code == 2 and "start at 0" in bad.output
