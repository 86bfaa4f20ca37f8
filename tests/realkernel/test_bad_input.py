"""Bad input never crashes the driver and never touches the disk (behaviours 8, 10)."""

import json
import os

from . import node
from .conftest import CONFIG_PATH, SPARE
from .node import Pod, check_pool

BAD_SIZES = ["abc", "-5", "0", "1.5e3", "64 --help", "64; touch /tmp/x", "", " 64", "0x40", "100000"]
BAD_FS = ["btrfs", "ext4; touch /tmp/x", "EXT4", "xfs -f", "../ext4"]


def bad_calls(pod: Pod):
    options = json.loads(pod.options())
    yield ("mount", pod.dir, "{not json")
    yield ("mount", pod.dir, "[1, 2]")
    yield ("mount", pod.dir, '"a string"')
    yield ("mount", pod.dir, "null")
    yield ("mount", pod.dir, json.dumps({**options, "size_mb": 64}))
    yield ("mount", pod.dir)
    yield ("mount",)
    yield ("unmount",)
    yield ("unmount", "relative/dir")
    yield ("mount", "relative/dir", pod.options())
    for size in BAD_SIZES:
        yield ("mount", pod.dir, json.dumps({**options, "size_mb": size}))
    for fs in BAD_FS:
        yield ("mount", pod.dir, json.dumps({**options, "kubernetes.io/fsType": fs}))
    yield ("mount", pod.dir, json.dumps({**options, "ax_vol_type": "ax-everything"}))


def state():
    return (node.volume_group_exists(), node.slabs(), node.slab_mounts(), os.path.exists("/tmp/x"))


def assert_all_refused(kubelet, pod):
    before = state()
    for argv in bad_calls(pod):
        os.makedirs(pod.dir, mode=0o750, exist_ok=True)
        reply = kubelet.call(*argv)
        assert reply.status == "Failure", (argv, reply)
        assert reply.message and "Traceback" not in reply.message and "internal error" not in reply.message, (argv, reply)
        assert state() == before, f"{argv} changed the node"


def test_bad_input_is_refused_before_the_volume_group_exists(kubelet):
    assert_all_refused(kubelet, Pod(size_mb=128))
    assert not node.volume_group_exists()


def test_bad_input_changes_nothing_in_a_live_pool(kubelet):
    running = Pod(size_mb=128)
    assert kubelet.mount(running).ok
    released = Pod(size_mb=128)
    assert kubelet.mount(released).ok and kubelet.unmount(released).ok
    assert_all_refused(kubelet, Pod(size_mb=128))
    check_pool(running=[running])


def test_messages_say_what_is_wrong(kubelet):
    pod = Pod(size_mb=128)
    options = json.loads(pod.options())
    os.makedirs(pod.dir, mode=0o750)
    size = kubelet.call("mount", pod.dir, json.dumps({**options, "size_mb": "64; touch /tmp/x"})).message
    assert "size_mb" in size and "64; touch /tmp/x" in size
    fs = kubelet.call("mount", pod.dir, json.dumps({**options, "kubernetes.io/fsType": "btrfs"})).message
    assert "btrfs" in fs and "ext4" in fs and "xfs" in fs
    huge = kubelet.call("mount", pod.dir, json.dumps({**options, "size_mb": "100000"})).message
    assert "100000" in huge and "larger than" in huge


def test_a_device_with_data_on_it_is_never_made_a_volume_group(kubelet):
    node.run("mkfs.ext4", "-q", "-F", SPARE)
    with open(CONFIG_PATH, "w") as handle:
        handle.write(f"[vol_plugin]\ndevice = {SPARE}\n")
    pod = Pod(size_mb=16)
    reply = kubelet.mount(pod)
    assert reply.status == "Failure"
    assert SPARE in reply.message and "ext4" in reply.message
    assert not node.volume_group_exists()
    assert "TYPE=\"ext4\"" in node.run("blkid", "-p", SPARE).stdout


def test_a_missing_device_is_named(kubelet):
    with open(CONFIG_PATH, "w") as handle:
        handle.write("[vol_plugin]\ndevice = /dev/xvdz\n")
    reply = kubelet.mount(Pod(size_mb=16))
    assert reply.status == "Failure" and "/dev/xvdz" in reply.message
    assert not node.volume_group_exists()
