"""Relabelling: what a review budget is expected to fix, reviewing in priority order."""

from __future__ import annotations

import numpy as np

PLAN_RECOVERY_TARGETS = (0.5, 0.8)


def error_chances(error_probability: np.ndarray, n_errors: int) -> np.ndarray:
    """(N,) chances of a label error that sum to ``n_errors``: ``q ** g`` with the exponent g
    found by bisection. g > 1 sharpens (the usual case: disagreement over-counts errors, and a
    power keeps confident disagreements near 1 while shrinking the weak ones); where the raw
    sum is already below ``n_errors`` the values are scaled up instead."""
    q = np.clip(np.asarray(error_probability, dtype=np.float64), 0.0, 1.0)
    total = q.sum()
    if n_errors <= 0 or total <= 0:
        return np.zeros_like(q)
    if total <= n_errors:
        return np.clip(q * (n_errors / total), 0.0, 1.0)
    lo, hi = 1.0, 1.0
    while (q ** hi).sum() > n_errors and hi < 1e4:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        if (q ** mid).sum() > n_errors:
            lo = mid
        else:
            hi = mid
    return q ** hi


def relabel_plan(priority: np.ndarray, error_probability: np.ndarray, n_errors: int, *,
                 n_points: int = 40) -> dict:
    """Expected number of corrected labels against review budget.

    Each sample's chance of being a label error is ``error_chances``: its error probability
    sharpened so the chances sum to the estimated number of errors ``n_errors`` (the raw values
    also count the model's own mistakes). Reviewing in descending ``priority``, the expected
    corrections after b reviews is the sum of the first b chances; random review finds
    ``b * n_errors / N``.

    Returns budgets (ints), expected corrections for priority order and random order, and the
    budgets that recover 50% / 80% of the estimated errors (None when never reached).
    """
    n = len(priority)
    chance = error_chances(error_probability, n_errors)
    order = np.argsort(-priority, kind="stable")
    cumulative = np.cumsum(chance[order])
    budgets = np.unique(np.linspace(0, n, n_points + 1).round().astype(int))
    expected = [0.0] + [float(cumulative[b - 1]) for b in budgets[1:]]
    reached = {}
    for target in PLAN_RECOVERY_TARGETS:
        goal = target * n_errors
        hit = np.flatnonzero(cumulative >= goal) if n_errors > 0 else np.array([], dtype=int)
        reached[f"budget_for_{int(target * 100)}pct"] = int(hit[0] + 1) if len(hit) else None
    return {
        "budgets": budgets.tolist(),
        "expected_corrections_priority": [round(v, 1) for v in expected],
        "expected_corrections_random": [round(b * n_errors / n, 1) if n else 0.0
                                        for b in budgets],
        "estimated_errors": int(n_errors),
        **reached,
    }
