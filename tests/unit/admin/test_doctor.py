"""`ax-vol-plugin doctor`: one line per check, --json, exit 1 on any failure, --prerequisites."""

from __future__ import annotations

import dataclasses
import importlib
import json

import pytest
from click.testing import CliRunner

from flexdriver import checks
from flexdriver.admin.cli import EXIT_FAILED, EXIT_OK, EXIT_PROBLEMS, main

from ..test_checks import HEALTHY

# cli.py registers doctor as it loads; importing doctor.py on its own first would be circular.
doctor_module = importlib.import_module("flexdriver.admin.doctor")


@pytest.fixture
def node(monkeypatch):
    """The facts probe_node will report; tests replace them."""
    state = {"facts": HEALTHY, "configs": []}

    def probe(config, runner):
        state["configs"].append(config)
        return state["facts"]

    monkeypatch.setattr(checks, "probe_node", probe)
    return state


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_a_healthy_node_exits_0_with_one_line_per_check(node):
    result = invoke("doctor")
    assert result.exit_code == EXIT_OK
    lines = result.output.splitlines()
    assert len(lines) == len(checks.evaluate(HEALTHY)) and all(line.startswith("ok ") for line in lines)


def test_any_failure_exits_1_and_says_what_to_do(node):
    node["facts"] = dataclasses.replace(HEALTHY, python_version=(3, 7, 3))
    result = invoke("doctor", "--prerequisites")
    assert result.exit_code == EXIT_PROBLEMS
    assert "FAIL python3: /usr/bin/python3 is 3.7.3, the driver needs 3.9 or newer -> install python3" in result.output


def test_json_lists_every_check(node):
    node["facts"] = dataclasses.replace(HEALTHY, device=checks.DeviceFacts("/dev/sdq", exists=False))
    result = invoke("doctor", "--json")
    body = json.loads(result.output)
    assert result.exit_code == EXIT_PROBLEMS and body["ok"] is False
    failed = [c for c in body["checks"] if not c["ok"]]
    assert [c["name"] for c in failed] == ["slab device"] and "/dev/sdq does not exist" in failed[0]["detail"]


def test_prerequisites_mode_leaves_pool_health_out(node, monkeypatch):
    extra = checks.Check("pool", False, "sick")
    monkeypatch.setattr(doctor_module, "pool_health_checks", lambda config, runner: [extra])
    assert invoke("doctor", "--prerequisites").exit_code == EXIT_OK
    full = invoke("doctor")
    assert full.exit_code == EXIT_PROBLEMS and full.output.splitlines()[-1] == "FAIL pool: sick"


def test_the_config_given_is_the_config_checked(node, tmp_path):
    conf = tmp_path / "other.conf"
    conf.write_text("[vol_plugin]\ndevice = /dev/sdq\nvolume_group = vg-ci\n")
    assert invoke("--config", str(conf), "doctor").exit_code == EXIT_OK
    assert node["configs"][-1].device == "/dev/sdq" and node["configs"][-1].volume_group == "vg-ci"


def test_an_invalid_config_is_one_line_and_exit_3(node, tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("[vol_plugin]\ndevise = /dev/sdq\n")
    result = CliRunner().invoke(main, ["--config", str(conf), "doctor"])
    assert result.exit_code == EXIT_FAILED and "unknown key 'devise'" in result.output
    assert node["configs"] == []
