"""options.parse_mount, property by property: one option of kubelet's real call changed at a
time, to anything; accepted exactly when the documented rule says so, and then taken as given.
(test_options.py fuzzes whole inputs; this pins down each rule.)"""

from __future__ import annotations

import json
import re

from hypothesis import given
from hypothesis import strategies as st

from flexdriver.errors import BadRequest
from flexdriver.options import ANONYMOUS, GRAPH, MAX_SIZE_MB, parse_mount

from .test_options import DEFAULT_MB, MOUNT_DIR, kubelet_options

# Text that is mostly near the rules (digits, the real names, their neighbours), sometimes anything.
near_sizes = st.one_of(
    st.from_regex(r"\A[0-9]{1,12}\Z"), st.from_regex(r"\A[ +\-0]?[0-9]{1,4}[ .e]?[0-9]?\Z"), st.text(max_size=8)
)
names = st.one_of(
    st.sampled_from(["", "ext4", "xfs", "EXT4", "ext4 ", "btrfs", GRAPH, ANONYMOUS, "rw", "ro", "RW", "r", "rwx"]),
    st.text(max_size=12),
)
not_strings = st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), st.none(), st.lists(st.integers(), max_size=2))


def outcome(**overrides):
    try:
        return parse_mount(MOUNT_DIR, json.dumps(kubelet_options(**overrides)), DEFAULT_MB)
    except BadRequest as err:
        return err


@given(near_sizes)
def test_size_mb_is_accepted_exactly_when_it_is_a_whole_number_in_range(raw):
    result = outcome(size_mb=raw)
    valid = re.fullmatch(r"[1-9][0-9]{0,9}", raw) is not None and int(raw) <= MAX_SIZE_MB
    if valid:
        assert result.size_mb == int(raw)
    else:
        assert isinstance(result, BadRequest) and "size_mb" in str(result)


@given(names)
def test_fs_type_is_accepted_exactly_when_it_is_ext4_xfs_or_empty(raw):
    result = outcome(**{"kubernetes.io/fsType": raw})
    if raw in ("", "ext4", "xfs"):
        assert result.fs_type == (raw or "ext4")
    else:
        assert isinstance(result, BadRequest) and "fsType" in str(result)


@given(names)
def test_volume_type_is_accepted_exactly_when_it_is_one_of_the_two_or_empty(raw):
    result = outcome(ax_vol_type=raw)
    if raw in ("", GRAPH, ANONYMOUS):
        assert result.volume_type == (raw or GRAPH)
    else:
        assert isinstance(result, BadRequest) and "ax_vol_type" in str(result)


@given(names)
def test_readwrite_is_accepted_exactly_when_it_is_rw_ro_or_empty(raw):
    result = outcome(**{"kubernetes.io/readwrite": raw})
    if raw in ("", "rw", "ro"):
        assert result.read_only is (raw == "ro")
    else:
        assert isinstance(result, BadRequest) and "readwrite" in str(result)


@given(st.sampled_from(["size_mb", "kubernetes.io/fsType", "ax_vol_type", "kubernetes.io/readwrite", "cache_scope"]), not_strings)
def test_a_value_that_is_not_a_string_is_refused_naming_its_key(key, value):
    options = dict(kubelet_options(), **{key: value})
    try:
        parse_mount(MOUNT_DIR, json.dumps(options), DEFAULT_MB)
    except BadRequest as err:
        assert repr(key) in str(err) and "must be a string" in str(err)
    else:
        raise AssertionError(f"{key}={value!r} was accepted")
