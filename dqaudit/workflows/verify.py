"""Verified samples: draw a probability sample of an audit's labels for a person to check, and
turn the checked labels into the noise rate a release can carry (``dqaudit verify``).

The design (``estimates.survey``): strata by the calibrated ``label_error_probability``, Neyman
allocation with a proportional share, simple random sampling within strata, every inclusion
probability recorded. The frame (every sample's stratum at the time of the first draw; the
store keeps it in ``verify_frame.parquet``) makes a later, larger ``--size`` grow the same
design. The checked labels also go into the relabel ledger, so nothing is checked twice.
Functions of an audit's values returning new values (``Audit`` records them): the design in
``summary["verification"]``, the estimate beside it in ``summary["verified"]``.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from dqaudit.dataset import SET_SEP, set_row, set_text
from dqaudit.errors import DqauditError
from dqaudit.estimates import survey
from dqaudit.io import outputs
from dqaudit.io.store import VERIFY_FRAME, VERIFY_SAMPLE_CSV
from dqaudit.scoring import calibration
from dqaudit.workflows.relabel import DROP_LABEL, EMPTY_SET

VERIFY_TAG = "dq_verify"
VERIFIED_NOTE = "verified sample"
SCORE_COLUMN = "label_error_probability"
TARGET_HALF_WIDTH = 0.02  # the cover says how many verified labels give +-2 points
# an object audit's verification sample says which box to check
BOX_PLACE = ("image_path", "box_x", "box_y", "box_w", "box_h")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _design_id(frame: pd.DataFrame, seed: int) -> str:
    h = hashlib.sha256()
    h.update(str(seed).encode())
    for sid, stratum in zip(frame["id"], frame["stratum"]):
        h.update(f"{sid}\t{stratum}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


def check_frame(frame: pd.DataFrame | None, samples: pd.DataFrame) -> pd.DataFrame | None:
    """The verification design's population ``frame``, checked to belong to ``samples``."""
    if frame is None:
        return None
    missing = set(frame["id"]) - set(samples["id"])
    if missing:
        raise DqauditError(f"{VERIFY_FRAME} was drawn on another audit ({len(missing)} of its "
                           f"samples are not in this one, e.g. {sorted(missing)[0]!r}); move "
                           f"{VERIFY_FRAME} and {VERIFY_SAMPLE_CSV} away to start a new design")
    return frame


def in_split(samples: pd.DataFrame, split: str | None) -> np.ndarray:
    """(N,) bool: the samples of ``split`` (every sample for None); a split the audit does not
    have is an error naming the splits it has. ``verify --split`` and ``evaluate --split``."""
    splits = samples["split"].astype(str).to_numpy() if "split" in samples.columns \
        else np.full(len(samples), "")
    if split is None:
        return np.ones(len(samples), dtype=bool)
    if not (splits == split).any():
        named = sorted(set(splits) - {""})
        raise DqauditError(f"--split {split!r}: no sample of this audit is in that split "
                           f"(its splits: {', '.join(named) if named else 'none'})")
    return splits == split


def _new_frame(samples: pd.DataFrame, probs: np.ndarray | None, split: str | None
               ) -> tuple[pd.DataFrame, np.ndarray]:
    """The population the sample is drawn from (every kept sample, or those of ``split``) with
    what the audit said of each at the draw: the given label, the calibrated error
    probability (the stratifying score) and the posteriors. Frozen here, so estimators that
    lean on them (``evaluate``) use values the verified labels did not shape."""
    if SCORE_COLUMN not in samples.columns or "given_label_disagreement" not in samples.columns:
        raise DqauditError("this audit has no calibrated label_error_probability (written by "
                           "dqaudit before 2026-12); run `dqaudit scan` again first")
    keep = ~samples["dropped"].astype(bool).to_numpy() if "dropped" in samples.columns \
        else np.ones(len(samples), dtype=bool)
    keep &= in_split(samples, split)
    splits = samples["split"].astype(str).to_numpy() if "split" in samples.columns \
        else np.full(len(samples), "")
    active = samples[keep]
    q = active[SCORE_COLUMN].to_numpy(dtype=np.float64)
    cuts = survey.strata_cuts(q)
    frame = pd.DataFrame({"id": active["id"].to_numpy(), "path": active["path"].to_numpy(),
                          "given_label": active["label"].to_numpy(), "score": q,
                          "split": splits[keep], "stratum": survey.assign_strata(q, cuts)})
    if probs is not None:
        frame["probs"] = list(np.asarray(probs, dtype=np.float32)[keep])
    return frame, cuts


def _design_arrays(frame: pd.DataFrame):
    strata = frame["stratum"].to_numpy(dtype=np.int64)
    n_strata = int(strata.max()) + 1 if len(strata) else 0
    sizes = np.bincount(strata, minlength=n_strata)
    q = frame["score"].to_numpy(dtype=np.float64)
    return strata, n_strata, sizes, q


def draw_sample(*, samples: pd.DataFrame, summary: dict, probs: np.ndarray | None,
                frame: pd.DataFrame | None, sample: pd.DataFrame | None, size: int,
                seed: int, uniform_share: float, split: str | None,
                half_width: float | None) -> dict:
    """Draw (or grow to ``size``) an audit's verification sample.

    A first draw (``frame`` None) makes the design: the population (every kept sample, or
    those of ``split``), its strata, ``seed`` and ``uniform_share`` (the share allocated in
    proportion to stratum size; 1 is proportional allocation: no variance gain from the
    scores, but the tightest bound when no error is found). A later draw grows the same design
    (``split`` and ``uniform_share`` must be its own or None). Returns ``frame``, ``sample``
    (id, path, given label, stratum, inclusion probability, draw, design, an empty
    ``verified_label``; rows a person already filled keep their values; new rows in a random
    order, so checking top to bottom and stopping early still leaves a random sample within
    every stratum), ``design`` (``summary["verification"]``) and ``result`` (what was drawn,
    the predicted half-width of the 95% interval and, with ``half_width``, how many more
    labels reach it).
    """
    frame = check_frame(frame, samples)
    design = dict(summary.get("verification") or {})
    if frame is None:
        frame, cuts = _new_frame(samples, probs, split)
        design = {"seed": int(seed), "cuts": [round(float(c), 6) for c in cuts],
                  "split": split,
                  "score": SCORE_COLUMN, "drawn_at": _now(), "draws": 0,
                  "uniform_share": float(uniform_share)}
        previous = None
    else:
        if not design:
            raise DqauditError(f"{VERIFY_FRAME} exists but summary.json has no "
                               "verification design; move it away to start again")
        seed = design["seed"]
        if split is not None and split != design.get("split"):
            drawn = f"split {design['split']!r}" if design.get("split") else "every split"
            raise DqauditError(f"the sample was drawn from {drawn}; a grown sample keeps its "
                               f"population (move {VERIFY_FRAME} and {VERIFY_SAMPLE_CSV} away "
                               f"to draw from --split {split})")
        if uniform_share is not None and uniform_share != design["uniform_share"]:
            raise DqauditError(f"the sample was drawn with --uniform-share "
                               f"{design['uniform_share']}; a grown sample keeps its design")
        previous = sample
    strata, n_strata, sizes, q = _design_arrays(frame)
    if size < survey.MIN_PER_STRATUM * n_strata:
        raise DqauditError(f"--size must be at least {survey.MIN_PER_STRATUM * n_strata} "
                           f"({survey.MIN_PER_STRATUM} per stratum, {n_strata} strata)")
    if size > len(frame):
        raise DqauditError(f"--size {size} is larger than the {len(frame)} samples audited")
    sd = survey.stratum_model_sd(q, strata, n_strata)
    share = {"uniform_share": design["uniform_share"]}
    position = {sid: i for i, sid in enumerate(frame["id"])}
    already = np.zeros(len(frame), dtype=bool)
    if previous is not None:
        already[[position[s] for s in previous["id"] if s in position]] = True
        if size < already.sum():
            raise DqauditError(f"the sample already holds {int(already.sum())} samples; a "
                               "larger --size grows it, a smaller one cannot shrink it")
        current = np.bincount(strata[already], minlength=n_strata)
        allocation = survey.grow_allocation(sizes, sd, current, size, **share)
    else:
        allocation = survey.allocate(sizes, sd, size, **share)
    chosen = survey.draw(strata, allocation, seed=seed, already=already)
    design_id = _design_id(frame, seed)
    draw_number = int(design.get("draws", 0)) + (1 if (chosen & ~already).any() else 0)
    new_idx = np.flatnonzero(chosen & ~already)
    new_idx = np.random.default_rng([seed, draw_number]).permutation(new_idx)
    pi = allocation / np.maximum(sizes, 1)
    new_rows = pd.DataFrame({
        "id": frame["id"].to_numpy()[new_idx], "path": frame["path"].to_numpy()[new_idx],
        "given_label": frame["given_label"].to_numpy()[new_idx],
        "stratum": strata[new_idx].astype(str), "draw": str(draw_number),
        "verified_label": ""})
    table = pd.concat([previous, new_rows], ignore_index=True) if previous is not None \
        else new_rows
    table["inclusion_probability"] = [f"{pi[int(h)]:.6g}" for h in table["stratum"]]
    table["design"] = design_id
    table = table[["id", "path", "given_label", "stratum", "inclusion_probability", "draw",
                   "design", "verified_label"]]
    objects = summary["dataset"]["source"].get("unit") == "object"
    if objects:  # which box to check: its image and where it lies there (pixels)
        where = samples.set_index("id")[list(BOX_PLACE)]
        table = table.join(where, on="id")
        table = table[["id", "path", *BOX_PLACE] + [c for c in table.columns
                                                    if c not in ("id", "path", *BOX_PLACE)]]
    predicted = survey.predicted_half_width(q, strata, n_strata, size, **share)
    design.update({
        "design_id": design_id, "draws": draw_number, "n_strata": n_strata,
        "stratum_sizes": sizes.tolist(), "allocation": allocation.tolist(),
        "n_drawn": int(chosen.sum()), "n_samples": int(len(frame)),
        "predicted_half_width": round(predicted, 4),
        "n_for_target_half_width": survey.sample_size_for(TARGET_HALF_WIDTH, q, strata,
                                                          n_strata, **share),
        "target_half_width": TARGET_HALF_WIDTH,
        "description": (f"the {design['split']!r} split's samples, " if design.get("split")
                        else "") +
                       f"stratified by {SCORE_COLUMN} ({n_strata} strata, cumulative sqrt(f) "
                       f"boundaries), Neyman allocation with a {design['uniform_share']:.0%} "
                       "proportional share, simple random sampling within strata",
    })
    result = {"n_drawn": int(chosen.sum()), "n_new": int(len(new_idx)),
              "predicted_half_width": predicted,
              "n_for_target_half_width": design["n_for_target_half_width"]}
    if half_width is not None:
        needed = survey.sample_size_for(half_width, q, strata, n_strata, **share)
        result["n_for_half_width"] = needed
        result["n_more_for_half_width"] = max(0, needed - int(chosen.sum()))
    return {"frame": frame, "sample": table, "design": design, "result": result}


def _read_verified(path_or_frame, sample: pd.DataFrame, design_id: str,
                   classes: list[str], sets: bool) -> pd.DataFrame:
    """The filled rows of a verified-labels file, validated against the drawn sample."""
    new = path_or_frame if isinstance(path_or_frame, pd.DataFrame) else \
        outputs.read_user_csv(path_or_frame)
    new = new.astype(str)
    for col in ("id", "verified_label"):
        if col not in new.columns:
            raise DqauditError(f"the verified-labels file needs an {col!r} column (as in "
                               f"{VERIFY_SAMPLE_CSV})")
    drawn = set(sample["id"])
    valid = set(classes) | {DROP_LABEL}
    for row, (sid, label) in enumerate(zip(new["id"], new["verified_label"]), start=2):
        if "design" in new.columns and new["design"].iat[row - 2] not in ("", design_id):
            raise DqauditError(f"row {row}: drawn by another verification design "
                               f"({new['design'].iat[row - 2]!r}, this audit's is "
                               f"{design_id!r}); nothing was written")
        if sid not in drawn:
            raise DqauditError(f"row {row}: {sid!r} is not in this audit's verification "
                               "sample; nothing was written")
        if sets and label.strip() and label.strip() not in (DROP_LABEL, EMPTY_SET):
            set_row(label, classes, what=f"row {row}")  # an unknown class: the error
        elif not sets and label.strip() and label.strip() not in valid:
            raise DqauditError(f"row {row}: {label!r} is not a class of this audit (valid: "
                               f"{', '.join(classes)} or {DROP_LABEL}); nothing was written")
    new = new.assign(verified_label=new["verified_label"].str.strip())
    if sets:  # as the audit writes a set; the empty set as EMPTY_SET (blank: not checked)
        new["verified_label"] = [v if v in ("", DROP_LABEL, EMPTY_SET) else
                                 set_text(set_row(v, classes, what="verified set"), classes)
                                 or EMPTY_SET for v in new["verified_label"]]
    return new[new["verified_label"] != ""].drop_duplicates("id", keep="last")


def _merge_checked(sample: pd.DataFrame, verified, design: dict, classes: list[str],
                   sets: bool) -> pd.DataFrame:
    """The verification ``sample`` with the checked labels of ``verified`` (validated by
    ``_read_verified``) merged in."""
    sample = sample.copy()
    checked = _read_verified(verified, sample, design["design_id"], classes, sets)
    merged = dict(zip(checked["id"], checked["verified_label"]))
    sample["verified_label"] = [merged.get(s, v) for s, v in
                                zip(sample["id"], sample["verified_label"])]
    return sample


def estimate_verified(verified, *, samples: pd.DataFrame, summary: dict,
                      frame: pd.DataFrame | None, sample: pd.DataFrame | None,
                      ledger: pd.DataFrame, changelog: pd.DataFrame, estimator: str) -> dict:
    """Estimate the share of wrong labels from the checked rows of ``verified`` (a CSV path or
    DataFrame with ``id`` and ``verified_label``: a class name, ``DROP`` for a sample that is
    not valid at all, counted as a wrong label, or blank for not checked yet).

    Returns ``verified``: the block ``summary["verified"]`` (estimate and 95% interval for the
    labels as they were drawn and, after the corrections since then, for the current labels;
    per-class rates; the design and estimator; the re-fit of ``label_error_probability`` on the
    verified sample: weighted isotonic regression, 1 / inclusion probability), ``sample`` (the
    checked labels merged in: the file is the record) and ``todo``: the checked labels not yet
    in the ledger, as corrections (``Audit.apply_verified`` adds them and re-ranks).
    """
    design = summary.get("verification")
    frame = check_frame(frame, samples)
    if not design or sample is None or frame is None:
        raise DqauditError("no verification sample; draw one first (`dqaudit verify AUDIT "
                           "--size N`, audit.draw_verification_sample(size=N))")
    classes = summary["dataset"]["classes"]
    sets = bool(summary.get("multi_label"))
    sample = _merge_checked(sample, verified, design, classes, sets)
    done = sample[sample["verified_label"].str.strip() != ""]
    if done.empty:
        raise DqauditError("no row has a verified_label yet; fill some in (a class name, or "
                           f"{DROP_LABEL}) and apply again")
    strata, n_strata, sizes, q = _design_arrays(frame)
    position = {sid: i for i, sid in enumerate(frame["id"])}
    idx = np.array([position[s] for s in done["id"]])
    s_strata = strata[idx]
    per_stratum = np.bincount(s_strata, minlength=n_strata)
    empty = np.flatnonzero(per_stratum == 0)
    if len(empty):
        h = int(empty[0])
        rows = [i + 2 for i, st in enumerate(sample["stratum"]) if int(st) == h][:3]
        raise DqauditError(f"stratum {h} has none of its drawn samples verified yet (e.g. rows "
                           f"{', '.join(map(str, rows))} of {VERIFY_SAMPLE_CSV}); every "
                           "stratum needs at least one")
    given = frame["given_label"].to_numpy()[idx]
    checked = done["verified_label"].to_numpy()
    if sets:
        checked = np.where(checked == EMPTY_SET, "", checked)
    y = (checked != given).astype(np.int64)
    q_means = np.bincount(strata, weights=q, minlength=n_strata) / sizes
    est = survey.estimate_rate(y, s_strata, sizes, estimator=estimator, q_sample=q[idx],
                               q_means=q_means)
    weights = (sizes / per_stratum)[s_strata]
    # the flag's precision as the verified sample measures it: the weighted share of wrong
    # labels among the verified samples the audit had flagged as label errors
    flags = samples.set_index("id")["issues"].map(lambda v: "label_error" in list(v))
    flagged = flags.reindex(done["id"]).fillna(False).to_numpy(dtype=bool)
    flag_precision = None if not flagged.any() else {
        "estimate": round(float((weights[flagged] * y[flagged]).sum() /
                                weights[flagged].sum()), 4),
        "n_flagged_verified": int(flagged.sum())}
    per_class = {}
    for name in classes:
        m = np.array([name in g.split(SET_SEP) for g in given]) if sets else given == name
        if m.any():
            per_class[name] = {"n_verified": int(m.sum()),
                               "verified_rate": round(float(
                                   (weights[m] * y[m]).sum() / weights[m].sum()), 4)}
    # corrections since the draw fix known errors: the current labels' share is lower
    corrected = _corrected_since(changelog, design["drawn_at"],
                                 set(frame["id"]) - set(done["id"]))
    fixed_in_sample = int(y.sum())
    n_pop = len(frame)
    shift = (fixed_in_sample + corrected) / n_pop
    refit = calibration.fit_isotonic(q[idx], y, weights)
    verified_block = {
        "estimate": round(max(est.estimate - shift, 0.0), 4),
        "ci_low": round(max(est.ci_low - shift, 0.0), 4),
        "ci_high": round(max(est.ci_high - shift, 0.0), 4),
        "estimate_at_draw": round(est.estimate, 4), "ci_low_at_draw": round(est.ci_low, 4),
        "ci_high_at_draw": round(est.ci_high, 4),
        "half_width": round(est.half_width, 4), "std_error": round(est.std_error, 4),
        "n_verified": est.n_verified, "n_drawn": int(len(sample)),
        "n_errors_found": est.n_errors_found, "n_samples": n_pop,
        "corrections_since_draw": int(fixed_in_sample + corrected),
        "design": design["description"], "design_id": design["design_id"],
        "split": design.get("split"),
        "estimator": est.estimator, "interval": est.interval, "confidence": survey.CONFIDENCE,
        "per_class": per_class, "verified_at": _now(), "flag_precision": flag_precision,
        "label_error_probability_refit": refit,
    }
    # the checked labels are annotations too; each verified row enters the ledger once
    seen = set(ledger.loc[ledger["note"] == VERIFIED_NOTE, "id"])
    todo = done[~done["id"].isin(seen)]
    return {"verified": verified_block, "sample": sample,
            "todo": pd.DataFrame({"id": todo["id"], "label": todo["verified_label"],
                                  "annotator": todo.get("annotator", ""),
                                  "note": VERIFIED_NOTE})}


def _corrected_since(log: pd.DataFrame, since: str, ids: set) -> int:
    """How many of ``ids`` had their label changed (or were dropped) after ``since``."""
    if not len(log):
        return 0
    log = log[(log["time"] >= since) & log["id"].isin(ids)]
    return int(log["id"].nunique())


def record_verified(verified: pd.DataFrame, *, summary: dict, sample: pd.DataFrame | None
                    ) -> tuple[pd.DataFrame, dict]:
    """The verification ``sample`` with checked labels (``id``, ``verified_label``) merged in,
    and ``{"recorded": n, "estimated": e, "n_verified": m, "missing_strata": [...]}``, ``e``
    True once every stratum has at least one checked label (then ``Audit.record_verified``
    estimates). The App's verification operator records each batch a reviewer checks."""
    design = summary.get("verification")
    if not design or sample is None:
        raise DqauditError("no verification sample; draw one first (dqaudit verify AUDIT "
                           "--size N)")
    sample = _merge_checked(sample, verified, design, summary["dataset"]["classes"],
                            bool(summary.get("multi_label")))
    recorded = int((verified["verified_label"].astype(str).str.strip() != "").sum())
    done = sample[sample["verified_label"] != ""]
    missing = sorted(set(range(design["n_strata"])) - set(done["stratum"].astype(int)))
    return sample, {"recorded": recorded, "estimated": not missing, "n_verified": len(done),
                    "missing_strata": missing}
