"""config.py: built-in defaults and the optional INI file."""

from __future__ import annotations

import pytest

from flexdriver import config
from flexdriver.config import Config
from flexdriver.errors import ConfigError


def write(tmp_path, text: str) -> str:
    path = tmp_path / "custom.conf"
    path.write_text(text)
    return str(path)


def test_defaults_match_the_2017_driver():
    assert Config() == Config(
        device="/dev/xvdz",
        volume_group="vg-ax",
        usage_threshold=0.5,
        default_size_mb=10240,
        log_file="/var/log/ax-vol-plugin.log",
        run_dir="/run/ax-vol-plugin",
        lock_timeout_s=300.0,
        command_timeout_s=120.0,
        metrics_dir="/var/lib/prometheus/node-exporter",
        log_max_bytes=10 << 20,
        log_keep=5,
        default_cache_scope="node",
    )


def test_no_env_and_no_default_file_gives_defaults(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "DEFAULT_PATH", str(tmp_path / "absent.conf"))
    assert config.load({}) == Config()


def test_no_env_reads_the_default_file_when_it_exists(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "DEFAULT_PATH", write(tmp_path, "[vol_plugin]\nvolume_group = vg-default\n"))
    assert config.load({}).volume_group == "vg-default"


def test_load_reads_the_file_named_by_the_environment(tmp_path, monkeypatch):
    path = write(
        tmp_path,
        "# a comment\n[vol_plugin]\n"
        "device = /dev/vdb\nvolume_group = vg_slabs.1\nusage_threshold = 0.75\ndefault_size_mb = 2048\n"
        "log_file = /var/log//driver.log\nrun_dir = /run/x/\nlock_timeout_s = 2.5\n",
    )
    monkeypatch.setenv("AX_VOL_PLUGIN_CONFIG", path)
    assert config.load() == Config(
        device="/dev/vdb",
        volume_group="vg_slabs.1",
        usage_threshold=0.75,
        default_size_mb=2048,
        log_file="/var/log/driver.log",
        run_dir="/run/x",
        lock_timeout_s=2.5,
    )


def test_partial_file_keeps_the_other_defaults(tmp_path):
    path = write(tmp_path, "[vol_plugin]\nusage_threshold = 1\n")
    assert config.load({"AX_VOL_PLUGIN_CONFIG": path}) == Config(usage_threshold=1.0)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "[vol_plugin]\n"])
def test_empty_file_gives_defaults(tmp_path, text):
    assert config.load({"AX_VOL_PLUGIN_CONFIG": write(tmp_path, text)}) == Config()


def test_missing_file_named_by_env_is_an_error(tmp_path):
    missing = str(tmp_path / "nope.conf")
    with pytest.raises(ConfigError, match="cannot read config file .*nope.conf"):
        config.load({"AX_VOL_PLUGIN_CONFIG": missing})


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'size_gb'"):
        config.load({"AX_VOL_PLUGIN_CONFIG": write(tmp_path, "[vol_plugin]\nsize_gb = 10\n")})


def test_unknown_section_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown section \[volplugin\]"):
        config.load({"AX_VOL_PLUGIN_CONFIG": write(tmp_path, "[volplugin]\ndevice = /dev/vdb\n")})


@pytest.mark.parametrize(
    "text",
    [
        "device = /dev/vdb\n",
        "[vol_plugin\ndevice = /dev/vdb\n",
        "[vol_plugin]\ndevice = /a\ndevice = /b\n",
        "[vol_plugin]\ndevice\n",
    ],
    ids=["no-section-header", "broken-header", "duplicate-key", "key-without-value"],
)
def test_invalid_ini_is_a_config_error(text):
    with pytest.raises(ConfigError, match="config"):
        config.parse(text, "test.conf")


@pytest.mark.parametrize(
    "key,value",
    [
        ("device", "dev/xvdz"),
        ("device", ""),
        ("log_file", "ax.log"),
        ("run_dir", "~/run"),
        ("volume_group", "-vg"),
        ("volume_group", "vg ax"),
        ("volume_group", "vg/ax"),
        ("volume_group", ".."),
        ("volume_group", "v" * 128),
        ("usage_threshold", "0"),
        ("usage_threshold", "1.01"),
        ("usage_threshold", "-0.5"),
        ("usage_threshold", "nan"),
        ("usage_threshold", "half"),
        ("usage_threshold", "50%"),
        ("default_size_mb", "0"),
        ("default_size_mb", "-1"),
        ("default_size_mb", "1.5"),
        ("default_size_mb", "10G"),
        ("default_size_mb", "01024"),
        ("lock_timeout_s", "0"),
        ("lock_timeout_s", "86401"),
        ("lock_timeout_s", "inf"),
        ("lock_timeout_s", "soon"),
        ("command_timeout_s", "0"),
        ("metrics_dir", "prom"),
        ("device", "udev:"),
        ("device", "udev:id_serial=x"),
        ("device", "udev:ID_SERIAL"),
        ("log_max_bytes", "10M"),
        ("log_max_bytes", "-1"),
        ("log_keep", "101"),
        ("log_keep", "two"),
        ("default_cache_scope", "a b"),
        ("default_cache_scope", "-x"),
    ],
)
def test_bad_values_are_errors_naming_the_key(key, value):
    with pytest.raises(ConfigError) as caught:
        config.parse(f"[vol_plugin]\n{key} = {value}\n", "node.conf")
    assert f"{key} = " in str(caught.value)
    assert "node.conf" in str(caught.value)


@pytest.mark.parametrize(
    "key,value,expected",
    [
        ("usage_threshold", "1", 1.0),
        ("usage_threshold", "0.001", 0.001),
        ("lock_timeout_s", "86400", 86400.0),
        ("default_size_mb", "1", 1),
        ("volume_group", "vg+ax_1.2", "vg+ax_1.2"),
        ("device", "/dev/disk/by-id/x", "/dev/disk/by-id/x"),
        ("metrics_dir", "", ""),
        ("device", "udev:ID_MODEL=Amazon EC2 NVMe Instance Storage,ID_NSID=1",
         "udev:ID_MODEL=Amazon EC2 NVMe Instance Storage,ID_NSID=1"),
        ("metrics_dir", "/var/lib/node_exporter/", "/var/lib/node_exporter"),
        ("log_max_bytes", "0", 0),
        ("log_keep", "100", 100),
        ("command_timeout_s", "2.5", 2.5),
        ("default_cache_scope", "namespace", "namespace"),
        ("default_cache_scope", "ci-shared", "ci-shared"),
    ],
)
def test_boundary_values_are_accepted(key, value, expected):
    assert getattr(config.parse(f"[vol_plugin]\n{key} = {value}\n"), key) == expected


def test_values_may_carry_comments_after_whitespace():
    parsed = config.parse("[vol_plugin]\ndevice = /dev/nvme1n1   # the slab disk\nusage_threshold = 0.6 ; a fraction\n")
    assert parsed.device == "/dev/nvme1n1" and parsed.usage_threshold == 0.6


def test_a_hash_inside_a_value_is_kept():
    assert config.parse("[vol_plugin]\ndevice = udev:ID_SERIAL=disk#1\n").device == "udev:ID_SERIAL=disk#1"


def test_a_file_that_is_not_utf8_is_a_config_error_naming_it(tmp_path):
    path = tmp_path / "c.conf"
    path.write_bytes(b"[vol_plugin]\ndevice = /dev/xvd\xff\n")
    with pytest.raises(ConfigError, match=f"{path} is not UTF-8 text"):
        config.load({config.PATH_ENV: str(path)})


def test_max_size_mb_defaults_to_no_cap_and_takes_mib_or_zero():
    assert Config().max_size_mb == 0
    assert config.parse("[vol_plugin]\nmax_size_mb = 20480\n").max_size_mb == 20480
    assert config.parse("[vol_plugin]\nmax_size_mb = 0\n").max_size_mb == 0
    for bad in ("-1", "1.5", "big", "01"):
        with pytest.raises(ConfigError, match="max_size_mb"):
            config.parse(f"[vol_plugin]\nmax_size_mb = {bad}\n")
