"""Relabelling plan maths: what a review budget is expected to fix, reviewing by
``review_score``. Pure numpy, beside the scores it reads."""

from __future__ import annotations

import numpy as np

PLAN_RECOVERY_TARGETS = (0.5, 0.8)


def relabel_plan(review_order: np.ndarray, error_probability: np.ndarray, *,
                 n_points: int = 40) -> dict:
    """Expected number of corrected labels against review budget.

    ``error_probability`` is each sample's calibrated chance of a label error (the
    ``label_error_probability`` column; ``scoring.calibration``), whose sum E is the expected
    number of wrong labels. Reviewing in descending ``review_order`` (the ``review_score``
    column), the expected corrections after b reviews is the sum of the first b chances; random
    review finds ``b * E / N``: both reach E at b = N. (E, not the scan's confident-joint count:
    after a verified re-fit of the chances the two differ, and a plan that mixed them ended its
    random curve above its review-order curve.)

    Returns budgets (ints), expected corrections in review order (key
    ``expected_corrections_priority``) and random order, and the budgets that recover 50% / 80%
    of the estimated errors (None when never reached).
    """
    n = len(review_order)
    chance = np.clip(np.asarray(error_probability, dtype=np.float64), 0.0, 1.0)
    total = float(chance.sum())
    order = np.argsort(-review_order, kind="stable")
    cumulative = np.cumsum(chance[order])
    budgets = np.unique(np.linspace(0, n, n_points + 1).round().astype(int))
    expected = [0.0] + [float(cumulative[b - 1]) for b in budgets[1:]]
    reached = {}
    for target in PLAN_RECOVERY_TARGETS:
        goal = target * total
        hit = np.flatnonzero(cumulative >= goal - 1e-9) if total > 0 else np.array([], dtype=int)
        reached[f"budget_for_{int(target * 100)}pct"] = int(hit[0] + 1) if len(hit) else None
    return {
        "budgets": budgets.tolist(),
        "expected_corrections_priority": [round(v, 1) for v in expected],
        "expected_corrections_random": [round(float(b) * total / n, 1) if n else 0.0
                                        for b in budgets],
        "estimated_errors": int(round(total)),
        **reached,
    }
