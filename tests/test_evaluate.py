"""``dqaudit evaluate``: what the label noise does to a model's measured accuracy (#40).

Estimators on simulated populations (coverage over repeated draws, the range's guarantee as a
property), then the command on a tiny audit of arrays: the JSON block, the report page, the
verified path and every bad input (one line, non-zero exit, nothing written).
"""

import hashlib
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import blobs as clusters
from conftest import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from dqaudit.api import Audit
from dqaudit.cli import main
from dqaudit.config import AuditConfig, ReportConfig
from dqaudit.estimates import accuracy as ev
from dqaudit.estimates import survey

CLASSES = ["a", "b", "c"]


def test_true_class_posterior_keeps_one_minus_q_on_the_given_class():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=50)
    given = rng.integers(0, 4, size=50)
    q = rng.random(50)
    t = ev.true_class_posterior(given=given, error_probability=q, probs=probs)
    assert np.allclose(t.sum(axis=1), 1) and np.allclose(t[np.arange(50), given], 1 - q)
    # the rest goes where the posterior puts it among the other classes
    other = probs.copy()
    other[np.arange(50), given] = 0
    j = other.argmax(axis=1)
    t_other = t.copy()
    t_other[np.arange(50), given] = -1
    assert (t_other.argmax(axis=1) == j).all()


@settings(max_examples=examples(200), deadline=None)
@given(n=st.integers(5, 60), data=st.data())
def test_the_gold_free_range_holds_however_the_wrong_labels_fall(n, data):
    """Any truth, labels and predictions with at most eta wrong labels: the true accuracy is in
    accuracy_range(agreement, eta)."""
    c = 3
    truth = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    given = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    pred = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    eta = (given != truth).mean() + data.draw(st.floats(0, 0.3))
    low, high = ev.accuracy_range(agreement=float((pred == given).mean()), noise_high=eta)
    assert low - 1e-12 <= (pred == truth).mean() <= high + 1e-12
    assert 0 <= low <= high <= 1


def simulated_population(seed, n=1000):
    """z: the model right (0/1) on each sample; f: a calibrated but imperfect proxy of z; q: a
    score that orders the strata."""
    rng = np.random.default_rng(seed)
    f = np.clip(rng.beta(4, 1.2, size=n), 0.01, 0.99)
    z = (rng.random(n) < f).astype(float)
    q = 1 - f + rng.normal(0, 0.1, size=n)
    return z, f, q


@pytest.mark.parametrize("estimator", ["stratified", "difference"])
def test_the_verified_interval_covers_on_simulated_populations(estimator):
    z, f, q = simulated_population(1)
    strata = survey.assign_strata(q, survey.strata_cuts(q))
    h = int(strata.max()) + 1
    sizes = np.bincount(strata, minlength=h).astype(float)
    allocation = survey.allocate(sizes, survey.stratum_model_sd(q, strata, h), 300)
    f_means = np.bincount(strata, weights=f, minlength=h) / sizes
    cover, widths = [], []
    for d in range(200):
        s = survey.draw(strata, allocation, seed=d)
        e = ev.verified_accuracy(correct=z[s], sample_strata=strata[s], sizes=sizes,
                                 proxy_sample=f[s], proxy_means=f_means, estimator=estimator)
        cover.append(e.ci_low <= z.mean() <= e.ci_high)
        widths.append(e.half_width)
    assert np.mean(cover) >= 0.9
    srs = 1.96 * np.sqrt(z.mean() * (1 - z.mean()) / 300 * 0.7)
    if estimator == "difference":  # the proxy narrows it below simple random sampling
        assert np.median(widths) < srs


def test_a_stratum_where_the_model_was_right_every_time_still_has_width():
    """Residuals that happen to agree must not claim a zero-width interval."""
    strata = np.repeat([0, 1], 10)
    e = ev.verified_accuracy(correct=np.ones(20), sample_strata=strata,
                             sizes=np.array([100.0, 100.0]), proxy_sample=np.ones(20),
                             proxy_means=np.array([0.95, 0.95]), estimator="difference")
    assert e.half_width > 0.005


# --------------------------------------------------------------------------- the command


def blobs():
    return clusters(n_per_class=80, d=12, spread=3)


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory):
    """An audit of arrays: 240 samples, 60 in the test split, 12% of labels wrong."""
    x, truth = blobs()
    rng = np.random.default_rng(1)
    noisy = truth.copy()
    wrong = rng.choice(len(truth), size=29, replace=False)
    noisy[wrong] = (truth[wrong] + 1) % 3
    splits = np.where(np.arange(len(truth)) % 4 == 0, "test", "train")
    out = tmp_path_factory.mktemp("ev") / "audit"
    Audit.from_arrays([CLASSES[i] for i in noisy], embeddings=x, classes=CLASSES,
                      ids=[f"s{i:03d}" for i in range(len(truth))], splits=splits,
                      out_dir=out, config=AuditConfig(clr=None, report=ReportConfig(pdf=False)))
    return out, truth, noisy, splits


def predictions(tmp_path, truth, noisy, *, name, right=0.8, copy=0.0, seed=0, rows=None):
    rng = np.random.default_rng(seed)
    pred = np.where(rng.random(len(truth)) < right, truth, (truth + 2) % 3)
    pred = np.where((noisy != truth) & (rng.random(len(truth)) < copy), noisy, pred)
    ids = np.array([f"s{i:03d}" for i in range(len(truth))])
    keep = np.arange(len(truth)) if rows is None else rows
    path = tmp_path / f"{name}.csv"
    pd.DataFrame({"id": ids[keep], "predicted": [CLASSES[i] for i in pred[keep]]}).to_csv(
        path, index=False)
    return path, pred


def copy_audit(audit_dir, tmp_path):
    out = tmp_path / "audit"
    shutil.copytree(audit_dir[0], out)
    return out


def test_evaluate_reports_observed_gold_free_and_the_report_page(audit_dir, tmp_path):
    out = copy_audit(audit_dir, tmp_path)
    _, truth, noisy, splits = audit_dir
    a, pa = predictions(tmp_path, truth, noisy, name="a", right=0.85)
    b, pb = predictions(tmp_path, truth, noisy, name="b", right=0.8, copy=0.9, seed=1)
    res = CliRunner().invoke(main, ["evaluate", str(out), "--predictions", f"A={a}",
                                    "--predictions", f"B={b}"])
    assert res.exit_code == 0, res.output
    block = json.loads((out / "summary.json").read_text())["evaluation"]
    test = splits == "test"
    assert block["split"] == "test" and block["n_split"] == int(test.sum())
    for m, p in zip(block["models"], (pa, pb)):
        assert m["observed_accuracy"] == round(float((p[test] == noisy[test]).mean()), 4)
        g = m["gold_free"]
        assert g["low"] <= g["estimate"] <= g["high"]
        assert m["accuracy"]["method"] == "gold-free" and "verify" in m["accuracy"]["why"]
        assert m["sentence"] in res.output and len(m["per_class"]) == 3
    assert block["ranking"]["observed"] and len(block["pairs"]) == 1
    html = (out / "report.html").read_text()
    assert "What the label noise does to your model" in html and "Model evaluation" in html
    assert "the largest correction of a model" in html


def test_verified_labels_of_the_split_give_an_interval_that_holds(audit_dir, tmp_path):
    out = copy_audit(audit_dir, tmp_path)
    _, truth, noisy, splits = audit_dir
    a, pa = predictions(tmp_path, truth, noisy, name="a", right=0.85)
    res = CliRunner().invoke(main, ["verify", str(out), "--split", "test", "--size", "40"])
    assert res.exit_code == 0, res.output
    sample = pd.read_csv(out / "verify_sample.csv", dtype=str, keep_default_na=False)
    frame = pd.read_parquet(out / "verify_frame.parquet")
    assert set(frame["split"]) == {"test"} and len(frame) == int((splits == "test").sum())
    sample["verified_label"] = [CLASSES[truth[int(i[1:])]] for i in sample["id"]]
    sample.to_csv(out / "verify_sample.csv", index=False)
    res = CliRunner().invoke(main, ["evaluate", str(out), "--predictions", str(a), "--json"])
    assert res.exit_code == 0, res.output
    m = json.loads(res.output)["result"]["models"][0]
    true = float((pa[splits == "test"] == truth[splits == "test"]).mean())
    acc = m["accuracy"]
    assert acc["method"] == "verified" and acc["n_verified"] == 40
    assert acc["ci_low"] <= true <= acc["ci_high"] and acc["ci_high"] > acc["ci_low"]
    assert m["confusion"]["classes"] == CLASSES
    # a split-verified sample certifies the split, not the dataset: the cover keeps its number
    from dqaudit.estimates.headline import headline

    res = CliRunner().invoke(main, ["verify", str(out), "--apply", str(out / "verify_sample.csv")])
    assert res.exit_code == 0, res.output
    s = json.loads((out / "summary.json").read_text())
    assert s["verified"]["split"] == "test"
    head = headline(s)
    assert head["source"] != "verified" and "'test' split verified" in head["how"]


def digest(out):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()
            if p.is_file()}


BAD = {
    "unknown paths": (lambda t: pd.DataFrame({"id": ["s000", "nope1", "nope2"],
                                              "predicted": ["a", "b", "c"]}),
                      "2 of 3 rows name no sample"),
    "duplicate rows": (lambda t: pd.DataFrame({"id": ["s000", "s000", "s004"],
                                               "predicted": ["a", "b", "c"]}),
                       "more than one row"),
    "unknown classes": (lambda t: pd.DataFrame({"id": ["s000"], "predicted": ["zebra"]}),
                        "not classes of this audit"),
    "empty": (lambda t: pd.DataFrame({"id": [], "predicted": []}), "no rows"),
    "zero bytes": (lambda t: None, "the file is empty"),
    "no split rows": (lambda t: pd.DataFrame({"id": ["s001", "s002"],
                                              "predicted": ["a", "b"]}),
                      "none of its rows is in the 'test' split"),
    "no predicted column": (lambda t: pd.DataFrame({"id": ["s000"], "guess": ["a"]}),
                            "no 'predicted' column"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_predictions_are_one_line_and_write_nothing(audit_dir, tmp_path, case):
    out = copy_audit(audit_dir, tmp_path)
    make, needle = BAD[case]
    path = tmp_path / "p.csv"
    table = make(None)
    if table is None:
        path.write_bytes(b"")
    else:
        table.to_csv(path, index=False)
    before = digest(out)
    res = CliRunner().invoke(main, ["evaluate", str(out), "--predictions", str(path)])
    assert res.exit_code == 3, res.output
    assert needle in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert digest(out) == before


def test_a_split_that_does_not_exist_and_partial_coverage(audit_dir, tmp_path):
    out = copy_audit(audit_dir, tmp_path)
    _, truth, noisy, splits = audit_dir
    test_rows = np.flatnonzero(splits == "test")
    a, _ = predictions(tmp_path, truth, noisy, name="a", rows=test_rows[:30])
    res = CliRunner().invoke(main, ["evaluate", str(out), "--predictions", str(a),
                                    "--split", "holdout"])
    assert res.exit_code == 3 and "no sample of this audit is in that split" in res.output
    res = CliRunner().invoke(main, ["evaluate", str(out), "--predictions", str(a)])
    assert res.exit_code == 0, res.output
    assert "cover 30 of 60 samples; evaluated on those" in res.output
    m = json.loads((out / "summary.json").read_text())["evaluation"]["models"][0]
    assert m["coverage"] == 0.5 and m["n_predicted"] == 30


def test_one_model_without_verified_samples_leaves_the_others_verified(audit_dir, tmp_path):
    """Why one model cannot use the verified sample is that model's: a model that predicted
    none of the verified images stays gold-free, the next one is still verified."""
    out = copy_audit(audit_dir, tmp_path)
    _, truth, noisy, splits = audit_dir
    assert CliRunner().invoke(main, ["verify", str(out), "--split", "test", "--size",
                                     "40"]).exit_code == 0
    sample = pd.read_csv(out / "verify_sample.csv", dtype=str, keep_default_na=False)
    sample["verified_label"] = [CLASSES[truth[int(i[1:])]] for i in sample["id"]]
    sample.to_csv(out / "verify_sample.csv", index=False)
    drawn = {int(i[1:]) for i in sample["id"]}
    unverified = np.array([i for i in np.flatnonzero(splits == "test") if i not in drawn])
    a, _ = predictions(tmp_path, truth, noisy, name="a", rows=unverified)
    b, _ = predictions(tmp_path, truth, noisy, name="b", seed=1)
    res = CliRunner().invoke(main, ["evaluate", str(out), "--predictions", f"A={a}",
                                    "--predictions", f"B={b}", "--json"])
    assert res.exit_code == 0, res.output
    first, second = json.loads(res.output)["result"]["models"]
    assert first["accuracy"]["method"] == "gold-free"
    assert "no verified sample" in first["accuracy"]["why"]
    assert second["accuracy"]["method"] == "verified" and second["accuracy"]["n_verified"] == 40


def test_a_sample_dropped_as_junk_is_a_miss_not_a_nan(audit_dir, tmp_path):
    """After `relabel apply` drops an image as junk (its posteriors are gone), the evaluation
    stays finite: the junk image has no right class, so no prediction on it is a hit."""
    out = copy_audit(audit_dir, tmp_path)
    _, truth, noisy, splits = audit_dir
    a, _ = predictions(tmp_path, truth, noisy, name="a", right=0.85)
    before = json.loads(CliRunner().invoke(main, ["evaluate", str(out), "--predictions", str(a),
                                                  "--json"]).output)["result"]["models"][0]
    junk = f"s{int(np.flatnonzero(splits == 'test')[0]):03d}"
    pd.DataFrame({"id": [junk], "label": ["DROP"]}).to_csv(tmp_path / "drop.csv", index=False)
    assert CliRunner().invoke(main, ["relabel", "apply", str(out), str(tmp_path / "drop.csv"),
                                     "--no-clr-refresh"]).exit_code == 0
    res = CliRunner().invoke(main, ["evaluate", str(out), "--predictions", str(a), "--json"])
    after = json.loads(res.output)["result"]["models"][0]
    g = after["gold_free"]
    assert all(np.isfinite([g["estimate"], g["low"], g["high"], g["noise_high"]]))
    assert g["estimate"] <= before["gold_free"]["estimate"]
    assert after["observed_accuracy"] == before["observed_accuracy"]  # as scanned, exact


def test_a_semicolon_predictions_file_is_read_like_a_manifest(audit_dir, tmp_path):
    """Every CSV a user writes goes through one reader (outputs.read_user_csv), which reads
    the separator from the header as the manifest reader does."""
    out = copy_audit(audit_dir, tmp_path)
    _, truth, noisy, _ = audit_dir
    a, _ = predictions(tmp_path, truth, noisy, name="a")
    pd.read_csv(a).to_csv(tmp_path / "semi.csv", sep=";", index=False)
    comma = json.loads(CliRunner().invoke(main, ["evaluate", str(out), "--predictions",
                                                 f"m={a}", "--json"]).output)["result"]
    semi = CliRunner().invoke(main, ["evaluate", str(out), "--predictions",
                                     f"m={tmp_path / 'semi.csv'}", "--json"])
    assert semi.exit_code == 0, semi.output
    assert json.loads(semi.output)["result"]["models"] == comma["models"]
