"""options.py: kubelet's mount arguments, validated."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flexdriver.errors import BadRequest
from flexdriver.options import (
    ANONYMOUS,
    GRAPH,
    MAX_DIR_BYTES,
    MAX_SIZE_MB,
    MountRequest,
    parse_mount,
    parse_mount_dir,
    parse_size_mb,
    pod_dir_of,
    pod_uid_of,
)
from flexdriver.pool import encode_dir

UID = "4f1b3a8e-5c2d-4e7f-9a0b-1c2d3e4f5a6b"
MOUNT_DIR = f"/var/lib/kubelet/pods/{UID}/volumes/ax~vol_plugin/docker-graph-storage"
DEFAULT_MB = 10240


def kubelet_options(**overrides) -> dict:
    """What kubelet passes to `mount`: its own keys, then the pod spec's options."""
    options = {
        "kubernetes.io/fsType": "",
        "kubernetes.io/pod.name": "ci-runner-42",
        "kubernetes.io/pod.namespace": "default",
        "kubernetes.io/pod.uid": UID,
        "kubernetes.io/pvOrVolumeName": "docker-graph-storage",
        "kubernetes.io/readwrite": "rw",
        "kubernetes.io/serviceAccount.name": "default",
        "size_mb": "1024",
        "ax_vol_type": GRAPH,
    }
    options.update(overrides)
    return {k: v for k, v in options.items() if v is not None}


def parse(mount_dir: str = MOUNT_DIR, **overrides) -> MountRequest:
    return parse_mount(mount_dir, json.dumps(kubelet_options(**overrides)), DEFAULT_MB)


def test_real_kubelet_options_are_accepted():
    assert parse() == MountRequest(
        mount_dir=MOUNT_DIR, volume_type=GRAPH, size_mb=1024, fs_type="ext4", read_only=False, pod_uid=UID,
    )


def test_minimal_options_take_every_default():
    request = parse_mount("/mnt/x", "{}", DEFAULT_MB)
    assert request == MountRequest("/mnt/x", GRAPH, DEFAULT_MB, "ext4", False, "")


@pytest.mark.parametrize("fs_type,expected", [("", "ext4"), ("ext4", "ext4"), ("xfs", "xfs")])
def test_supported_fs_types(fs_type, expected):
    assert parse(**{"kubernetes.io/fsType": fs_type}).fs_type == expected


@pytest.mark.parametrize("fs_type", ["btrfs", "ext4; rm -rf /", "EXT4", "ext3", " ext4", "xfs\n", "vfat"])
def test_other_fs_types_are_refused(fs_type):
    with pytest.raises(BadRequest, match="fsType"):
        parse(**{"kubernetes.io/fsType": fs_type})


@pytest.mark.parametrize(
    "size",
    ["abc", "-5", "0", "1.5e3", "64 --help", "64; touch /tmp/x", " 64", "64\n", "١٢", "99999999999", "", "+64", "064",
     "0x40", "1_000", str(MAX_SIZE_MB + 1)],
)
def test_bad_sizes_are_refused_naming_size_mb(size):
    with pytest.raises(BadRequest, match="size_mb"):
        parse(size_mb=size)


@pytest.mark.parametrize("size,expected", [("1", 1), ("64", 64), ("10240", 10240), (str(MAX_SIZE_MB), MAX_SIZE_MB)])
def test_good_sizes(size, expected):
    assert parse(size_mb=size).size_mb == expected


@given(st.integers(1, MAX_SIZE_MB))
def test_every_size_in_range_parses_to_itself(n):
    assert parse_size_mb(str(n)) == n


def test_missing_size_takes_the_configured_default():
    assert parse_mount("/mnt/x", json.dumps(kubelet_options(size_mb=None)), 777).size_mb == 777


@pytest.mark.parametrize("value,expected", [(GRAPH, GRAPH), (ANONYMOUS, ANONYMOUS), ("", GRAPH), (None, GRAPH)])
def test_volume_types(value, expected):
    assert parse(ax_vol_type=value).volume_type == expected


@pytest.mark.parametrize("value", ["scratch", "AX-ANONYMOUS", "ax-anonymous "])
def test_unknown_volume_type_is_refused(value):
    with pytest.raises(BadRequest, match="ax_vol_type"):
        parse(ax_vol_type=value)


@pytest.mark.parametrize("value,read_only", [("rw", False), ("ro", True), ("", False), (None, False)])
def test_readwrite(value, read_only):
    assert parse(**{"kubernetes.io/readwrite": value}).read_only is read_only


def test_unknown_readwrite_is_refused():
    with pytest.raises(BadRequest, match="readwrite"):
        parse(**{"kubernetes.io/readwrite": "rwx"})


@pytest.mark.parametrize(
    "options_json,match",
    [
        ("not json", "not valid JSON"),
        ("{", "not valid JSON"),
        ("", "not valid JSON"),
        ("[" * 100000 + "]" * 100000, "not valid JSON"),
        ('["size_mb", "64"]', "JSON object, got list"),
        ('"size_mb=64"', "JSON object, got str"),
        ("64", "JSON object, got int"),
        ("null", "JSON object, got NoneType"),
        ('{"size_mb": 64}', "'size_mb' must be a string"),
        ('{"kubernetes.io/readwrite": true}', "must be a string"),
        ('{"ax_vol_type": null}', "must be a string"),
        ('{"x": {"nested": "object"}}', "must be a string"),
    ],
)
def test_malformed_options_are_refused(options_json, match):
    with pytest.raises(BadRequest, match=match):
        parse_mount(MOUNT_DIR, options_json, DEFAULT_MB)


@pytest.mark.parametrize(
    "mount_dir", ["", "relative/dir", "./x", "/", "/.", "/..", "/tmp/..", "/a\0b", "/a\nb", "/" + "a" * MAX_DIR_BYTES]
)
def test_bad_mount_dirs_are_refused(mount_dir):
    with pytest.raises(BadRequest, match="mount dir"):
        parse_mount(mount_dir, "{}", DEFAULT_MB)


def test_double_slash_root_is_refused():
    with pytest.raises(BadRequest, match="must not be /"):
        parse_mount_dir("//")


def test_mount_dir_is_normalised():
    assert parse_mount_dir("/var/lib//kubelet/./pods/x/") == "/var/lib/kubelet/pods/x"
    assert len(parse_mount_dir("/" + "a" * (MAX_DIR_BYTES - 1))) == MAX_DIR_BYTES


def test_every_accepted_dir_fits_in_an_lvm_tag():
    with pytest.raises(BadRequest, match="longer than"):
        parse_mount_dir("/" + "é" * (MAX_DIR_BYTES - 1))  # 2 bytes a character
    longest = parse_mount_dir("/" + "é" * ((MAX_DIR_BYTES - 1) // 2))
    assert len(f"ax.dir={encode_dir(longest)}") <= 1024


def test_a_dir_that_cannot_be_recorded_is_a_bad_request():
    try:
        path = parse_mount_dir("/var/lib/kubelet/pods/x/volumes/ax~vol_plugin/\udcff")
    except BadRequest:
        return
    encode_dir(path)  # raises UnicodeEncodeError today


def test_pod_uid_comes_from_kubelets_path_not_the_option():
    assert parse(**{"kubernetes.io/pod.uid": "someone-else"}).pod_uid == UID


def test_pod_uid_falls_back_to_the_option_outside_kubelets_layout():
    assert parse("/mnt/docker", **{"kubernetes.io/pod.uid": "abc-123"}).pod_uid == "abc-123"


@pytest.mark.parametrize("claimed", ["ABC", "../etc", "a b", "-leading", "a" * 64, "", None])
def test_implausible_claimed_pod_uid_is_dropped(claimed):
    assert parse("/mnt/docker", **{"kubernetes.io/pod.uid": claimed}).pod_uid == ""


def test_implausible_uid_in_kubelets_path_is_not_replaced_by_the_option():
    mount_dir = "/var/lib/kubelet/pods/NOT_A_UID/volumes/ax~vol_plugin/v"
    assert pod_uid_of(mount_dir, "abc") is None


@pytest.mark.parametrize(
    "mount_dir,expected",
    [
        (MOUNT_DIR, f"/var/lib/kubelet/pods/{UID}"),
        ("/data/kubelet/pods/u1/volumes/ax~vol_plugin/v", "/data/kubelet/pods/u1"),
        ("/pods/u1/volumes/p/v", "/pods/u1"),
        ("/var/lib/kubelet/pods/u1/volumes/ax~vol_plugin", None),
        ("/var/lib/kubelet/pods/u1/volume/ax~vol_plugin/v", None),
        ("/var/lib/kubelet/pod/u1/volumes/ax~vol_plugin/v", None),
        ("/mnt/docker", None),
        # A CSI volume's target path: the volume's dir holds kubelet's vol_data.json beside `mount`.
        ("/var/lib/kubelet/pods/u1/volumes/kubernetes.io~csi/cache/mount", "/var/lib/kubelet/pods/u1"),
        ("/var/lib/kubelet/pods/u1/volumes/kubernetes.io~csi/cache", "/var/lib/kubelet/pods/u1"),
        ("/var/lib/kubelet/pods/u1/volumes/kubernetes.io~csi/cache/data", None),
    ],
)
def test_pod_dir_of(mount_dir, expected):
    assert pod_dir_of(mount_dir) == expected


# ---- fuzzing: every input is a MountRequest or a BadRequest, never anything else ----------

KNOWN_KEYS = [
    "kubernetes.io/fsType", "kubernetes.io/readwrite", "kubernetes.io/pod.uid", "size_mb", "ax_vol_type",
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3),
    max_leaves=8,
)
option_dicts = st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(), json_values | st.text(), max_size=8)
mount_dirs = st.one_of(st.text(), st.just(MOUNT_DIR), st.text().map(lambda t: "/" + t))


def parse_or_refuse(mount_dir: str, options_json: str) -> None:
    try:
        request = parse_mount(mount_dir, options_json, DEFAULT_MB)
    except BadRequest:
        return
    assert isinstance(request, MountRequest)
    assert request.mount_dir.startswith("/") and request.mount_dir != "/"
    assert "\0" not in request.mount_dir and "\n" not in request.mount_dir
    assert request.fs_type in ("ext4", "xfs")
    assert request.volume_type in (GRAPH, ANONYMOUS)
    assert 1 <= request.size_mb <= MAX_SIZE_MB


@given(mount_dirs, st.text())
def test_fuzz_arbitrary_text(mount_dir, options_json):
    parse_or_refuse(mount_dir, options_json)


@given(mount_dirs, option_dicts)
def test_fuzz_arbitrary_json_objects(mount_dir, options):
    parse_or_refuse(mount_dir, json.dumps(options))


@given(st.dictionaries(st.sampled_from(KNOWN_KEYS), st.text(max_size=12), min_size=1))
def test_fuzz_known_keys_with_arbitrary_strings(options):
    parse_or_refuse(MOUNT_DIR, json.dumps(options))


# ---- cache_scope ----------------------------------------------------------------------------


def test_cache_scope_defaults_to_the_node():
    assert parse().cache_scope == "node"
    assert parse(cache_scope="").cache_scope == "node"


def test_cache_scope_namespace_uses_the_pods_namespace():
    assert parse(cache_scope="namespace").cache_scope == "ns.default"
    assert parse(cache_scope="namespace", **{"kubernetes.io/pod.namespace": "team-a"}).cache_scope == "ns.team-a"


@pytest.mark.parametrize("namespace", [None, "", "Team", "a_b", "-x", "x" * 64, "a/b"])
def test_cache_scope_namespace_without_a_valid_namespace_is_refused(namespace):
    with pytest.raises(BadRequest, match="kubernetes.io/pod.namespace"):
        parse(cache_scope="namespace", **{"kubernetes.io/pod.namespace": namespace})


@pytest.mark.parametrize("key", ["team-a", "ci.main", "A_1", "x" * 63])
def test_cache_scope_explicit_key(key):
    assert parse(cache_scope=key).cache_scope == f"key.{key}"


@pytest.mark.parametrize("key", ["-x", ".x", "a b", "a,b", "a=b", "x" * 64, "ns.x;rm", "é"])
def test_bad_cache_scope_is_refused_naming_it(key):
    with pytest.raises(BadRequest, match="cache_scope"):
        parse(cache_scope=key)


def test_the_nodes_default_cache_scope_applies_when_the_pod_names_none():
    options = json.dumps(kubelet_options(**{"kubernetes.io/pod.namespace": "team-b"}))
    assert parse_mount(MOUNT_DIR, options, DEFAULT_MB, "namespace").cache_scope == "ns.team-b"
    assert parse_mount(MOUNT_DIR, options, DEFAULT_MB, "shared").cache_scope == "key.shared"


@pytest.mark.parametrize("size", ["1", "64", "299"])
def test_xfs_below_its_minimum_is_refused_saying_why(size):
    with pytest.raises(BadRequest, match="at least 300 for xfs"):
        parse(**{"kubernetes.io/fsType": "xfs", "size_mb": size})


def test_xfs_at_its_minimum_and_small_ext4_are_accepted():
    assert parse(**{"kubernetes.io/fsType": "xfs", "size_mb": "300"}).size_mb == 300
    assert parse(**{"kubernetes.io/fsType": "ext4", "size_mb": "1"}).size_mb == 1


def test_a_small_default_size_is_refused_for_xfs_too():
    options = json.dumps(kubelet_options(**{"kubernetes.io/fsType": "xfs", "size_mb": None}))
    with pytest.raises(BadRequest, match="xfs"):
        parse_mount(MOUNT_DIR, options, 256)


@pytest.mark.parametrize("option", ["size_mb", "kubernetes.io/fsType", "ax_vol_type", "cache_scope", "kubernetes.io/readwrite"])
def test_a_long_pod_supplied_value_is_quoted_to_80_characters(option):
    value = "x" * 70 + "y" * 5000
    with pytest.raises(BadRequest) as refused:
        parse(**{option: value})
    message = str(refused.value)
    assert "x" * 70 in message and "y" * 11 not in message and "(5070 characters)" in message
    assert len(message) < 300, message
