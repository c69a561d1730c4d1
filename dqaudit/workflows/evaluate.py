"""What the label noise does to a model's test numbers (``dqaudit evaluate``).

A model's accuracy measured against noisy labels is biased: where the given label is wrong, a
right prediction counts as a miss and a prediction that repeats the annotator's mistake counts
as a hit. For each model this module states three numbers on one split:

- ``observed_accuracy``: agreement with the labels as scanned, exact (what the user measures);
- ``gold_free``: the estimate from the audit's posterior over the true class
  (``true_class_posterior``) and a range that holds whenever the share of wrong labels is within
  the audit's plausible range, however the errors fall (``accuracy_range``);
- ``accuracy``: with verified labels of the split (``dqaudit verify --split``), a design-based
  95% interval (``verified_accuracy``): the difference estimator of the survey module with the
  posterior's probability that the prediction is right as the proxy, valid whatever the
  encoder's quality because the proxy only narrows it; else the gold-free numbers.

The maths are functions of arrays in ``estimates.accuracy``; ``evaluate`` applies them to an
audit's values.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dqaudit.errors import DqauditError
from dqaudit.estimates import survey
from dqaudit.estimates.accuracy import (
    accuracy_range,
    paired_difference,
    recall_table,
    true_class_posterior,
    verified_accuracy,
)
from dqaudit.estimates.headline import headline
from dqaudit.io import outputs
from dqaudit.io.predictions import read_predictions
from dqaudit.workflows.verify import check_frame, in_split

EVALUATION = "evaluation"
ESTIMATOR = "difference"  # measured against stratified and regression: benchmarks/RESULTS.md


# --------------------------------------------------------------------------- arrays












# --------------------------------------------------------------------------- an audit's models







def scanned_labels(samples: pd.DataFrame, changelog: pd.DataFrame | None) -> np.ndarray:
    """(N,) each sample's label as the scan read it: its label now, or the old label of its
    first entry in ``changelog.csv`` when a correction changed it since."""
    labels = samples["label"].astype(str).to_numpy().copy()
    if changelog is None or not len(changelog):
        return labels
    first = changelog.sort_values("time", kind="stable").drop_duplicates("id", keep="first")
    before = dict(zip(first["id"], first["old_label"]))
    return np.array([before.get(sid, lab) for sid, lab in zip(samples["id"], labels)],
                    dtype=object)


def evaluate_models(*, samples: pd.DataFrame, summary: dict, probs: np.ndarray,
                    predictions: dict[str, pd.DataFrame], split: str | None,
                    changelog: pd.DataFrame | None, frame: pd.DataFrame | None,
                    sample: pd.DataFrame | None) -> dict:
    """The ``evaluation`` block of summary.json for ``predictions`` (name -> ``read_predictions``
    table) on ``split`` (None: every predicted sample). ``frame``/``sample``: the verification
    design (``verify_frame.parquet``) and its drawn rows (``verify_sample.csv``), or None."""
    classes = summary["dataset"]["classes"]
    index = {c: j for j, c in enumerate(classes)}
    chosen = in_split(samples, split)
    n_split = int(chosen.sum())
    scanned = np.array([index[c] for c in scanned_labels(samples, changelog)])
    current = np.array([index[c] for c in samples["label"].astype(str)])
    # a sample dropped as junk (DROP) has no right class: a known wrong label, never a hit
    dropped = samples["dropped"].to_numpy(dtype=bool) if "dropped" in samples.columns \
        else np.zeros(len(samples), dtype=bool)
    q = np.where(dropped, 1.0, samples["label_error_probability"].to_numpy(dtype=np.float64))
    truth = true_class_posterior(given=current, error_probability=q,
                                 probs=np.nan_to_num(probs, nan=0.0))
    truth[dropped] = 0.0
    head = headline(summary)
    # the split's share of wrong labels, and its high end at the headline's relative range
    rate = float(q[chosen].mean())
    noise_high = min(1.0, rate * (head["ci_high"] / head["rate"]) if head.get("ci_high")
                     is not None and head["rate"] > 0 else max(rate, head["rate"]))
    design = _verified_design(frame, sample, summary, split)
    if design is not None:
        design["row_of"] = {sid: i for i, sid in enumerate(samples["id"].astype(str))}
    models, hits = [], {}
    for name, table in predictions.items():
        table = table[chosen[table["row"].to_numpy()]]
        if not len(table):
            raise DqauditError(f"--predictions {name}: none of its rows is in the "
                               f"{split!r} split" if split else
                               f"--predictions {name}: no rows")
        rows, pred = table["row"].to_numpy(), table["predicted"].to_numpy()
        observed = float((pred == scanned[rows]).mean())
        agreement = float((pred == current[rows]).mean())
        f = truth[rows, pred]
        low, high = accuracy_range(agreement=agreement, noise_high=noise_high)
        gold = {"estimate": round(float(np.clip(f.mean(), low, high)), 4),
                "low": round(low, 4), "high": round(high, 4),
                "noise_high": round(noise_high, 4)}
        entry = {"name": name, "n_predicted": int(len(rows)),
                 "coverage": round(len(rows) / max(n_split, 1), 4),
                 "observed_accuracy": round(observed, 4), "gold_free": gold}
        observed_recall, corrected_recall = recall_table(
            predicted=pred, observed_truth=scanned[rows], truth_weights=truth[rows],
            n_classes=len(classes))
        verified, why = _verified_model(design, rows, pred, len(classes)) if design else \
            (None, _no_design_reason(split))
        if verified is not None:
            entry["accuracy"] = verified["accuracy"]
            corrected_recall = verified["recall"]
            entry["confusion"] = verified["confusion"]
            hits[name] = verified["paired"]
        else:
            entry["accuracy"] = {"estimate": gold["estimate"], "ci_low": gold["low"],
                                 "ci_high": gold["high"], "method": "gold-free", "why": why}
        entry["per_class"] = [
            {"class": c, "n_given": int((scanned[rows] == j).sum()),
             "observed_recall": None if np.isnan(o) else round(float(o), 4),
             "corrected_recall": None if np.isnan(r) else round(float(r), 4)}
            for j, (c, o, r) in enumerate(zip(classes, observed_recall, corrected_recall))]
        entry["sentence"] = _sentence(entry, split)
        models.append(entry)
    pairs = _pairs(models, hits)
    by_observed = sorted(models, key=lambda m: -m["observed_accuracy"])
    by_corrected = sorted(models, key=lambda m: -m["accuracy"]["estimate"])
    largest = max(models, key=lambda m: abs(m["accuracy"]["estimate"] - m["observed_accuracy"]))
    return {"split": split, "n_split": n_split, "models": models,
            "ranking": {"observed": [m["name"] for m in by_observed],
                        "corrected": [m["name"] for m in by_corrected]},
            "pairs": pairs,
            "largest_correction": {"name": largest["name"], "points": round(
                100 * (largest["accuracy"]["estimate"] - largest["observed_accuracy"]), 1)},
            "estimator": ESTIMATOR}


def _no_design_reason(split) -> str:
    where = f" --split {split}" if split else ""
    return (f"no verified labels of this split; `dqaudit verify AUDIT{where} --size 300` draws "
            "a sample whose checked labels give a 95% interval")


def _verified_design(frame, sample, summary, split) -> dict | None:
    """The verified rows of ``split`` in the design's strata, with the proxy's inputs frozen at
    the draw; ``{"why": ...}`` when they cannot support an interval; None without a design."""
    if frame is None or sample is None:
        return None
    done = sample[sample["verified_label"].astype(str).str.strip() != ""]
    if split is not None:
        if "split" in frame.columns:
            frame = frame[frame["split"].astype(str) == split]
        else:
            return {"why": "the verification design predates splits; draw again with --split"}
    if not len(frame) or not len(done):
        return {"why": _no_design_reason(split)}
    classes = summary["dataset"]["classes"]
    return {"frame": frame.reset_index(drop=True), "done": done, "classes": classes,
            "why": None}


def _verified_model(design: dict, rows: np.ndarray, pred: np.ndarray, n_classes: int
                    ) -> tuple[dict | None, str | None]:
    """(the verified accuracy of one model, None) or (None, why it has none). ``design`` is
    shared by the models and never changed here: one model's reason is not another's."""
    if design["why"] is not None:
        return None, design["why"]
    frame, done, classes = design["frame"], design["done"], design["classes"]
    index = {c: j for j, c in enumerate(classes)}
    predicted = dict(zip(rows.tolist(), pred.tolist()))
    # the evaluated population: the design's samples that this model predicted
    ids = frame["id"].astype(str).to_numpy()
    row_of = design["row_of"]
    frame_rows = np.array([row_of.get(i, -1) for i in ids])
    in_pop = np.array([r in predicted for r in frame_rows])
    if not in_pop.any():
        return None, "no sample of the verification design is among this model's predictions"
    strata_all = frame["stratum"].to_numpy(dtype=np.int64)
    present = np.unique(strata_all[in_pop])
    remap = {h: k for k, h in enumerate(present)}
    pop = np.flatnonzero(in_pop)
    strata = np.array([remap[h] for h in strata_all[pop]])
    sizes = np.bincount(strata, minlength=len(present)).astype(float)
    given = np.array([index[c] for c in frame["given_label"].astype(str).to_numpy()[pop]])
    model_pred = np.array([predicted[r] for r in frame_rows[pop]])
    if "probs" in frame.columns:
        p = np.stack(frame["probs"].to_numpy()[pop]).astype(np.float64)
        t = true_class_posterior(given=given, error_probability=frame["score"].to_numpy(
            dtype=np.float64)[pop], probs=p)
        f = t[np.arange(len(pop)), model_pred]
        estimator = ESTIMATOR
    else:  # a design drawn before the posteriors were kept: no proxy, a wider interval
        f = np.zeros(len(pop))
        estimator = "stratified"
    position = {sid: k for k, sid in enumerate(ids[pop])}
    verified = done[done["id"].astype(str).isin(position)]
    k = np.array([position[s] for s in verified["id"].astype(str)], dtype=np.int64)
    if not len(k):
        return None, ("no verified sample is among this model's predictions; predict the "
                      "images of verify_sample.csv too")
    n_h = np.bincount(strata[k], minlength=len(present))
    if (n_h < survey.MIN_PER_STRATUM).any():
        return None, (f"too few verified labels among this model's predictions "
                      f"({int(len(k))}; every stratum needs {survey.MIN_PER_STRATUM}); "
                      "verify more of the split (dqaudit verify --split)")
    labels = verified["verified_label"].astype(str).str.strip().to_numpy()
    true = np.array([index.get(v, -1) for v in labels])  # DROP: no right answer exists
    z = (model_pred[k] == true).astype(np.float64)
    f_means = np.bincount(strata, weights=f, minlength=len(present)) / sizes
    est = verified_accuracy(correct=z, sample_strata=strata[k], sizes=sizes,
                            proxy_sample=f[k], proxy_means=f_means, estimator=estimator)
    weight = (sizes / n_h)[strata[k]]
    onehot = np.zeros((len(k), n_classes))
    valid = true >= 0
    onehot[np.flatnonzero(valid), true[valid]] = weight[valid]
    _, recall = recall_table(predicted=model_pred[k], observed_truth=np.where(valid, true, 0),
                             truth_weights=onehot, n_classes=n_classes)
    confusion = np.zeros((n_classes, n_classes))
    np.add.at(confusion, (true[valid], model_pred[k][valid]), weight[valid])
    return {"accuracy": {"estimate": round(est.estimate, 4), "ci_low": round(est.ci_low, 4),
                         "ci_high": round(est.ci_high, 4), "method": "verified",
                         "estimator": estimator, "interval": est.interval,
                         "n_verified": int(len(k)),
                         "n_dropped_as_junk": int((~valid).sum())},
            "recall": recall,
            "confusion": {"classes": classes, "estimated_counts": np.round(confusion, 1
                                                                           ).tolist(),
                          "note": "rows: verified true class, columns: predicted; counts "
                                  "weighted to the evaluated samples"},
            # what a paired comparison needs: the population, its verified rows, the proxy
            "paired": {"pop_ids": ids[pop], "k": k, "z": z, "f": f, "strata": strata,
                       "sizes": sizes}}, None


def _pairs(models: list[dict], hits: dict) -> list[dict]:
    out = []
    for a in range(len(models)):
        for b in range(a + 1, len(models)):
            ma, mb = models[a], models[b]
            entry = {"a": ma["name"], "b": mb["name"],
                     "observed_difference": round(ma["observed_accuracy"] -
                                                  mb["observed_accuracy"], 4)}
            pa, pb = hits.get(ma["name"]), hits.get(mb["name"])
            # paired only on the same population and the same verified samples
            same = pa is not None and pb is not None and \
                np.array_equal(pa["pop_ids"], pb["pop_ids"]) and \
                np.array_equal(pa["k"], pb["k"])
            if same:
                d = pa["f"] - pb["f"]
                means = np.bincount(pa["strata"], weights=d, minlength=len(pa["sizes"])
                                    ) / pa["sizes"]
                est, low, high = paired_difference(
                    diff=pa["z"] - pb["z"], sample_strata=pa["strata"][pa["k"]],
                    sizes=pa["sizes"], proxy_sample=d[pa["k"]], proxy_means=means,
                    estimator=ma["accuracy"]["estimator"])
                entry.update({"difference": round(est, 4), "ci_low": round(low, 4),
                              "ci_high": round(high, 4), "method": "verified, paired"})
            else:
                entry.update({"difference": round(ma["accuracy"]["estimate"] -
                                                  mb["accuracy"]["estimate"], 4),
                              "ci_low": None, "ci_high": None, "method": "gold-free"})
            entry["sentence"] = _pair_sentence(entry)
            out.append(entry)
    return out


def _points(x: float) -> str:
    return f"{100 * abs(x):.1f} point{'s' if round(100 * abs(x), 1) != 1 else ''}"


def _pair_sentence(e: dict) -> str:
    obs, d = e["observed_difference"], e["difference"]
    better, worse = (e["a"], e["b"]) if obs >= 0 else (e["b"], e["a"])
    text = f"{better} looks {_points(obs)} better than {worse} on your labels; "
    cb = e["a"] if d >= 0 else e["b"]
    if e["ci_low"] is not None:
        lo, hi = (e["ci_low"], e["ci_high"]) if d >= 0 else (-e["ci_high"], -e["ci_low"])
        sure = lo > 0
        text += (f"corrected, {cb} is better by {100 * abs(d):.1f} "
                 f"[{100 * lo:.1f}, {100 * hi:.1f}]"
                 + ("" if sure else " (the interval includes no difference)"))
    else:
        text += (f"corrected (gold-free, no interval), {cb} is ahead by {_points(d)}; verify "
                 "labels of the split for a paired interval")
    return text + "."


def _sentence(m: dict, split: str | None) -> str:
    where = f"the {split} split" if split else "the predicted samples"
    a = m["accuracy"]
    shift = a["estimate"] - m["observed_accuracy"]
    direction = "understate" if shift > 0 else "overstate"
    if a["method"] == "verified":
        return (f"{m['name']}: {100 * m['observed_accuracy']:.1f}% against your labels on "
                f"{where}; {100 * a['estimate']:.1f}% right (95% CI {100 * a['ci_low']:.1f}-"
                f"{100 * a['ci_high']:.1f}%, {a['n_verified']:,} verified labels): your labels "
                f"{direction} it by {_points(shift)}.")
    g = m["gold_free"]
    return (f"{m['name']}: {100 * m['observed_accuracy']:.1f}% against your labels on {where}; "
            f"about {100 * g['estimate']:.1f}% right by the audit's posteriors, and between "
            f"{100 * g['low']:.1f}% and {100 * g['high']:.1f}% however the up to "
            f"{100 * g['noise_high']:.1f}% wrong labels fall; verify labels of the split for a "
            "95% interval.")


def default_split(samples: pd.DataFrame) -> str | None:
    """The audit's ``test`` split when it has one, else None (every predicted sample)."""
    if "split" in samples.columns and (samples["split"].astype(str) == "test").any():
        return "test"
    return None


def evaluate(predictions: dict, *, split: str | None, samples: pd.DataFrame, summary: dict,
             probs: np.ndarray | None, changelog: pd.DataFrame, frame: pd.DataFrame | None,
             sample: pd.DataFrame | None) -> dict:
    """The ``evaluation`` block (``evaluate_models``) of an audit's values (its samples table,
    summary, posteriors, corrections' changelog and verification sample, as ``Audit`` holds
    them) for ``predictions`` (name -> file or DataFrame). Nothing is written here
    (``Audit.evaluate`` records it)."""
    if not predictions:
        raise DqauditError("give at least one --predictions FILE (or NAME=FILE)")
    if summary.get("multi_label"):
        raise DqauditError("evaluate measures single-label classifiers' accuracy; a multi-label "
                           "audit's verified sample (dqaudit verify) gives its share of wrong "
                           "sets")
    if summary["dataset"]["source"].get("unit") == "object":
        raise DqauditError("evaluate measures image classifiers; this audit is of boxes")
    in_split(samples, split)  # a split the audit does not have: the error, before any reading
    if probs is None:
        raise DqauditError(f"this audit has no posteriors ({outputs.PROBS_NPY}); run `dqaudit "
                           "scan` again")
    classes = summary["dataset"]["classes"]
    tables = {name: read_predictions(src, name=name, samples=samples, classes=classes)
              for name, src in predictions.items()}
    if frame is None or sample is None:
        frame = sample = None
    block = evaluate_models(samples=samples, summary=summary, probs=probs,
                            predictions=tables, split=split,
                            changelog=changelog if len(changelog) else None,
                            frame=check_frame(frame, samples), sample=sample)
    block["predictions"] = {name: (str(src) if not isinstance(src, pd.DataFrame)
                                   else "DataFrame") for name, src in predictions.items()}
    return block
