"""A wheel (a non-editable install) carries the report templates and the FiftyOne plugin."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import json
from dqaudit.report import environment, templates_dir
from dqaudit.cli.fiftyone import plugin_source
environment().get_template("report.html.j2")
print(json.dumps({"templates": str(templates_dir()), "plugin": str(plugin_source()),
                  "files": sorted(p.name for p in plugin_source().iterdir())}))
"""


def test_wheel_carries_templates_and_plugin(tmp_path):
    # build from a copy of the sources, so the build leaves nothing in the checkout
    src = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("dqaudit", "report_templates", "plugins"):
        shutil.copytree(REPO / name, src / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True,
        cwd=tmp_path)
    if build.returncode and "No module named pip" in build.stderr:
        pytest.skip("pip is not available in this interpreter")
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("dqaudit-*.whl"))
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        zf.extractall(site)
    for template in (REPO / "report_templates").iterdir():
        assert f"dqaudit/report_templates/{template.name}" in names
    assert "dqaudit/fiftyone_plugin/fiftyone.yml" in names
    assert "dqaudit/fiftyone_plugin/__init__.py" in names

    # the unpacked wheel, not the source tree, answers the lookups
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("DQAUDIT_TEMPLATES", None)
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(found["templates"]) == site / "dqaudit" / "report_templates"
    assert Path(found["plugin"]) == site / "dqaudit" / "fiftyone_plugin"
    assert {"fiftyone.yml", "__init__.py"} <= set(found["files"])
