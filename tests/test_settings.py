"""Every setting in the config: the input and verification settings recorded in summary.json and
rebuilt by Audit.load, `scan --config FILE` (TOML, JSON, an audit's summary.json) with the
options given on the command line overriding the file, and each default written once."""

import json

import click
import pandas as pd
import pytest
from click.testing import CliRunner

from dqaudit.api import Audit
from dqaudit.cli import main, scan
from dqaudit.cli.settings import OPTION_FIELDS
from dqaudit.config import AuditConfig, VerifyConfig


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def manifest(class_tree, tmp_path):
    """A manifest whose labels are in a column the scan cannot guess (``noisy``)."""
    rows = [{"file": str(p), "noisy": p.parent.name, "part": "train" if k % 2 else "test"}
            for k, p in enumerate(sorted(class_tree.rglob("*.png")))]
    path = tmp_path / "m.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_a_config_file_sets_the_scan_and_the_command_line_overrides_it(manifest, tmp_path):
    settings = tmp_path / "audit.toml"
    settings.write_text('seed = 7\n\n[input]\npath_column = "file"\nlabel_column = "noisy"\n'
                        'split_column = "part"\n\n[embed]\nmodel = "lite0"\nnum_workers = 0\n\n'
                        '[verify]\nuniform_share = 0.6\n\n[report]\nenabled = false\n')
    out = tmp_path / "a"
    res = run("scan", manifest, "--out", out, "--config", settings, "--seed", "3", "--no-clr",
              "--quiet")
    assert res.exit_code == 0, res.output
    config = json.loads((out / "summary.json").read_text())["config"]
    assert config["seed"] == 3  # the command line wins over the file
    assert config["input"]["label_column"] == "noisy" and config["input"]["split_column"] == "part"
    assert config["embed"]["model"] == "lite0" and config["clr"] is None
    assert config["verify"]["uniform_share"] == 0.6 and not config["report"]["enabled"]
    audit = Audit.load(out)  # the settings come back whole, input and verification included
    assert audit.config.input.label_column == "noisy" and audit.config.seed == 3
    assert audit.config.verify == VerifyConfig(uniform_share=0.6)
    assert set(audit.samples["split"]) == {"train", "test"}
    drawn = audit.draw_verification_sample(size=8)  # the recorded design setting is used
    assert drawn["n_drawn"] == 8 and audit.summary["verification"]["uniform_share"] == 0.6
    # an audit's own summary.json is a config file: a second folder audited the same way
    again = tmp_path / "b"
    res = run("scan", manifest, "--out", again, "--config", out / "summary.json", "--quiet")
    assert res.exit_code == 0, res.output
    assert Audit.load(again).config == AuditConfig.from_dict(config)


@pytest.mark.parametrize("text,suffix,needle", [
    ('[embed]\nmodle = "lite0"\n', ".toml", "'modle'; valid here:"),
    ('{"seeed": 1}', ".json", "'seeed'; valid here:"),
    ('[input\n', ".toml", "not valid TOML"),
    ('{"input": {"layout": "sideways"}}', ".json", "unknown layout 'sideways'"),
])
def test_a_config_file_with_a_bad_setting_is_one_line_naming_it(manifest, tmp_path, text,
                                                                   suffix, needle):
    settings = tmp_path / f"audit{suffix}"
    settings.write_text(text)
    res = run("scan", manifest, "--out", tmp_path / "o", "--config", settings)
    assert res.exit_code == 3, res.output
    assert needle in res.output and res.output.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_every_scan_option_defaults_to_its_config_field():
    """A scan option left at its default changes nothing (cli.settings), so its shown default
    must be the dataclass field's: the default is written once, in the config."""
    params = {p.name: p for p in scan.params if isinstance(p, click.Option)}
    base = AuditConfig()
    checked = 0
    for name, (section, field, convert) in OPTION_FIELDS.items():
        param = params[name]
        if convert is not None or param.default is None or param.is_flag:
            continue
        owner = base
        for part in (section.split(".") if section else []):
            owner = getattr(owner, part)
        want = getattr(owner, field)
        want = list(want) if isinstance(want, tuple) else want
        got = list(param.default) if isinstance(param.default, tuple) else param.default
        assert got == want, name
        checked += 1
    assert checked >= 15
    assert set(OPTION_FIELDS) <= set(params)
