"""The ``dqaudit`` command line: a thin door over the library (ARCHITECTURE rule 11).

Heavy libraries are imported inside the commands, so ``dqaudit --help`` is instant.
"""

from __future__ import annotations

from dataclasses import replace

import click

from dqaudit.cli.boundary import (
    check_fail_on,
    command_line,
    exit_on_sigterm,
    fail_on_option,
    json_envelope,
    library_errors,
    prints_result,
    show_progress,
)
from dqaudit.cli.fiftyone import app, fiftyone_group, plugin
from dqaudit.cli.options import (
    SectionedCommand,
    clr_options,
    embedding_options,
    given_options,
    ingest_options,
    posterior_options,
    redactions,
    report_options,
    scale_options,
)
from dqaudit.cli.review import evaluate, relabel, verify
from dqaudit.cli.settings import config_from_options, read_config_file
from dqaudit.config import (
    AuditConfig,
    EmbedConfig,
    ReportConfig,
    default,
)
from dqaudit.estimates.clr import ClrConfig
from dqaudit.estimates.headline import headline
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
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              default=None, help="Settings file (TOML or JSON, as summary.json's config "
                                 "block); the options given here override it.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json to stdout.")
@fail_on_option
@library_errors
def scan(dataset, out_dir, config_file, embeddings_file, fiftyone_dataset, quiet, as_json,
         fail_on, **options):
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
      dqaudit scan ./images --out ./audit --config audit.toml

    Settings come from the dataclass defaults, then --config FILE (TOML or JSON shaped as
    summary.json's "config" block, or an audit's summary.json to audit again the same way),
    then the options given here.
    """
    from dqaudit.api import Audit

    config = config_from_options(click.get_current_context(), options,
                                 read_config_file(config_file))
    result = Audit.scan(
        dataset, out_dir=out_dir, config=config, embeddings=embeddings_file,
        fiftyone_dataset=fiftyone_dataset, quiet=quiet or as_json, command=command_line())
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
@click.option("--multi-label", "multi_label", is_flag=True,
              help="A multi-label dataset instead: images of one to three shapes, manifest.csv "
                   "with each image's set (labels, like circle;star), --noise-rate of the sets "
                   "wrong (a class missing or one extra).")
@click.option("--dicom", is_flag=True,
              help="A small DICOM set instead (made-up patients): the shapes in grey, 16-bit "
                   "with rescale and window, some MONOCHROME1, some without extension, every "
                   "compressed transfer syntax; manifest.csv lists them (--per-class: 12).")
@library_errors
@prints_result
def sample_data(out_dir, per_class, noise_rate, seed, scenes, multi_label, dicom):
    """Generate the synthetic shapes dataset with known label truth into OUT_DIR."""
    from dqaudit.io.sample_data import generate, generate_scenes

    if scenes + dicom + multi_label > 1:
        raise click.UsageError("--scenes, --multi-label and --dicom are different datasets: "
                               "choose one")
    if multi_label:
        from dqaudit.io.sample_data import generate_multilabel

        info = generate_multilabel(out_dir, noise_rate=noise_rate, seed=seed)
        return info, [f"wrote {info['n_images']} images to {out_dir}; manifest.csv has "
                      f"{info['n_corrupted']} wrong label sets (truth in column 'true_labels'); "
                      f"audit it with: dqaudit scan {out_dir}/manifest.csv --multi-label "
                      "--out AUDIT"]
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


for command in (plugin, fiftyone_group, app, relabel, verify, evaluate):
    main.add_command(command)
