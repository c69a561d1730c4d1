"""Calibrated label-error probability (dqaudit.scoring.calibration)."""

import numpy as np
import pytest

from dqaudit.scoring import calibration


def test_power_sums_to_the_estimate_and_keeps_the_order():
    q = np.array([0.99, 0.9, 0.5, 0.2, 0.1, 0.05])
    c = calibration.power(q, 2)
    assert c.sum() == pytest.approx(2, rel=1e-6)
    assert (np.diff(c) <= 0).all() and c[0] > 0.9
    assert calibration.power(q, 0).sum() == 0
    # a raw sum below the estimate is scaled up, never above 1
    up = calibration.power(np.array([0.1, 0.2, 0.3]), 1.2)
    assert up.sum() == pytest.approx(1.2) and up.max() <= 1


def test_prior_shift_matches_the_total_monotonically():
    rng = np.random.default_rng(0)
    s = rng.random(500)
    q = calibration.prior_shift(s, 50)
    assert q.sum() == pytest.approx(50, rel=1e-4)
    assert np.array_equal(np.argsort(q, kind="stable"), np.argsort(s, kind="stable"))


def test_power_calibrates_an_overconfident_score():
    # truth: P(error | s) = s^3; the raw score s over-reads the share of errors threefold
    rng = np.random.default_rng(1)
    s = rng.random(20000)
    errors = rng.random(len(s)) < s ** 3
    raw_ece = calibration.expected_calibration_error(s, errors)
    fixed = calibration.power(s, errors.sum())
    assert calibration.expected_calibration_error(fixed, errors) < 0.02 < raw_ece


def test_platt_on_a_weighted_sample_recovers_the_population_curve():
    rng = np.random.default_rng(2)
    s = rng.beta(0.5, 3, size=20000)
    p_true = calibration.sigmoid(-1.0 + 1.5 * calibration.logit(s))
    errors = rng.random(len(s)) < p_true
    # oversample high scores, weight by 1 / inclusion probability
    pi = np.where(s > 0.3, 0.6, 0.15)
    chosen = rng.random(len(s)) < pi
    a, b = calibration.fit_platt(s[chosen], errors[chosen], 1 / pi[chosen], ridge=1e-3)
    assert a == pytest.approx(-1.0, abs=0.35) and b == pytest.approx(1.5, abs=0.25)
    q = calibration.apply_platt(s, a, b)
    assert calibration.expected_calibration_error(q, errors) < 0.02


def test_ece_of_a_perfect_forecast_is_zero():
    assert calibration.expected_calibration_error(np.array([0.0, 1.0]), np.array([0, 1])) == 0


def test_isotonic_refit_is_monotone_and_stored_as_json():
    import json

    rng = np.random.default_rng(3)
    s = rng.random(3000)
    errors = rng.random(len(s)) < s ** 2
    fit = calibration.fit_isotonic(s, errors, np.ones(len(s)))
    json.dumps(fit)
    q = calibration.refit(s, fit)
    order = np.argsort(s)
    assert (np.diff(q[order]) >= -1e-12).all()
    assert calibration.expected_calibration_error(q, errors) < 0.03
    assert np.array_equal(calibration.refit(s, None), s)
