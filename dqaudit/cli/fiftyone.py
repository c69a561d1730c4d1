"""The CLI's FiftyOne commands: the plugin, the run records, the App."""

from __future__ import annotations

from pathlib import Path

import click

from dqaudit.cli.boundary import library_errors, prints_result
from dqaudit.errors import DqauditError
from dqaudit.io.fiftyone_runs import SUSPECTS_VIEW


@click.group()
def plugin():
    """The dqaudit FiftyOne plugin (run the audit from the FiftyOne App)."""


@plugin.command("install")
@click.option("--plugins-dir", type=click.Path(file_okay=False), default=None,
              help="Target [default: FiftyOne's plugins_dir, FIFTYONE_PLUGINS_DIR].")
@click.option("--link", is_flag=True, help="Symlink instead of copying (for development).")
@library_errors
@prints_result
def plugin_install(plugins_dir, link):
    """Install the plugin where FiftyOne discovers it."""
    path = install_plugin(plugins_dir, link=link)
    lines = [f"installed the dqaudit plugin at {path}"]
    if plugins_dir:
        lines.append(f"make FiftyOne look there: export FIFTYONE_PLUGINS_DIR={plugins_dir}")
    return {"path": str(path)}, lines


@click.group("fiftyone")
def fiftyone_group():
    """What dqaudit recorded in FiftyOne datasets (runs, fields, views)."""


@fiftyone_group.command("runs")
@click.argument("name")
@library_errors
@prints_result
def fiftyone_runs(name):
    """List the dqaudit runs recorded on FiftyOne dataset NAME, with their config."""
    from dqaudit.io.fiftyone_runs import list_results

    runs = list_results(name)
    lines = [f"{run['key']}  {run['timestamp']}  out_dir={run['config'].get('out_dir')}  "
             f"label_field={run['config'].get('label_field')}  "
             f"fields={len(run['config'].get('fields') or [])}" for run in runs]
    return runs, lines or [f"no dqaudit run on {name!r}"]


@fiftyone_group.command("delete")
@click.argument("name")
@click.option("--run", default=None, metavar="RUN",
              help="Remove only this sub-audit's fields, views and run record (the run names "
                   "that `dqaudit fiftyone runs` lists after dqaudit_).")
@library_errors
@prints_result
def fiftyone_delete(name, run):
    """Remove dqaudit's fields, saved views, tags and run records from FiftyOne dataset NAME."""
    from dqaudit.io.fiftyone_runs import delete_results

    res = delete_results(name, run=run)
    return res, [f"removed {len(res['fields'])} fields, {len(res['views'])} views, "
                 f"{len(res['tags'])} tags and {len(res['runs'])} run records from {name!r}"]


@click.command()
@click.argument("name")
@click.option("--port", type=click.IntRange(1, 65535), default=5151, show_default=True)
@click.option("--view", default=SUSPECTS_VIEW, show_default=True,
              help="Saved view to open ('' for the whole dataset).")
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Address to serve the App on; 0.0.0.0 exposes it (and the images) to the "
                   "network.")
@library_errors
def app(name, port, view, address):
    """Launch the FiftyOne App on dataset NAME's suspects (after `scan --fiftyone NAME`)."""
    session = launch_app(name, port=port, view=view or None, address=address, wait=False)
    click.echo(f"FiftyOne App on {name!r}, view {view!r}: {session.url}  (Ctrl-C to stop)")
    session.wait(-1)


# ---------------------------------------------------------------- the plugin and the App

def plugin_source():
    """The plugin folder shipped with dqaudit: ``plugins/dqaudit`` of the source tree (editable
    install), else the copy a wheel carries inside the package (``dqaudit/fiftyone_plugin``)."""
    here = Path(__file__).resolve()
    candidates = (here.parents[2] / "plugins" / "dqaudit", here.parents[1] / "fiftyone_plugin")
    for src in candidates:
        if (src / "fiftyone.yml").exists():
            return src
    raise DqauditError(f"plugin files not found in {' or '.join(map(str, candidates))}; "
                       "reinstall dqaudit")


def install_plugin(plugins_dir=None, *, link: bool = False) -> str:
    """Copy (or symlink) the plugin into FiftyOne's plugins directory; returns its path."""
    import shutil

    from dqaudit.io.fiftyone_io import import_fiftyone

    fo = import_fiftyone()
    src = plugin_source()
    base = Path(plugins_dir or fo.config.plugins_dir or Path.home() / "fiftyone" / "__plugins__")
    target = base / "dqaudit"
    base.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        shutil.rmtree(target)
    if link:
        target.symlink_to(src, target_is_directory=True)
    else:
        shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
    return str(target)


def launch_app(name: str, *, port: int = 5151, view: str | None = SUSPECTS_VIEW,
               address: str = "127.0.0.1", wait: bool = True):
    """Open the App on the dataset's saved view ``view`` (None: the whole dataset), served on
    ``address`` (localhost by default: other machines cannot reach it); returns the session.
    An unknown view is an error that lists the saved views."""
    from dqaudit.io.fiftyone_io import import_fiftyone, load_view

    fo = import_fiftyone()
    shown = load_view(name, saved_view=view)
    session = fo.launch_app(shown, port=port, address=address, remote=True, auto=False)
    if wait:
        session.wait(-1)
    return session
