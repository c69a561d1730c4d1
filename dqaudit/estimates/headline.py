"""The one noise number: what the cover, the CLI's last line, --json and FiftyOne's run info
state, and the verdict drawn from it. Functions of summary.json's dict."""

from __future__ import annotations

VERDICT_LEVELS = ("clean", "some noise", "noisy")
# Below these sizes one label more or less moves the share by whole points, and the probes'
# folds hold a handful of each class: the verdict says so (an App audit of a 9-sample view
# reported "clean, 0.0%" without a word)
SMALL_AUDIT_SAMPLES = 200
SMALL_CLASS_SAMPLES = 20
HEADLINE_HALF_WIDTH = 0.02  # the verified sample size the headline names: ±2 points


def headline(summary: dict) -> dict:
    """The one estimated share of wrong labels that the cover, the CLI's last line, --json and
    FiftyOne's run info state, with its interval and how it was obtained: the verified
    estimate when a verification sample was applied (``dqaudit verify``), else the gold-free
    CLR estimate with its plausible range, else the confident-joint count."""
    clr = summary.get("clr") or {}
    verified = summary.get("verified")
    sets = bool(summary.get("multi_label"))
    what = "label sets" if sets else "labels"
    # a sample drawn inside one split certifies that split, not the dataset
    split_verified = verified if verified and verified.get("split") else None
    verified = None if split_verified else verified
    if verified:
        rate, low, high = verified["estimate"], verified["ci_low"], verified["ci_high"]
        how = (f"verified sample of {verified['n_verified']:,} {what}, "
               f"{verified['n_errors_found']:,} wrong; {verified['estimator']} estimator, "
               f"95% interval")
        if verified.get("corrections_since_draw"):
            how += (f"; after {verified['corrections_since_draw']:,} corrections since the "
                    f"draw ({100 * verified['estimate_at_draw']:.1f}% as drawn)")
        source = "verified"
    elif clr.get("estimate") is not None:
        rate = clr["estimate"]
        low = clr.get("bracket_low", clr["ci_low"])
        high = clr.get("bracket_high", clr["ci_high"])
        need = summary.get("verify_size_for_2pt")
        how = ("gold-free (controlled injection), plausible range without verification"
               + (f"; about {need:,} verified labels would give ±2 points (dqaudit verify)"
                  if need else ""))
        source = "gold-free"
    elif sets and summary["multi_label"].get("wrong_set_range"):
        m = summary["multi_label"]
        rate = m["wrong_set_share"]
        low, high = m["wrong_set_range"]
        need = summary.get("verify_size_for_2pt")
        how = ("gold-free: the range is what the per-class counts of wrong answers allow "
               "however the errors fall together (at least the largest class count, at most "
               "their sum), not a statistical interval; the share is its centre"
               + (f"; about {need:,} verified sets would give ±2 points (dqaudit verify)"
                  if need else ""))
        source = "gold-free"
    else:  # audits written before the count was named for what it is
        rate = summary.get("confident_joint_rate", summary.get("estimated_noise_rate"))
        low, high = None, None
        how = "confident-joint count of the out-of-sample posteriors, no interval"
        if sets:  # no injection for sets: the count and the way to an interval
            need = summary.get("verify_size_for_2pt")
            how = ("the per-class confident-joint counts, calibrated and combined per set; no "
                   "gold-free range for sets" + (f"; about {need:,} verified sets would give "
                                                 "±2 points (dqaudit verify)" if need else ""))
        source = "count"
    stale = _stale(summary, verified if source == "verified" else clr)
    if stale and source in ("verified", "gold-free"):
        refresh = ("dqaudit verify DIR --apply DIR/verify_sample.csv" if source == "verified"
                   else "dqaudit clr DIR")
        how += f"; STALE: {stale:,} labels changed since this estimate, refresh with `{refresh}`"
    if split_verified:
        v = split_verified
        how += (f"; the {v['split']!r} split verified: {100 * v['estimate']:.1f}% "
                f"({100 * v['ci_low']:.1f}-{100 * v['ci_high']:.1f}%, {v['n_verified']:,} "
                "labels)")
    interval = {"verified": "verified 95% CI", "gold-free": "gold-free range"}.get(source)
    if low is None:
        span = ""
    elif source == "gold-free" and low <= 0:  # 0 by construction: an upper bound, in words
        span = f" (at most {100 * high:.1f}%)"
    else:
        span = f" ({100 * low:.1f}-{100 * high:.1f}%)"
    return {"rate": rate, "ci_low": low, "ci_high": high, "interval": interval,
            "source": source, "how": how,
            "stale_label_changes": stale if source != "count" else 0,
            "text": f"{100 * rate:.1f}% of {what} estimated wrong{span}; {how}",
            "flagged_for_review": summary["label_error_count"]}


def _stale(summary: dict, estimate: dict) -> int:
    """Label changes (relabel apply, verified corrections) since ``estimate`` was computed;
    0 when the estimate does not record it."""
    at = (estimate or {}).get("label_changes_at_estimate")
    return 0 if at is None else max(0, int(summary.get("label_changes", 0)) - int(at))


def verdict(summary: dict, *, thresholds: tuple[float, float]) -> dict:
    """A plain-language verdict from the headline noise rate (``headline``) and the leaks.

    ``thresholds`` (good, fair): at most ``good`` estimated noise is "clean", at most ``fair``
    "some noise", above it "noisy".
    """
    good, fair = thresholds
    head = headline(summary)
    rate = head["rate"]
    errors = summary["label_error_count"]
    about = "about " if head["source"] != "verified" else ""
    what = "label sets" if summary.get("multi_label") else "labels"
    if rate <= good:
        level, text = VERDICT_LEVELS[0], (f"{about}{100 * rate:.1f}% of {what} are estimated "
                                          "to be wrong, within the clean threshold of "
                                          f"{100 * good:.0f}%.")
    elif rate <= fair:
        level, text = VERDICT_LEVELS[1], (f"{about}{100 * rate:.1f}% of {what} are estimated "
                                          f"to be wrong; review the {errors:,} samples flagged "
                                          "for review before release.")
    else:
        level, text = VERDICT_LEVELS[2], (f"{about}{100 * rate:.1f}% of {what} are estimated "
                                          f"to be wrong, above {100 * fair:.0f}%; clean the "
                                          "labels before training or evaluating on this data "
                                          f"({errors:,} flagged for review).")
    leaks = summary["issue_counts"]["leak"]
    if leaks:
        text += f" {leaks:,} samples have near-duplicates in another split: evaluation is leaky."
    n = summary["n_samples"]
    smallest = min(summary["class_counts"].values())
    small = n < SMALL_AUDIT_SAMPLES or smallest < SMALL_CLASS_SAMPLES
    if small:
        text += (f" Only {n:,} samples ({smallest:,} in the smallest class): one label more or "
                 f"less moves the share by {100 / n:.1f} points, so this is a rough reading; "
                 "audit the whole dataset, or verify a sample, before quoting it.")
    return {"level": level, "text": text, "source": head["source"], "small_sample": small,
            "thresholds": {"clean_at_most": good, "some_noise_at_most": fair}}
