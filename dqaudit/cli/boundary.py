"""The CLI's boundary: exit codes, the one way a library error becomes a CLI error, the --json
envelope, --fail-on, and the signals a long command answers."""

from __future__ import annotations

import functools
import json
import logging
import shlex
import signal
import sys
import threading
from pathlib import Path

import click

from dqaudit.errors import DqauditError, expected_failure
from dqaudit.estimates.headline import VERDICT_LEVELS

# exit codes: 0 done, 1 an unexpected failure (a bug: the traceback is shown), 2 a usage error
# (click's own), 3 the input or the audit folder cannot be used (the message names the fix),
# 4 the verdict reached --fail-on
EXIT_INPUT = 3
EXIT_FAIL_ON = 4


class UserError(click.ClickException):
    """A DqauditError shown as one line, exit code ``EXIT_INPUT``."""

    exit_code = EXIT_INPUT


class VerdictReached(click.ClickException):
    """The audit ran, and its verdict is at or past ``--fail-on``: exit ``EXIT_FAIL_ON``."""

    exit_code = EXIT_FAIL_ON


def json_envelope(result, *, out_dir=None) -> str:
    """The one ``--json`` shape of every command: ``dqaudit_version``, ``command``,
    ``out_dir``, the audit's ``headline`` and ``verdict`` as its folder now holds them (None
    without an audit folder), and the command's own ``result``."""
    from dqaudit.io.outputs import SUMMARY_JSON
    from dqaudit.version import __version__

    summary = {}
    if out_dir is not None and (Path(out_dir) / SUMMARY_JSON).is_file():
        try:
            summary = json.loads((Path(out_dir) / SUMMARY_JSON).read_text())
        except (OSError, ValueError):
            summary = {}
    ctx = click.get_current_context(silent=True)
    return json.dumps({"dqaudit_version": __version__,
                       "command": ctx.command_path if ctx else None,
                       "out_dir": None if out_dir is None else str(out_dir),
                       "headline": summary.get("headline"), "verdict": summary.get("verdict"),
                       "result": result}, indent=2, default=str)


def prints_result(func):
    """``--json`` and ``-q`` for a command that returns ``(data, lines)``: the data as JSON on
    stdout in the one envelope (``json_envelope``), the lines as text, or nothing but
    errors."""
    @click.option("--json", "as_json", is_flag=True,
                  help="Print the result as JSON: {dqaudit_version, command, out_dir, "
                       "headline, verdict, result}.")
    @click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
    @functools.wraps(func)
    def wrapper(*args, as_json: bool, quiet: bool, **kwargs):
        data, lines = func(*args, **kwargs)
        if as_json:
            click.echo(json_envelope(data, out_dir=kwargs.get("out_dir")))
        elif not quiet:
            for line in lines:
                click.echo(line)

    return wrapper


def fail_on_option(func):
    """``--fail-on LEVEL``: exit ``EXIT_FAIL_ON`` when the verdict is LEVEL or worse (CI gates)."""
    return click.option(
        "--fail-on", type=click.Choice(["some-noise", "noisy"]), default=None,
        help=f"Exit with code {EXIT_FAIL_ON} when the verdict is this level or worse "
             "(some-noise includes noisy); for CI jobs that gate a dataset release.")(func)


def check_fail_on(summary: dict, fail_on: str | None) -> None:
    """Raise ``VerdictReached`` when ``summary``'s verdict is at or past ``fail_on``."""
    if fail_on is None:
        return
    order = [level.replace(" ", "-") for level in VERDICT_LEVELS]
    level = summary["verdict"]["level"].replace(" ", "-")
    if order.index(level) >= order.index(fail_on):
        raise VerdictReached(f"verdict {summary['verdict']['level']!r} reached --fail-on "
                             f"{fail_on}: {summary['verdict']['text']}")


EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report it (128 + SIGINT)
BUG_REPORT = ("this is a bug in dqaudit: please report it with the traceback above and the "
              "command line")


def library_errors(func):
    """The CLI's one error boundary: every expected failure is one line that names the file
    and the fix, with the README's exit codes (3 input or folder, 130 interrupted); anything
    else is a bug, shown with its traceback and a request to report it."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt:
            click.echo("dqaudit: interrupted; what was finished is kept (the embedding cache, "
                       "earlier audits), nothing half-written", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        except (DqauditError, OSError) as exc:
            raise UserError(expected_failure(exc)) from exc
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort,
                SystemExit):
            raise
        except Exception:
            import traceback

            traceback.print_exc()
            click.echo(f"dqaudit: {BUG_REPORT}", err=True)
            raise click.exceptions.Exit(1) from None

    return wrapper


def exit_on_sigterm() -> None:
    """SIGTERM (what timeout, Slurm, Kubernetes and systemd send) ends a command as Ctrl-C
    does: cleanup runs (the embedding cache is flushed, an unfinished relabel apply is rolled
    back), and the exit code is 143."""
    def stop(signum, frame):
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def show_progress() -> None:
    """The library logs its progress to the ``dqaudit`` logger; the CLI shows INFO on stderr
    (``--quiet`` runs log at DEBUG, so they print nothing)."""
    logger = logging.getLogger("dqaudit")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def command_line() -> str:
    return " ".join(["dqaudit"] + [shlex.quote(a) for a in sys.argv[1:]])


