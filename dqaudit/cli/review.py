"""The review commands: ``relabel`` (queue, apply, export), ``verify`` and ``evaluate``; each is
one call on ``Audit``."""

from __future__ import annotations

from pathlib import Path

import click

from dqaudit.cli.boundary import library_errors, prints_result
from dqaudit.config import (
    EXPORT_TARGETS,
    VerifyConfig,
    default,
)
from dqaudit.estimates.headline import headline
from dqaudit.estimates.survey import ESTIMATORS


@click.group()
def relabel():
    """Active label cleaning: review queue, corrections, cleaned export.

    \b
    dqaudit relabel queue DIR --budget 100      # review_queue.csv, highest review score first
    dqaudit relabel apply DIR corrections.csv   # add the labels, re-rank, update the report
    dqaudit relabel export DIR --to folder --dest cleaned/
    """


@relabel.command("queue")
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--budget", type=click.IntRange(min=1), required=True,
              help="Samples to put in the queue.")
@click.option("--no-thumbnails", is_flag=True, help="Do not write review_thumbs/.")
@library_errors
@prints_result
def relabel_queue(out_dir, budget, no_thumbnails):
    """Write DIR/review_queue.csv: the next BUDGET unreviewed samples by review score.

    Fill its correct_label column (a class name, or DROP for junk) and pass it to
    `dqaudit relabel apply`.
    """
    from dqaudit.api import Audit
    from dqaudit.io.store import QUEUE_CSV

    queue = Audit.load(out_dir).review_queue(budget=budget, thumbnails=not no_thumbnails)
    return ({"queued": len(queue), "csv": f"{out_dir}/{QUEUE_CSV}",
             "ids": queue["id"].tolist()},
            [f"{len(queue)} samples queued -> {out_dir}/{QUEUE_CSV}"])


@relabel.command("apply")
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("corrections", type=click.Path(exists=True, dir_okay=False))
@click.option("--annotator", default=None, help="Who reviewed (when the CSV does not say).")
@click.option("--device", default=None,
              help="Where the re-rank fits its posteriors: auto, cuda, cuda:N, mps or cpu "
                   "[default: the audit's].")
@click.option("--no-clr-refresh", is_flag=True,
              help="Do not re-run the CLR injection on the corrected labels (faster; the "
                   "report then marks the gold-free estimate stale).")
@library_errors
@prints_result
def relabel_apply(out_dir, corrections, annotator, device, no_clr_refresh):
    """Add the labels in CORRECTIONS (id or path, label), re-rank the rest and re-estimate.

    Every number in the report is then for the corrected labels: the CLR injection is re-run
    (unless --no-clr-refresh); a verified estimate is carried forward by the corrections.
    """
    from dqaudit.api import Audit

    audit = Audit.load(out_dir)
    res = audit.apply_corrections(corrections, annotator=annotator, device=device,
                                  refresh_clr=not no_clr_refresh)
    head = headline(audit.summary)
    first = (f"these corrections were already applied ({res['already_applied']}); nothing "
             "changed") if res.get("already_applied") else (
        f"{res['annotations']} annotations, {res['label_changes']} labels changed, "
        f"{res['dropped']} dropped; {res['reviewed_samples']} samples reviewed so far")
    return (res,
            [first,
             f"noise: {head['text']}",
             f"verdict: {audit.summary['verdict']['level']} - "
             f"{audit.summary['verdict']['text']}"])


@relabel.command("export")
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--to", "to", type=click.Choice(list(EXPORT_TARGETS)), required=True,
              help="folder, csv or fiftyone for an image audit; coco or fiftyone for an "
                   "object audit (boxes of a detection dataset).")
@click.option("--dest", required=True,
              help="Folder, CSV path, COCO JSON path or FiftyOne dataset name.")
@click.option("--keep-junk", is_flag=True, help="Keep samples marked DROP.")
@click.option("--force", is_flag=True,
              help="Write into an existing DEST (never over an input file).")
@library_errors
@prints_result
def relabel_export(out_dir, to, dest, keep_junk, force):
    """Write the cleaned dataset as a new copy (the input is never modified)."""
    from dqaudit.api import Audit

    res = Audit.load(out_dir).export(to=to, dest=dest, drop_junk=not keep_junk, force=force)
    return res, [f"exported {res['n_samples']} samples to {res['to']} {res['dest']}"]


@click.command()
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--size", type=click.IntRange(1), default=None,
              help="Draw (or grow the sample to) this many samples to verify.")
@click.option("--apply", "apply_file", type=click.Path(exists=True, dir_okay=False),
              default=None, help="Estimate from this filled-in verify_sample.csv.")
@click.option("--half-width", type=click.FloatRange(0, 0.5, min_open=True), default=None,
              help="With --size: also say how many labels reach this 95%% half-width "
                   "(e.g. 0.02).")
@click.option("--seed", type=int, default=None, help="Seed of the first draw [default: the "
              "audit's].")
@click.option("--uniform-share", type=click.FloatRange(0, 1), default=None,
              help="First draw: share of the sample allocated in proportion to stratum size "
                   "[default: the audit's config, else "
                   f"{default(VerifyConfig, 'uniform_share'):g}]; 1 gives the tightest bound "
                   "when no error is found (for data expected to be clean).")
@click.option("--split", default=None,
              help="First draw: draw inside this split only (e.g. test), for its certified "
                   "noise rate and for `dqaudit evaluate` of models on it.")
@click.option("--annotator", default=None, help="With --apply: who verified.")
@click.option("--estimator", type=click.Choice(ESTIMATORS), default=None,
              help="With --apply: the estimator [default: the audit's config, else "
                   f"{default(VerifyConfig, 'estimator')}].")
@library_errors
@prints_result
def verify(out_dir, size, apply_file, half_width, seed, uniform_share, split, annotator,
           estimator):
    """Certify the noise rate: a random sample of labels checked by a person.

    \b
    dqaudit verify DIR --size 300            # verify_sample.csv: fill its verified_label
    dqaudit verify DIR --apply DIR/verify_sample.csv --annotator ana
    dqaudit verify DIR --size 500            # grow the same sample (earlier rows are kept)

    The sample is stratified by label_error_probability and every inclusion probability is
    recorded, so the estimate is design-unbiased whatever the encoder's quality; the report's
    headline then carries its 95% interval.
    """
    from dqaudit.api import Audit

    if (size is None) == (apply_file is None):
        raise click.UsageError("give --size N (draw or grow) or --apply FILE (estimate)")
    audit = Audit.load(out_dir)
    if size is not None:
        res = audit.draw_verification_sample(size=size, seed=seed, half_width=half_width,
                                             uniform_share=uniform_share, split=split)
        lines = [f"{res['n_drawn']} samples to verify ({res['n_new']} new) -> {res['csv']}; "
                 f"expected 95% half-width about ±{100 * res['predicted_half_width']:.1f} "
                 f"points ({res['n_for_target_half_width']} labels give ±2)"]
        if half_width is not None:
            lines.append(f"±{100 * half_width:.1f} points needs about "
                         f"{res['n_for_half_width']} verified labels: "
                         f"{res['n_more_for_half_width']} more")
        return res, lines
    res = audit.apply_verified(apply_file, annotator=annotator, estimator=estimator)
    lines = [f"verified {res['n_verified']} of {res['n_drawn']} drawn, {res['n_errors_found']} "
             f"wrong: {100 * res['estimate_at_draw']:.1f}% of labels were wrong (95% CI "
             f"{100 * res['ci_low_at_draw']:.1f}-{100 * res['ci_high_at_draw']:.1f}%, "
             f"±{100 * res['half_width']:.1f} points)"]
    if res["corrections_since_draw"]:
        lines.append(f"after {res['corrections_since_draw']} corrections: "
                     f"{100 * res['estimate']:.1f}% (95% CI {100 * res['ci_low']:.1f}-"
                     f"{100 * res['ci_high']:.1f}%)")
    head = headline(audit.summary)  # what the cover and every other door now state
    lines.append(f"noise: {head['text']}")
    return res, lines


@click.command()
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--predictions", "prediction_files", multiple=True, metavar="[NAME=]FILE",
              help="A model's predictions: CSV or Parquet with a path (or id) column and "
                   "'predicted' (or one probability column per class); repeat for several "
                   "models, each named NAME= (default: the file's name).")
@click.option("--pred-field", "pred_fields", multiple=True,
              help="With an audit of a FiftyOne dataset: a Classification field of "
                   "predictions; repeatable.")
@click.option("--split", default="auto", show_default=True,
              help="The split to evaluate on: auto (test when the audit has one, else every "
                   "predicted sample), all, or a split's name.")
@library_errors
@prints_result
def evaluate(out_dir, prediction_files, pred_fields, split):
    """What the label noise does to your models' test numbers.

    \b
    dqaudit evaluate DIR --predictions preds.csv
    dqaudit evaluate DIR --predictions resnet=a.csv --predictions vit=b.csv
    dqaudit verify DIR --split test --size 300   # then fill verify_sample.csv, re-run

    For each model: the accuracy against the labels as scanned (what you measure today), the
    audit's gold-free estimate with the range the label noise allows, and, once labels of the
    split are verified, a 95% interval and the corrected ranking with paired differences.
    """
    from dqaudit.api import Audit

    audit = Audit.load(out_dir)
    predictions = {}
    for item in prediction_files:
        name, sep, path = item.partition("=")
        if not sep or not name or Path(item).exists():
            name, path = Path(item).stem, item
        if name in predictions:
            raise click.UsageError(f"two --predictions are named {name!r}; name them NAME=FILE")
        predictions[name] = path
    if pred_fields:
        dataset = audit.summary.get("fiftyone_dataset")
        if not dataset:
            raise click.UsageError("--pred-field needs an audit written to FiftyOne "
                                   "(scan --fiftyone NAME or --from-fiftyone)")
        from dqaudit.io.fiftyone_io import read_predictions_field

        for field in pred_fields:
            predictions[field] = read_predictions_field(dataset, field)
    if not predictions:
        raise click.UsageError("give --predictions FILE (or NAME=FILE), or --pred-field FIELD")
    res = audit.evaluate(predictions, split=split)
    lines = [m["sentence"] for m in res["models"]] + [p["sentence"] for p in res["pairs"]]
    partial = [m for m in res["models"] if m["coverage"] < 1]
    lines += [f"{m['name']}: predictions cover {m['n_predicted']:,} of {res['n_split']:,} "
              "samples; evaluated on those" for m in partial]
    return res, lines
