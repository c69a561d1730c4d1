"""The CLI's option groups, one per config section; their defaults are the config dataclasses'
(shown in --help); ``cli.settings`` turns the options a user gave into the scan's config."""

from __future__ import annotations

import click

from dqaudit.cli.boundary import UserError
from dqaudit.config import (
    ENGINES,
    PAGE_SIZES,
    POSTERIOR_CHOICES,
    REDACTIONS,
    REVIEW_ORDERS,
    THUMBNAIL_POLICIES,
    AuditConfig,
    EmbedConfig,
    ReportConfig,
    ScoreConfig,
    default,
)
from dqaudit.dataset import LAYOUTS
from dqaudit.embed.backends import BACKENDS
from dqaudit.embed.gpu_decode import DECODERS
from dqaudit.estimates.clr import MODES, ClrConfig
from dqaudit.imaging.dicom import DicomRead
from dqaudit.io.reading import InputConfig
from dqaudit.scoring.finetune import TRAIN_MODES, FinetuneConfig


def _with_options(func, options: list, *, section: str):
    """``func`` decorated with ``options``, first listed first in ``--help``, under the
    heading ``section`` (``SectionedCommand``)."""
    before = len(getattr(func, "__click_params__", []))
    for option in reversed(options):
        func = option(func)
    for param in func.__click_params__[before:]:
        param.dq_section = section
    return func


# the options a first scan needs, listed before the sections
COMMON_OPTIONS = ("out_dir", "label_column", "path_column", "split_column", "model", "device",
                  "no_pdf", "quiet", "as_json")
SECTION_ORDER = ("Input", "Encoder", "Scoring", "Estimate (CLR)", "Report", "Scale")


class SectionedCommand(click.Command):
    """``--help`` with the common options first, then one section per config (input, encoder,
    scoring, estimate, report, scale) and the rest under "Outputs and run"."""

    def format_options(self, ctx, formatter):
        sections: dict[str, list] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            name = "Common options" if param.name in COMMON_OPTIONS else \
                getattr(param, "dq_section", "Outputs and run")
            sections.setdefault(name, []).append(record)
        for name in ("Common options", *SECTION_ORDER, "Outputs and run"):
            if sections.get(name):
                with formatter.section(name):
                    formatter.write_dl(sections[name])


def embedding_options(func):
    """Options shared by every command that computes embeddings."""
    options = [
        click.option("--model", default=default(EmbedConfig, "model"), show_default=True,
                     help="Encoder: bundled and offline, lite0, lite1, lite2 (EfficientNet-"
                          "Lite; :head for the classifier-head features) or several joined by "
                          "+ (features side by side; lite0 alone is 2x faster on CPU); or "
                          "openclip:ARCH/PRETRAINED (open_clip tag, or a local checkpoint "
                          "path); or timm:NAME (any timm model's pretrained weights, e.g. "
                          "timm:vit_small_patch14_dinov2.lvd142m) or timm:NAME//weights.pth "
                          "(a local file)."),
        click.option("--image-size", default=default(EmbedConfig, "image_size"),
                     show_default=True,
                     help="lite input resolution in pixels, or auto (160 for images of at "
                          "most 64 px, else 224)."),
        click.option("--regions", is_flag=True, default=default(EmbedConfig, "regions"),
                     help="With --multi-label: also embed each image's quadrants and halves "
                          "(8 more forward passes per image) and score each class by the "
                          "region that shows it best too; finds more wrong sets where objects "
                          "are small (docs/scores.md)."),
        click.option("--flip-tta/--no-flip-tta", default=default(EmbedConfig, "flip_tta"),
                     show_default=True,
                     help="Average each image's features with its mirror image's (2x compute, "
                          "better posteriors)."),
        click.option("--device", default=default(AuditConfig, "device"), show_default=True,
                     help="auto (cuda, then mps, then cpu), cuda, cuda:N, mps or cpu."),
        click.option("--batch-size", type=click.IntRange(min=1), default=None,
                     help="Images per forward pass [default: 32 on CPU, 256 on CUDA]."),
        click.option("--num-workers", type=click.IntRange(min=0), default=None,
                     help="DataLoader processes that decode images [default: by device]."),
        click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
                     help="Embedding cache [default: $DQAUDIT_CACHE_DIR or "
                          "~/.cache/dqaudit/embeddings]."),
        click.option("--no-cache", is_flag=True, help="Neither read nor write the cache."),
        click.option("--decode", type=click.Choice(DECODERS),
                     default=default(EmbedConfig, "decode"), show_default=True,
                     help="Who decodes JPEGs: the CPU workers, or the GPU (nvjpeg, in "
                          "batches; other formats stay on the CPU); auto: nvjpeg on CUDA."),
        click.option("--dicom-window", default=default(EmbedConfig, "dicom_window"),
                     show_default=True, callback=_dicom_setting("window"),
                     help="DICOM files: the file's own window (or VOI LUT), minmax (the "
                          "image's range), or CENTER,WIDTH in modality units (e.g. 40,400)."),
        click.option("--dicom-frame", default=default(EmbedConfig, "dicom_frame"),
                     show_default=True, callback=_dicom_setting("frame"),
                     help="Multi-frame DICOM files: the frame audited (middle, first or a "
                          "0-based number); one sample per file."),
        click.option("--backend", type=click.Choice(BACKENDS),
                     default=default(EmbedConfig, "backend"), show_default=True,
                     help="What runs the encoder on CPU: torch, or OpenVINO in fp32 (the same "
                          "embeddings, faster; auto takes it when installed, torch on GPUs), "
                          "or openvino-bf16 (4.3x torch's rate on a bf16 CPU, embeddings "
                          "within cosine 0.98; never chosen by auto)."),
    ]
    return _with_options(func, options, section="Encoder")


def scale_options(func):
    """Where the embed stage runs and how the kNN graph is searched."""
    options = [
        click.option("--engine", type=click.Choice(ENGINES),
                     default=default(EmbedConfig, "engine"),
                     show_default=True,
                     help="Embed on this machine, or as a Ray Data pipeline (needs "
                          "pip install \"dqaudit[ray]\"; a local Ray cluster unless "
                          "--ray-address)."),
        click.option("--ray-address", default=None, metavar="auto|HOST:PORT",
                     help="With --engine ray: join this running Ray cluster."),
        click.option("--num-gpus-per-worker", type=click.FloatRange(0), default=None,
                     help="With --engine ray: GPUs per encoder actor [default: 1 when the "
                          "cluster has GPUs, else 0]."),
        click.option("--dup-threshold", "duplicate_threshold", type=click.FloatRange(0, 1),
                     default=default(ScoreConfig, "duplicate_threshold"), show_default=True,
                     help="Cosine similarity at or above which two images are near-duplicates "
                          "(measured for lite0+lite2 and lite0; other encoders may need "
                          "another value)."),
        click.option("--checks", default=",".join(default(ScoreConfig, "checks")),
                     show_default=True, metavar="LIST",
                     help="What to check, comma-separated: labels (label errors, ambiguity, "
                          "the CLR injection), duplicates (near and exact), images (blank, "
                          "dark, bright, blurry, low-information, grayscale, odd size)."),
        click.option("--knn", "knn_method", type=click.Choice(["auto", "exact", "ivf", "hnsw"]),
                     default=default(ScoreConfig, "knn_method"), show_default=True,
                     help="Nearest-neighbour search: exact, faiss IVF or HNSW (recall tuned "
                          "to 0.95 on the data); auto is exact up to 20,000 samples."),
    ]
    return _with_options(func, options, section="Scale")


def posterior_options(func):
    """Which out-of-sample posteriors score the samples."""
    options = [
        click.option("--review-order", type=click.Choice(REVIEW_ORDERS),
                     default=default(ScoreConfig, "review_order"), show_default=True,
                     help="The order of review (review_score, relabel queue): noisiness where "
                          "one look fixes a label, review_score (priority with the noise "
                          "model) where a review is one more annotation; auto: by whether "
                          "samples carry several annotations."),
        click.option("--posteriors", "posterior_method", type=click.Choice(POSTERIOR_CHOICES),
                     default=default(ScoreConfig, "posterior_method"), show_default=True,
                     help="Out-of-sample class probabilities: linear (robust probes on the "
                          "embeddings), graph, ensemble, or finetune (the encoder fine-tuned "
                          "K times, each fold scored by the model trained on the others; "
                          "minutes on a GPU, far longer on a CPU)."),
        click.option("--finetune-train", type=click.Choice(TRAIN_MODES),
                     default=default(FinetuneConfig, "train"), show_default=True,
                     help="With fine-tuning: all layers, or only the last two stages of the "
                          "lite encoders (the CPU mode, still slow: 23 minutes for 1,000 "
                          "images on 2 cores); auto: all on CUDA, last elsewhere."),
        click.option("--finetune-epochs", type=click.IntRange(min=1),
                     default=default(FinetuneConfig, "epochs"), show_default=True,
                     help="With fine-tuning: epochs per fold (the best by inner-split "
                          "agreement is kept)."),
    ]
    return _with_options(func, options, section="Scoring")


def ingest_options(func):
    """Options that say how to read the dataset."""
    options = [
        click.option("--path-column", default=None, help="Manifest column with image paths."),
        click.option("--label-column", default=None, help="Manifest column with labels."),
        click.option("--split-column", default=None, help="Manifest column with splits."),
        click.option("--count-prefix", default=default(InputConfig, "count_prefix"),
                     help="Prefix of per-class annotation-count columns [default: n_, where "
                          "such columns exist]."),
        click.option("--image-root", type=click.Path(file_okay=False), default=None,
                     help="Folder that manifest paths are relative to [default: its folder]."),
        click.option("--layout", type=click.Choice(LAYOUTS), default=default(InputConfig, "layout"),
                     show_default=True,
                     help="Class-folder trees whose class folders nest (animals/cat): leaf "
                          "reads the innermost folder as the class, top the outermost (with "
                          "everything under it); auto refuses nested images and names these "
                          "(DICOM patient/study/series folders under a class read as top). "
                          "Split folders (train/val/test) are recognised at any level."),
        click.option("--from-fiftyone", is_flag=True,
                     help="DATASET is the name of a FiftyOne dataset."),
        click.option("--label-field", default=default(InputConfig, "label_field"),
                     show_default=True,
                     help="FiftyOne field with the labels: a Classification, or Detections "
                          "(then every box is audited as a sample)."),
        click.option("--saved-view", default=None,
                     help="With --from-fiftyone: audit only this saved view of the dataset."),
        click.option("--box-margin", type=click.FloatRange(0, 2),
                     default=default(InputConfig, "box_margin"), show_default=True,
                     help="Detection datasets: context around each box, as a fraction of its "
                          "side on each side."),
        click.option("--min-box-side", type=click.FloatRange(min=1),
                     default=default(InputConfig, "min_box_side"),
                     show_default=True,
                     help="Detection datasets: boxes under this many pixels on their shorter "
                          "side are listed in skipped.csv, not audited (measured: smaller "
                          "ones get mostly false flags)."),
        click.option("--multi-label", is_flag=True,
                     help="Each image's label is a set of classes: manifest cells like "
                          "cat;dog (an empty cell is the empty set), or --label-columns (a "
                          "FiftyOne Classifications field is read as sets without it)."),
        click.option("--label-sep", default=default(InputConfig, "label_sep"),
                     show_default=True, help="With --multi-label: what separates the classes "
                                             "of a set in a cell."),
        click.option("--label-columns", default=None, metavar="LIST",
                     help="Label sets as one 0/1 column per class, comma-separated column "
                          "names (implies --multi-label)."),
        click.option("--classes", default=None, metavar="LIST",
                     help="With --multi-label: the known classes, comma-separated; a set "
                          "naming another class is an error [default: the classes the sets "
                          "name]."),
        click.option("--pred-field", default=None,
                     help="With --from-fiftyone and a Detections --label-field: a detector's "
                          "Detections, matched to the boxes for possible missing and spurious "
                          "boxes."),
    ]
    return _with_options(func, options, section="Input")


def report_options(func):
    """Options of the HTML/PDF report, shared by scan and report."""
    options = [
        click.option("--no-pdf", is_flag=True, help="Write report.html only."),
        click.option("--report-title", default=None,
                     help="Title of the report [default: the audit's, else from the "
                          "dataset's name]."),
        click.option("--top-n", type=click.IntRange(1, 500), default=None,
                     help="Samples shown per gallery (suspects, ambiguous, outliers) "
                          f"[default: the audit's, else {default(ReportConfig, 'top_n')}]."),
        click.option("--redact", type=click.Choice([*REDACTIONS, "none"]), multiple=True,
                     help="Leave out of the report, for a shareable release: paths (file "
                          "locations, names and the command line; samples named by their row "
                          "in samples.csv) and/or thumbnails; repeatable; none clears the "
                          "audit's [default: the audit's, else nothing]."),
        click.option("--thumbnails", type=click.Choice(THUMBNAIL_POLICIES), default=None,
                     help="safe: DICOM images that may carry burned-in patient text (header, "
                          "ultrasound, secondary capture) get no thumbnail; burned-in: show "
                          "them [default: the audit's, else safe]."),
        click.option("--page-size", type=click.Choice(PAGE_SIZES), default=None,
                     help="PDF page size [default: the audit's, else "
                          f"{default(ReportConfig, 'page_size')}]."),
    ]
    return _with_options(func, options, section="Report")


def clr_options(func):
    """Options of controlled CLR injection, shared by scan and clr."""
    options = [
        click.option("--clr-repeats", type=click.IntRange(2, 1000), default=None,
                     help="Repeats per injected ratio [default: the audit's, else "
                          f"{default(ClrConfig, 'repeats')}]."),
        click.option("--clr-grid", default=None, callback=_grid,
                     help="Injected ratios, comma-separated [default: the audit's, else "
                          f"{','.join(f'{g:g}' for g in default(ClrConfig, 'grid'))}]."),
        click.option("--clr-mode", type=click.Choice(MODES), default=None,
                     help="uniform: a random other class; posterior: flips that follow the "
                          "dataset's own confusions [default: the audit's, else "
                          f"{default(ClrConfig, 'mode')}]."),
        click.option("--clr-max-samples", type=click.IntRange(min=0), default=None,
                     help="Above this many samples, run on a stratified random subsample of "
                          "this size (0: always all samples) [default: the audit's, else "
                          f"{default(ClrConfig, 'max_samples')}]."),
    ]
    return _with_options(func, options, section="Estimate (CLR)")


def _grid(ctx, param, value):
    if value is None:
        return None
    try:
        grid = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("a comma-separated list of ratios like 0,0.01,0.05") from None
    if not grid or grid[0] != 0 or any(b <= a for a, b in zip(grid, grid[1:])) or grid[-1] >= 1:
        raise click.BadParameter("ratios must start at 0, increase, and stay below 1")
    return grid


def given_options(**options) -> dict:
    """The options the user gave (not None), for ``dataclasses.replace`` on a config."""
    return {k: v for k, v in options.items() if v is not None}


def _dicom_setting(which: str):
    """A click callback checking --dicom-window / --dicom-frame at the door."""
    def check(ctx, param, value):
        try:
            DicomRead(**{"window": "file", "frame": "middle", which: value})
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        return value

    return check


def redactions(values: tuple[str, ...]) -> tuple[str, ...] | None:
    """``--redact`` values: None when not given (keep the audit's), () for ``none``."""
    if not values:
        return None
    return () if "none" in values else tuple(sorted(set(values)))


def parse_thresholds(text: str) -> tuple[float, float]:
    try:
        good, fair = (float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--verdict-thresholds takes two rates like 0.02,0.05, got {text!r}"
                        ) from None
    if not 0 <= good <= fair <= 1:
        raise UserError("--verdict-thresholds: need 0 <= clean <= some-noise <= 1")
    return good, fair


def positive_int(value: str, option: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number <= 0:
        raise UserError(f"{option} must be 'auto' or a positive number of pixels, got {value!r}")
    return number















