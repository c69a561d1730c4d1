"""Survey sampling for the verified noise rate: design, estimators, intervals (estimates.survey)."""

import numpy as np
import pytest

from dqaudit.errors import DqauditError
from dqaudit.estimates import survey


def population(n=4000, seed=0):
    """Scores q in [0, 1] and errors drawn as Bernoulli(q): a model that is calibrated."""
    rng = np.random.default_rng(seed)
    q = rng.beta(0.4, 4.0, size=n)
    errors = rng.random(n) < q
    return q, errors


def design(q, n):
    cuts = survey.strata_cuts(q)
    strata = survey.assign_strata(q, cuts)
    h = int(strata.max()) + 1
    sizes = np.bincount(strata, minlength=h)
    sd = survey.stratum_model_sd(q, strata, h)
    return strata, sizes, sd, survey.allocate(sizes, sd, n)


def test_allocation_sums_to_n_with_floors_and_caps():
    sizes = np.array([1000, 300, 50, 5])
    sd = np.array([0.05, 0.2, 0.45, 0.5])
    n_h = survey.allocate(sizes, sd, 100)
    assert n_h.sum() == 100
    assert (n_h >= 2).all() and (n_h <= sizes).all()
    # the uncertain strata are sampled at a higher rate than the confident one
    assert n_h[2] / sizes[2] > n_h[0] / sizes[0]
    # a stratum smaller than its share is taken whole and the rest passed on
    n_h = survey.allocate(np.array([1000, 3]), np.array([0.1, 0.5]), 200)
    assert n_h.tolist()[1] == 3 and n_h.sum() == 200


def test_inclusion_probabilities_sum_to_the_sample_size():
    q, _ = population()
    strata, sizes, _, n_h = design(q, 200)
    chosen = survey.draw(strata, n_h, seed=3)
    assert chosen.sum() == 200
    pi = (n_h / sizes)[strata]
    assert np.isclose(pi.sum(), 200)
    assert np.array_equal(np.bincount(strata[chosen], minlength=len(sizes)), n_h)


def test_draw_is_seeded_and_growing_keeps_the_earlier_draw():
    q, _ = population()
    strata, sizes, sd, n_h = design(q, 100)
    first = survey.draw(strata, n_h, seed=1)
    assert np.array_equal(first, survey.draw(strata, n_h, seed=1))
    current = np.bincount(strata[first], minlength=len(sizes))
    grown_alloc = survey.grow_allocation(sizes, sd, current, 300)
    assert grown_alloc.sum() == 300 and (grown_alloc >= current).all()
    grown = survey.draw(strata, grown_alloc, seed=1, already=first)
    assert grown.sum() == 300
    assert grown[first].all()


@pytest.mark.parametrize("estimator", survey.ESTIMATORS)
def test_estimators_are_unbiased_over_many_draws(estimator):
    q, errors = population(seed=2)
    truth = errors.mean()
    strata, sizes, _, n_h = design(q, 150)
    q_means = np.bincount(strata, weights=q) / sizes
    estimates = []
    for seed in range(1500):
        s = survey.draw(strata, n_h, seed=seed)
        est, _ = survey.point_estimate(errors[s].astype(float), strata[s], sizes,
                                       estimator=estimator, q_sample=q[s], q_means=q_means)
        estimates.append(est)
    estimates = np.array(estimates)
    se = estimates.std() / np.sqrt(len(estimates))
    assert abs(estimates.mean() - truth) < 4 * se + 1e-3


def test_interval_covers_the_truth_at_nominal_rate():
    q, errors = population(n=3000, seed=4)
    truth = errors.mean()
    strata, sizes, _, n_h = design(q, 100)
    q_means = np.bincount(strata, weights=q) / sizes
    covered = []
    for seed in range(400):
        s = survey.draw(strata, n_h, seed=seed)
        e = survey.estimate_rate(errors[s].astype(int), strata[s], sizes, q_sample=q[s],
                                 q_means=q_means)
        assert 0.0 <= e.ci_low <= e.estimate <= e.ci_high <= 1.0
        covered.append(e.ci_low <= truth <= e.ci_high)
    assert np.mean(covered) >= 0.93


def test_zero_errors_give_the_exact_bound():
    # proportional allocation: the binomial bound 1 - 0.05^(1/n), under 2% at n = 150
    sizes = np.array([600, 300, 100])
    bound = survey.zero_error_upper_bound(sizes, np.array([90, 45, 15]))
    assert bound == pytest.approx(1 - 0.05 ** (1 / 150), rel=1e-3)
    assert bound < 0.02
    # a stratum sampled below its share makes the bound wider, never narrower
    assert survey.zero_error_upper_bound(sizes, np.array([60, 45, 45])) > bound
    low, high, how = survey.interval(0.0, 0.0, n=150, n_errors=0, n_strata=3, sizes=sizes,
                                     n_h=np.array([90, 45, 15]))
    assert low == 0.0 and high == pytest.approx(bound) and "zero" in how


def test_small_counts_stay_inside_zero_one():
    sizes = np.array([900, 100])
    y = np.zeros(60, dtype=int)
    y[0] = 1
    strata = np.array([0] * 40 + [1] * 20)
    e = survey.estimate_rate(y, strata, sizes)
    assert e.ci_low >= 0.0 and e.ci_high > e.estimate > 0
    assert e.n_errors_found == 1


def test_sample_size_for_a_half_width_is_monotone():
    q, _ = population()
    strata, sizes, _, _ = design(q, 100)
    h = len(sizes)
    n2 = survey.sample_size_for(0.02, q, strata, h)
    n4 = survey.sample_size_for(0.04, q, strata, h)
    assert n4 < n2 <= len(q)
    assert survey.predicted_half_width(q, strata, h, n2) <= 0.02


def test_unknown_estimator_names_the_valid_ones():
    with pytest.raises(DqauditError, match="stratified, difference, regression"):
        survey.point_estimate(np.zeros(4), np.zeros(4, dtype=int), np.array([10]),
                              estimator="bogus")
