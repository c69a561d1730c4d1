"""An audit's settings as data: frozen dataclasses, each default written once.

``AuditConfig`` holds one config per stage (``EmbedConfig``, ``ScoreConfig``, ``ClrConfig`` from
``dqaudit.estimates.clr``, ``ReportConfig``) plus the seed and the device. It is stored in
``summary.json`` under ``"config"`` and rebuilt from there by every re-run (re-score, CLR
re-run, re-render), so a folder's later numbers come from the settings that made it. The CLI
options and the plugin forms take their defaults from these fields (``default``).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, fields, is_dataclass

from dqaudit.embed.backends import BACKENDS
from dqaudit.embed.encoders import DEFAULT_ENCODER
from dqaudit.embed.gpu_decode import DECODERS
from dqaudit.errors import DqauditError
from dqaudit.estimates import survey
from dqaudit.estimates.clr import ClrConfig
from dqaudit.imaging.dicom import FILE_WINDOW, MIDDLE_FRAME, DicomRead
from dqaudit.io.reading import InputConfig
from dqaudit.scoring.checks import CHECKS
from dqaudit.scoring.finetune import FinetuneConfig
from dqaudit.scoring.neighbors import DUPLICATE_THRESHOLD
from dqaudit.scoring.posteriors import DEFAULT_METHOD, POSTERIOR_METHODS

# the posteriors a scan can use: the probes on the embeddings (``posteriors.POSTERIOR_METHODS``)
# or the encoder fine-tuned per fold (``finetune``: measured below the linear probe so far, so
# asked for by name; benchmarks/RESULTS.md, "Cross-fitted fine-tuning")
POSTERIOR_CHOICES = (*POSTERIOR_METHODS, "finetune")

ENGINES = ("local", "ray")
PAGE_SIZES = ("A4", "Letter")  # the report templates' print sizes
REDACTIONS = ("paths", "thumbnails")  # what a shareable report can leave out
THUMBNAIL_POLICIES = ("safe", "burned-in")  # burned-in: DICOM images with burned-in text shown
# the order of review (samples.review_score): by noisiness where one look fixes a label (one
# annotation per sample), by the mean rank of priority and the noise model where a review is
# one more annotation in a majority (benchmarks/RESULTS.md, "The review order"); auto chooses
# by the dataset at its scan and is recorded as the choice
REVIEW_ORDERS = ("auto", "noisiness", "review_score")

# where `dqaudit relabel export` writes the cleaned dataset (coco: an object audit's boxes)
EXPORT_TARGETS = ("folder", "csv", "fiftyone", "coco")

@dataclass(frozen=True)
class EmbedConfig:
    """How images become (N, D) embeddings (``dqaudit.embed``)."""

    model: str = DEFAULT_ENCODER
    image_size: int | str | None = "auto"  # pixels, or "auto" (from the median image side)
    flip_tta: bool = True
    batch_size: int | None = None  # None: by device
    num_workers: int | None = None  # None: by device
    engine: str = "local"  # or "ray" (dqaudit.embed.ray_engine)
    ray_address: str | None = None
    num_gpus_per_worker: float | None = None
    use_cache: bool = True
    cache_dir: str | None = None  # None: $DQAUDIT_CACHE_DIR or ~/.cache/dqaudit/embeddings
    backend: str = "auto"  # the CPU forward: auto, torch or openvino (dqaudit.embed.backends)
    decode: str = "auto"  # JPEGs: auto (nvjpeg on CUDA), cpu or nvjpeg (dqaudit.embed.gpu_decode)
    # DICOM files (imaging.dicom): the window (file, minmax or "CENTER,WIDTH") and the frame of a
    # multi-frame file (middle, first or a 0-based number)
    dicom_window: str = FILE_WINDOW
    dicom_frame: str = MIDDLE_FRAME
    # multi-label audits: embed each image's regions too (embed.REGIONS; 9x the embedding
    # work) for the per-class posteriors of the region model (scoring.regions)
    regions: bool = False

    def __post_init__(self):
        try:
            DicomRead(window=self.dicom_window, frame=str(self.dicom_frame))
        except ValueError as exc:
            raise DqauditError(f"DICOM {exc}") from None
        if self.engine not in ENGINES:
            raise DqauditError(f"unknown engine {self.engine!r}; valid: {', '.join(ENGINES)}")
        if self.backend not in BACKENDS:
            raise DqauditError(f"unknown backend {self.backend!r}; valid: {', '.join(BACKENDS)}")
        if self.decode not in DECODERS:
            raise DqauditError(f"unknown decoder {self.decode!r}; valid: {', '.join(DECODERS)}")


@dataclass(frozen=True)
class ScoreConfig:
    """How the posteriors and the per-sample scores are computed (``dqaudit.scoring.table``)."""

    posterior_method: str = DEFAULT_METHOD
    k: int = 10  # neighbours of the kNN graph
    knn_method: str = "auto"
    duplicate_threshold: float = DUPLICATE_THRESHOLD  # cosine at or above: near-duplicates
    checks: tuple[str, ...] = CHECKS
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    review_order: str = "auto"

    def __post_init__(self):
        if self.review_order not in REVIEW_ORDERS:
            raise DqauditError(f"unknown review order {self.review_order!r}; valid: "
                               f"{', '.join(REVIEW_ORDERS)}")
        if self.posterior_method not in POSTERIOR_CHOICES:
            raise DqauditError(f"unknown posteriors {self.posterior_method!r}; valid: "
                               f"{', '.join(POSTERIOR_CHOICES)}")
        unknown = sorted(set(self.checks) - set(CHECKS))
        if unknown or not self.checks:
            raise DqauditError(f"unknown check {unknown[0]!r}; valid: {', '.join(CHECKS)}"
                               if unknown else f"choose at least one check of {', '.join(CHECKS)}")


@dataclass(frozen=True)
class VerifyConfig:
    """How a verification sample is drawn and estimated (``workflows.verify``); a grown sample
    keeps the design it was drawn with (``summary["verification"]``)."""

    # the share of the sample allocated in proportion to stratum size (1: proportional
    # allocation, the tightest bound when no error is found); the rest by Neyman allocation
    uniform_share: float = survey.UNIFORM_SHARE
    estimator: str = survey.DEFAULT_ESTIMATOR

    def __post_init__(self):
        if not 0 <= float(self.uniform_share) <= 1:
            raise DqauditError(f"uniform share {self.uniform_share}: choose 0 to 1")
        if self.estimator not in survey.ESTIMATORS:
            raise DqauditError(f"unknown estimator {self.estimator!r}; valid: "
                               f"{', '.join(survey.ESTIMATORS)}")


@dataclass(frozen=True)
class ReportConfig:
    """The HTML/PDF report and the verdict it states."""

    enabled: bool = True
    pdf: bool = True
    title: str | None = None
    top_n: int = 24  # samples per gallery
    page_size: str = "A4"
    verdict_thresholds: tuple[float, float] = (0.02, 0.05)  # clean / some noise, up to
    # "paths": no file-system location, file name or command line in the document (samples are
    # named by their row in samples.csv); "thumbnails": no image content
    redact: tuple[str, ...] = ()
    # DICOM images that may carry burned-in patient text (imaging.dicom_header.burned_in) get no
    # thumbnail unless this is "burned-in"
    thumbnails: str = "safe"

    def __post_init__(self):
        if self.thumbnails not in THUMBNAIL_POLICIES:
            raise DqauditError(f"unknown thumbnail policy {self.thumbnails!r}; valid: "
                               f"{', '.join(THUMBNAIL_POLICIES)}")
        unknown = sorted(set(self.redact) - set(REDACTIONS))
        if unknown:
            raise DqauditError(f"unknown redaction {unknown[0]!r}; valid: {', '.join(REDACTIONS)}")
        if self.page_size not in PAGE_SIZES:
            raise DqauditError(f"unknown page size {self.page_size!r}; valid: "
                               f"{', '.join(PAGE_SIZES)}")
        good, fair = self.verdict_thresholds
        if not 0 <= good <= fair <= 1:
            raise DqauditError("verdict thresholds: need 0 <= clean <= some-noise <= 1")


@dataclass(frozen=True)
class AuditConfig:
    """Everything that decides an audit's numbers. ``clr`` None: no CLR injection."""

    seed: int = 0
    device: str = "auto"
    input: InputConfig = field(default_factory=InputConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    clr: ClrConfig | None = field(default_factory=ClrConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_summary(cls, summary: dict, *, report: bool, pdf: bool) -> AuditConfig:
        """The config saved in an audit's summary; folders written before configs were saved
        get one from their summary (seed, posteriors, duplicate threshold, verdict thresholds)
        and from whether they hold a ``report`` and a ``pdf``."""
        if "config" in summary:
            return cls.from_dict(summary["config"])
        thresholds = tuple((summary.get("verdict") or {}).get("thresholds", {}).values())
        method = summary.get("posterior_method")
        score = {"posterior_method": method if method in POSTERIOR_CHOICES else None,
                 "duplicate_threshold": (summary.get("score_parameters") or {}).get(
                     "duplicate_threshold")}
        legacy = {"seed": summary.get("seed", 0),
                  "score": {k: v for k, v in score.items() if v is not None},
                  "report": {"enabled": report, "pdf": pdf}}
        if thresholds:
            legacy["report"]["verdict_thresholds"] = thresholds
        return cls.from_dict(legacy)

    @classmethod
    def from_dict(cls, data: dict | None, *, strict: bool = False,
                  where: str = "config") -> AuditConfig:
        """The config saved by ``to_dict``; missing keys take today's defaults (folders written
        before configs existed). Keys it does not know (a newer version's) are ignored, or with
        ``strict`` (a user's file, ``where``) an error naming the valid ones."""
        return _build(cls, data or {}, strict=strict, where=where)


def _build(cls, data: dict, *, strict: bool, where: str):
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if strict and unknown:
        raise DqauditError(f"{where}: unknown setting {unknown[0]!r}; valid here: "
                           f"{', '.join(sorted(known))}")
    kwargs = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        inner = _dataclass_of(hints[f.name])
        if inner is not None and isinstance(value, dict):
            value = _build(inner, value, strict=strict, where=f"{where} [{f.name}]")
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def _dataclass_of(hint):
    """The dataclass in a hint like ``ClrConfig | None``, else None."""
    if is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        if is_dataclass(arg):
            return arg
    return None


def default(cls, name: str):
    """The default of field ``name`` of config class ``cls`` (for CLI options and forms)."""
    f = cls.__dataclass_fields__[name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default
