"""The ``dqaudit`` command line: a thin door over the library (ARCHITECTURE rule 11).

Heavy libraries are imported inside the commands, so ``dqaudit --help`` is instant.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from dqaudit.cli.fiftyone import app, fiftyone_group, plugin
from dqaudit.cli.options import (
    SectionedCommand,
    check_fail_on,
    clr_options,
    command_line,
    embedding_options,
    exit_on_sigterm,
    fail_on_option,
    given_options,
    ingest_options,
    json_envelope,
    library_errors,
    parse_thresholds,
    positive_int,
    posterior_options,
    prints_result,
    redactions,
    report_options,
    scale_options,
    show_progress,
)
from dqaudit.config import (
    EXPORT_TARGETS,
    AuditConfig,
    EmbedConfig,
    ReportConfig,
    ScoreConfig,
    default,
)
from dqaudit.estimates.clr import ClrConfig
from dqaudit.estimates.headline import headline
from dqaudit.scoring.finetune import FinetuneConfig
from dqaudit.version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="dqaudit")
def main() -> None:
    """Audit a labeled image dataset for label noise, duplicates and outliers.

    \b
    Quick start:
      dqaudit sample-data ./shapes
      dqaudit scan ./shapes/manifest.csv --out ./audit
    """
    show_progress()
    exit_on_sigterm()


@main.command(cls=SectionedCommand)
@click.argument("dataset")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Output folder (created if needed).")
@ingest_options
@embedding_options
@scale_options
@posterior_options
@report_options
@click.option("--no-report", is_flag=True, help="Write no HTML or PDF report.")
@clr_options
@click.option("--no-clr", is_flag=True, help="Skip controlled CLR injection.")
@click.option("--embeddings", "embeddings_file", type=click.Path(exists=True, dir_okay=False),
              default=None,
              help="Use these features instead of embedding the images: a .npy with one row "
                   "per audited sample in the order dqaudit reads them, or an .npz with "
                   "arrays 'embeddings' and 'paths' (or 'ids') matched to the samples.")
@click.option("--fiftyone", "fiftyone_dataset", default=None, metavar="NAME",
              help="Also write the results into FiftyOne dataset NAME (created if needed): "
                   "dq_* fields and the saved views dq_suspects and dq_ambiguous.")
@click.option("--verdict-thresholds",
              default=",".join(f"{t:g}" for t in default(ReportConfig, "verdict_thresholds")),
              show_default=True,
              help="Estimated noise rates up to which the verdict is 'clean' and 'some noise'.")
@click.option("--seed", type=int, default=default(AuditConfig, "seed"), show_default=True,
              help="Random seed.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json to stdout.")
@fail_on_option
@library_errors
def scan(dataset, out_dir, path_column, label_column, split_column, count_prefix, image_root,
         layout, from_fiftyone, label_field, saved_view, box_margin, min_box_side, pred_field,
         model, image_size, flip_tta, device, batch_size, num_workers, cache_dir, no_cache,
         decode, dicom_window, dicom_frame, backend, engine, ray_address, num_gpus_per_worker,
         checks, knn_method, duplicate_threshold, review_order, posterior_method,
         finetune_train, finetune_epochs, no_pdf, report_title, top_n, redact, thumbnails,
         page_size,
         no_report, clr_repeats, clr_grid, clr_mode, clr_max_samples, no_clr, embeddings_file,
         fiftyone_dataset, verdict_thresholds, seed, quiet, as_json, fail_on):
    """Audit DATASET and write the results to --out.

    DATASET is a class-folder tree (root/<class>/*.jpg, optionally root/<split>/<class>/...),
    a CSV or Parquet manifest, or with --from-fiftyone the name of a FiftyOne dataset.
    A detection dataset (a COCO instances .json, a YOLO folder with data.yaml, images/ and
    labels/, or a FiftyOne Detections field) is audited box by box: every box is a sample.

    \b
    Examples:
      dqaudit scan ./images --out ./audit
      dqaudit scan labels.csv --label-column noisy_label --out ./audit
      dqaudit scan instances_val.json --out ./audit-boxes
    """
    from dqaudit.api import Audit

    image_size = image_size if image_size == "auto" else positive_int(image_size, "--image-size")
    checked = tuple(c.strip() for c in checks.split(",") if c.strip())
    config = AuditConfig(
        seed=seed, device=device,
        embed=EmbedConfig(model=model, image_size=image_size, flip_tta=flip_tta,
                          batch_size=batch_size, num_workers=num_workers, engine=engine,
                          ray_address=ray_address, num_gpus_per_worker=num_gpus_per_worker,
                          use_cache=not no_cache, cache_dir=cache_dir, backend=backend,
                          decode=decode, dicom_window=dicom_window, dicom_frame=dicom_frame),
        score=ScoreConfig(knn_method=knn_method, duplicate_threshold=duplicate_threshold,
                          checks=checked, posterior_method=posterior_method,
                          review_order=review_order,
                          finetune=FinetuneConfig(train=finetune_train,
                                                  epochs=finetune_epochs)),
        clr=None if no_clr or "labels" not in checked else ClrConfig(**given_options(
            grid=clr_grid, repeats=clr_repeats, mode=clr_mode, max_samples=clr_max_samples)),
        report=ReportConfig(**given_options(title=report_title, top_n=top_n, page_size=page_size,
                                            redact=redactions(redact), thumbnails=thumbnails),
                            enabled=not no_report, pdf=not no_pdf,
                            verdict_thresholds=parse_thresholds(verdict_thresholds)))
    result = Audit.scan(
        dataset, out_dir=out_dir, config=config, embeddings=embeddings_file,
        fiftyone_dataset=fiftyone_dataset, quiet=quiet or as_json, command=command_line(),
        path_column=path_column, label_column=label_column, split_column=split_column,
        count_prefix=count_prefix, image_root=image_root, layout=layout,
        from_fiftyone=from_fiftyone,
        label_field=label_field, saved_view=saved_view, box_margin=box_margin,
        min_box_side=min_box_side, pred_field=pred_field)
    if as_json:
        click.echo(json_envelope(result.summary, out_dir=out_dir))
    elif not quiet:
        s = result.summary
        source = s["dataset"]["source"]
        what = (f"{s['n_samples']} boxes of {source.get('n_images')} images"
                if source.get("unit") == "object" else f"{s['n_samples']} samples")
        click.echo(f"{what}, {s['dataset']['n_classes']} classes, "
                   f"{s['n_skipped']} skipped; {s['label_error_count']} flagged for review as "
                   f"label errors, {s['flagged_count']} flagged in all -> {out_dir}")
        click.echo(f"noise: {headline(s)['text']}")
        click.echo(f"verdict: {s['verdict']['level']} - {s['verdict']['text']}")
    check_fail_on(result.summary, fail_on)


@main.command()
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False))
@report_options
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
@click.option("--json", "as_json", is_flag=True, help="Print the paths and the verdict as JSON.")
@fail_on_option
@library_errors
def report(out_dir, no_pdf, report_title, top_n, redact, thumbnails, page_size, quiet, as_json,
           fail_on):
    """Re-render report.html and report.pdf of an audit folder from its saved outputs.

    Nothing is recomputed: the report is built from summary.json and samples.parquet. The
    options given are recorded, so later re-renders (after corrections) keep them.
    """
    from dqaudit.api import Audit

    audit = Audit.load(out_dir)
    config = replace(audit.config.report, enabled=True, pdf=not no_pdf,
                     **given_options(title=report_title, top_n=top_n, page_size=page_size,
                                     redact=redactions(redact), thumbnails=thumbnails))
    paths = audit.render_report(config)
    if as_json:
        click.echo(json_envelope(paths, out_dir=out_dir))
    elif not quiet:
        click.echo("wrote " + ", ".join(paths.values()))
        click.echo(f"verdict: {audit.summary['verdict']['level']} - "
                   f"{audit.summary['verdict']['text']}")
    check_fail_on(audit.summary, fail_on)


@main.command("sample-data")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--per-class", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--noise-rate", type=float, default=0.1, show_default=True,
              help="Fraction of manifest labels deliberately corrupted.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--scenes", is_flag=True,
              help="A detection dataset instead: scenes of several shapes each, boxes in "
                   "scenes.json (COCO), --noise-rate of the box labels corrupted.")
@click.option("--dicom", is_flag=True,
              help="A small DICOM set instead (made-up patients): the shapes in grey, 16-bit "
                   "with rescale and window, some MONOCHROME1, some without extension, every "
                   "compressed transfer syntax; manifest.csv lists them (--per-class: 12).")
@library_errors
@prints_result
def sample_data(out_dir, per_class, noise_rate, seed, scenes, dicom):
    """Generate the synthetic shapes dataset with known label truth into OUT_DIR."""
    from dqaudit.io.sample_data import generate, generate_scenes

    if scenes and dicom:
        raise click.UsageError("--scenes and --dicom are two different datasets: choose one")
    if dicom:
        from dqaudit.io.sample_dicom import generate_dicom

        per = per_class if click.get_current_context().get_parameter_source(
            "per_class") == click.core.ParameterSource.COMMANDLINE else 12
        info = generate_dicom(out_dir, per_class=per, noise_rate=noise_rate, seed=seed)
        return info, [f"wrote {info['n_files']} DICOM files to {out_dir} ({info['n_unauditable']} "
                      f"that cannot be audited, on purpose); manifest.csv has "
                      f"{info['n_corrupted']} corrupted labels (truth in column 'true_label')"]
    if scenes:
        info = generate_scenes(out_dir, noise_rate=noise_rate, seed=seed)
        return info, [f"wrote {info['n_boxes']} boxes in {info['n_images']} images to "
                      f"{out_dir}; scenes.json has {info['n_corrupted']} corrupted box labels "
                      "(truth in each annotation's 'true_label')"]
    info = generate(out_dir, per_class=per_class, noise_rate=noise_rate, seed=seed)
    return info, [f"wrote {info['n_images']} images of {len(info['classes'])} classes to "
                  f"{out_dir}; manifest.csv has {info['n_corrupted']} corrupted labels (truth "
                  "in column 'true_label')"]


@main.group()
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
    from dqaudit.workflows.relabel import QUEUE_CSV

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


@main.command()
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True)
@click.option("--noise-rate", type=click.FloatRange(0.0, 1.0), default=0.15, show_default=True)
@click.option("--seeds", type=click.IntRange(1, 100), default=5, show_default=True)
@click.option("--selectors", default=",".join(("random", "oracle", "linear", "graph",
                                                "ensemble", "entropy")), show_default=True,
              help="Comma-separated selectors to compare.")
@click.option("--budget", type=click.IntRange(min=1), default=None,
              help="Re-annotations per run [default: 0.6 x samples].")
@click.option("--refit-every", type=click.IntRange(1), default=100, show_default=True,
              help="Re-annotations between posterior refits.")
@click.option("--count-prefix", default=None, help="Prefix of count columns [default: n_].")
@click.option("--model", default=default(EmbedConfig, "model"), show_default=True)
@click.option("--device", default=default(AuditConfig, "device"), show_default=True)
@click.option("--quiet", "-q", is_flag=True)
@library_errors
def simulate(manifest, out_dir, noise_rate, seeds, selectors, budget, refit_every,
             count_prefix, model, device, quiet):
    """Simulate active label cleaning on MANIFEST (a path column and n_<class> count columns).

    Writes OUT/simulation.json (per selector: reannotations_to_90, reannotations_to_95,
    auc_normalized, curves) and OUT/simulation.svg.
    """
    from dqaudit.workflows.simulation import simulate_manifest

    names = [s.strip() for s in selectors.split(",") if s.strip()]
    res = simulate_manifest(manifest, out_dir, noise_rate=noise_rate, seeds=seeds,
                            selectors=names, budget=budget, refit_every=refit_every,
                            model=model, device=device, count_prefix=count_prefix,
                            progress=None if quiet else click.echo)
    for name, entry in res["selectors"].items():
        click.echo(f"{name:9s} to 90%: {entry['reannotations_to_90']}  to 95%: "
                   f"{entry['reannotations_to_95']}  normalised AUC: {entry['auc_normalized']}")


@main.command()
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
                   "[default: 0.3]; 1 gives the tightest bound when no error is found (for "
                   "data expected to be clean).")
@click.option("--split", default=None,
              help="First draw: draw inside this split only (e.g. test), for its certified "
                   "noise rate and for `dqaudit evaluate` of models on it.")
@click.option("--annotator", default=None, help="With --apply: who verified.")
@click.option("--estimator", type=click.Choice(["stratified", "difference", "regression"]),
              default="stratified", show_default=True, help="With --apply: the estimator.")
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


@main.command()
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


@main.command()
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False))
@clr_options
@click.option("--device", default=None, help="auto, cuda, cuda:N, mps or cpu [default: the "
              "audit's].")
@library_errors
@prints_result
def clr(out_dir, clr_repeats, clr_grid, clr_mode, clr_max_samples, device):
    """Re-run controlled CLR injection on an audit folder's cached embeddings.

    Options not given keep the audit's settings. Updates summary.json and the report;
    nothing is embedded again.
    """
    from dqaudit.api import Audit

    audit = Audit.load(out_dir)
    config = replace(audit.config.clr or ClrConfig(), **given_options(
        grid=clr_grid, repeats=clr_repeats, mode=clr_mode, max_samples=clr_max_samples))
    res = audit.estimate_clr(config, device=device)
    span = (f"at most {100 * res['bracket_high']:.1f}%" if res["bracket_low"] <= 0 else
            f"{100 * res['bracket_low']:.1f}-{100 * res['bracket_high']:.1f}%")
    lines = [f"gold-free estimate {100 * res['estimate']:.1f}% ({span}; plausible range "
             "without verification)"]
    return res, lines + [f"noise: {headline(audit.summary)['text']}"]


for command in (plugin, fiftyone_group, app):
    main.add_command(command)
