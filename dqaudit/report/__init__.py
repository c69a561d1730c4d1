"""Report: summary.json + samples table -> self-contained report.html and report.pdf."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from markupsafe import Markup, escape

from dqaudit.config import ReportConfig
from dqaudit.errors import DqauditError
from dqaudit.io.outputs import SAMPLES_CSV, read_samples, read_summary, replacing
from dqaudit.io.store import REPORT_HTML, REPORT_PDF
from dqaudit.report.context import build_context


def templates_dir() -> Path:
    """``$DQAUDIT_TEMPLATES``, else ``report_templates/`` of the source tree (editable install),
    else the copy a wheel carries inside the package (``dqaudit/report_templates``)."""
    env = os.environ.get("DQAUDIT_TEMPLATES")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "report_templates", here.parents[1] / "report_templates"):
        if (candidate / "report.html.j2").exists():
            return candidate
    raise FileNotFoundError("dqaudit report templates not found; set DQAUDIT_TEMPLATES")


def environment():
    """The one Jinja environment: autoescape on (labels and paths are user text), strict."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())),
                             autoescape=jinja2.select_autoescape(["html", "j2"]),
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["pct"] = lambda v, digits=1: "n/a" if v is None else _fixed(100 * v, digits) + "%"
    env.filters["num"] = lambda v, digits=2: "n/a" if v is None else _fixed(v, digits)
    env.filters["thousands"] = lambda v: "n/a" if v is None else f"{int(v):,}"
    env.filters["breakable"] = breakable
    return env


def breakable(text) -> str:
    """``text`` (a path, an id) HTML-escaped, with a line-break opportunity after each
    ``/``, ``\\``, ``_`` and ``-``, so a long path wraps at its separators, not mid-word."""
    return Markup(re.sub(r"([/\\_-])", r"\1<wbr>", str(escape(text))))


def _fixed(value: float, digits: int) -> str:
    """``value`` with ``digits`` decimals, never "-0.00": a value that rounds to zero is 0."""
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def render_html(context: dict) -> str:
    css = (templates_dir() / "report.css").read_text()
    return environment().get_template("report.html.j2").render(css=css, **context)


def render_report(out_dir: str | os.PathLike, config: ReportConfig | None = None) -> dict:
    """(Re-)render the report of an audit folder from its saved outputs with ``config`` (default:
    ``ReportConfig()``); returns the paths written."""
    out = Path(out_dir)
    if not (out / "summary.json").exists():
        raise DqauditError(f"{out}: no summary.json; run `dqaudit scan DATASET --out {out}` "
                           "first")
    config = config or ReportConfig()
    summary = read_summary(out)
    samples = read_samples(out)
    context = build_context(summary, samples, title=config.title, top_n=config.top_n,
                            samples_csv=str((out / SAMPLES_CSV).resolve()),
                            page_size=config.page_size, redact=tuple(config.redact),
                            burned_in_thumbnails=config.thumbnails == "burned-in")
    html = render_html(context)
    paths = {"html": out / REPORT_HTML}
    with replacing(paths["html"]) as tmp:  # a failed write leaves the earlier report, no .tmp
        tmp.write_text(html, encoding="utf-8")
    if config.pdf:
        import weasyprint

        logging.getLogger("weasyprint").setLevel(logging.ERROR)
        logging.getLogger("fontTools").setLevel(logging.ERROR)
        paths["pdf"] = out / REPORT_PDF
        with replacing(paths["pdf"]) as tmp:
            weasyprint.HTML(string=html, base_url=str(out)).write_pdf(tmp)
    elif (out / REPORT_PDF).exists():
        # a PDF of an earlier state beside the new HTML would contradict it
        (out / REPORT_PDF).unlink()
        logging.getLogger("dqaudit").info(f"dqaudit: removed the out-of-date {REPORT_PDF}")
    return {k: str(v) for k, v in paths.items()}
