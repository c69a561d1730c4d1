"""A scan's settings from the command line: ``AuditConfig()`` (the defaults, written once in
the dataclasses), then ``--config FILE``, then the options the user gave
(``config_from_options``; an option left at its default changes nothing)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click

from dqaudit.cli.boundary import UserError
from dqaudit.cli.options import parse_thresholds, positive_int, redactions
from dqaudit.config import AuditConfig
from dqaudit.estimates.clr import ClrConfig


def _inverted(value):
    return not value


def _checks(value):
    return tuple(c.strip() for c in value.split(",") if c.strip())


def _names(value):
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else None


def _image_size(value):
    return value if value == "auto" else positive_int(value, "--image-size")


# every scan option that is a setting: the config section (None: AuditConfig itself), the
# field, and how the option's value becomes the field's (None: as given)
OPTION_FIELDS = {
    **{name: ("input", name, None) for name in (
        "path_column", "label_column", "split_column", "count_prefix", "image_root", "layout",
        "from_fiftyone", "label_field", "saved_view", "box_margin", "min_box_side",
        "pred_field", "multi_label", "label_sep")},
    "label_columns": ("input", "label_columns", lambda v: _names(v)),
    "classes": ("input", "classes", lambda v: _names(v)),
    "seed": (None, "seed", None), "device": (None, "device", None),
    **{name: ("embed", name, None) for name in (
        "model", "flip_tta", "batch_size", "num_workers", "engine", "ray_address",
        "num_gpus_per_worker", "cache_dir", "backend", "decode", "dicom_window",
        "dicom_frame", "regions")},
    "image_size": ("embed", "image_size", _image_size),
    "no_cache": ("embed", "use_cache", _inverted),
    "knn_method": ("score", "knn_method", None),
    "duplicate_threshold": ("score", "duplicate_threshold", None),
    "checks": ("score", "checks", _checks),
    "posterior_method": ("score", "posterior_method", None),
    "review_order": ("score", "review_order", None),
    "finetune_train": ("score.finetune", "train", None),
    "finetune_epochs": ("score.finetune", "epochs", None),
    "clr_repeats": ("clr", "repeats", None), "clr_grid": ("clr", "grid", None),
    "clr_mode": ("clr", "mode", None), "clr_max_samples": ("clr", "max_samples", None),
    "no_pdf": ("report", "pdf", _inverted), "no_report": ("report", "enabled", _inverted),
    "report_title": ("report", "title", None), "top_n": ("report", "top_n", None),
    "redact": ("report", "redact", redactions), "thumbnails": ("report", "thumbnails", None),
    "page_size": ("report", "page_size", None),
    "verdict_thresholds": ("report", "verdict_thresholds", lambda v: parse_thresholds(v)),
}


def given(ctx: click.Context, name: str) -> bool:
    """Whether the user gave option ``name`` (on the command line or in the environment)."""
    source = ctx.get_parameter_source(name)
    return source not in (None, click.core.ParameterSource.DEFAULT,
                          click.core.ParameterSource.DEFAULT_MAP)


def read_config_file(path: str | None) -> AuditConfig:
    """The ``AuditConfig`` of ``--config FILE``: TOML or JSON shaped as summary.json's
    ``config`` block (``seed = 1``, ``[embed] model = "lite0"``, ``[input] label_column =
    ...``), or an audit's summary.json itself (its settings, to audit again the same way); an
    unknown name is an error naming the valid ones. None: ``AuditConfig()``."""
    if path is None:
        return AuditConfig()
    file = Path(path)
    try:
        if file.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(file.read_text(encoding="utf-8"))
        else:
            data = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # tomllib's and json's errors are these
        kind = "TOML" if file.suffix.lower() == ".toml" else "JSON"
        raise UserError(f"--config {file}: not valid {kind} ({exc}); write the settings as "
                        "summary.json's config block") from None
    if not isinstance(data, dict):
        raise UserError(f"--config {file}: a table of settings is needed")
    data = data.get("config", data) if "dqaudit_version" in data else data
    return AuditConfig.from_dict(data, strict=True, where=f"--config {file}")


def config_from_options(ctx: click.Context, options: dict, base: AuditConfig) -> AuditConfig:
    """``base`` with every setting option the user gave (``OPTION_FIELDS``) put in its field;
    options left at their defaults keep ``base``'s values (a --config file's, else the
    dataclasses' defaults). ``--no-clr``, or no ``labels`` check, turns the CLR injection off."""
    sections: dict[str, dict] = {}
    top: dict = {}
    for name, (section, fname, convert) in OPTION_FIELDS.items():
        if name not in options or not given(ctx, name):
            continue
        value = options[name] if convert is None else convert(options[name])
        if value is None and convert is not None:
            continue
        (top if section is None else sections.setdefault(section, {}))[fname] = value
    config = replace(base, **top)
    for section, values in sections.items():
        if section == "score.finetune":
            continue
        current = getattr(config, section) or (ClrConfig() if section == "clr" else None)
        extra = {"finetune": replace(config.score.finetune, **sections["score.finetune"])} \
            if section == "score" and "score.finetune" in sections else {}
        config = replace(config, **{section: replace(current, **values, **extra)})
    if "score.finetune" in sections and "score" not in sections:
        config = replace(config, score=replace(config.score, finetune=replace(
            config.score.finetune, **sections["score.finetune"])))
    if options.get("no_clr") or "labels" not in config.score.checks:
        config = replace(config, clr=None)
    return config
