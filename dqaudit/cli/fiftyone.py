"""The CLI's FiftyOne commands: the plugin, the run records, the App."""

from __future__ import annotations

import click

from dqaudit.cli.options import library_errors, prints_result


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
    from dqaudit.io.fiftyone_io import install_plugin

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
    from dqaudit.io.fiftyone_io import list_results

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
    from dqaudit.io.fiftyone_io import delete_results

    res = delete_results(name, run=run)
    return res, [f"removed {len(res['fields'])} fields, {len(res['views'])} views, "
                 f"{len(res['tags'])} tags and {len(res['runs'])} run records from {name!r}"]


@click.command()
@click.argument("name")
@click.option("--port", type=click.IntRange(1, 65535), default=5151, show_default=True)
@click.option("--view", default="dq_suspects", show_default=True,
              help="Saved view to open ('' for the whole dataset).")
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Address to serve the App on; 0.0.0.0 exposes it (and the images) to the "
                   "network.")
@library_errors
def app(name, port, view, address):
    """Launch the FiftyOne App on dataset NAME's suspects (after `scan --fiftyone NAME`)."""
    from dqaudit.io.fiftyone_io import launch_app

    session = launch_app(name, port=port, view=view or None, address=address, wait=False)
    click.echo(f"FiftyOne App on {name!r}, view {view!r}: {session.url}  (Ctrl-C to stop)")
    session.wait(-1)
