"""`ax-vol-plugin config`: the config as the driver's own parser reads it, for people and scripts."""

from __future__ import annotations

import json

from flexdriver.admin.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from flexdriver.config import Config


def write(tmp_path, text: str) -> str:
    path = tmp_path / "vol_plugin.conf"
    path.write_text(text)
    return str(path)


def test_every_key_resolved_with_the_files_values_over_the_defaults(invoke, tmp_path, node):
    path = write(tmp_path, "[vol_plugin]\nVolume_Group = vg-ci   # the CI pool\nmax_size_mb: 2048\n")
    result = invoke("--config", path, "config")
    assert result.exit_code == EXIT_OK, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "device = /dev/xvdz"
    assert "volume_group = vg-ci" in lines and "max_size_mb = 2048" in lines
    assert len(lines) == len(Config._fields)
    assert node.programs() == [], "config runs nothing"


def test_given_keys_only_their_values_one_per_line_in_the_order_asked(invoke, tmp_path):
    path = write(tmp_path, "[vol_plugin]\nrun_dir = /run/ax//ci/\nlog_file = /var/log/ci.log\n")
    result = invoke("--config", path, "config", "run_dir", "volume_group", "log_file")
    assert result.exit_code == EXIT_OK, result.stderr
    assert result.stdout == "/run/ax/ci\nvg-ax\n/var/log/ci.log\n"


def test_json_has_the_values_in_their_types(invoke, tmp_path):
    path = write(tmp_path, "[vol_plugin]\nusage_threshold = 0.7\nprovisioning = thin\n")
    body = json.loads(invoke("--config", path, "config", "--json").stdout)
    assert body == dict(Config()._asdict(), usage_threshold=0.7, provisioning="thin")
    assert json.loads(invoke("--config", path, "config", "--json", "log_keep").stdout) == {"log_keep": 5}


def test_a_config_the_driver_refuses_is_refused_naming_it(invoke, tmp_path):
    path = write(tmp_path, "[vol_plugin]\nvolume_group = vg-ax\n[vol-plugin]\nvolume_group = vg-other\n")
    result = invoke("--config", path, "config", "volume_group")
    assert result.exit_code == EXIT_FAILED
    assert result.stdout == "" and "unknown section [vol-plugin]" in result.stderr and path in result.stderr


def test_a_value_that_would_spill_onto_the_next_line_is_refused(invoke, tmp_path):
    # A continuation line makes the value two lines; printed as it is, a script reading one
    # line per key would take its second line for the next key's value.
    path = write(tmp_path, "[vol_plugin]\nlog_file = /var/log/ax.log\n  /etc\n")
    result = invoke("--config", path, "config", "log_file", "run_dir")
    assert result.exit_code == EXIT_FAILED
    assert result.stdout == "" and "log_file holds a line break" in result.stderr


def test_an_unknown_key_is_a_usage_error(invoke, tmp_path):
    result = invoke("--config", write(tmp_path, ""), "config", "volume-group")
    assert result.exit_code == EXIT_USAGE and "unknown key 'volume-group'" in result.stderr
