"""Space in the volume group: eviction, exhaustion, and the usage rule (behaviours 3, 4, 10)."""

import os
import time

from . import node
from .conftest import CONFIG_PATH, SCRATCH, SPARE
from .node import Pod, check_pool, fill, slab_at, slabs

MIB = 1 << 20


def release_in_order(kubelet, pods):
    names = []
    for pod in pods:
        assert kubelet.mount(pod).ok
        names.append(slab_at(pod))
    for pod in pods:
        assert kubelet.unmount(pod).ok
        time.sleep(1.05)  # release times are whole seconds
    return names


def test_eviction_takes_least_recently_used_slabs_and_only_as_many_as_needed(kubelet):
    names = release_in_order(kubelet, [Pod(size_mb=384) for _ in range(4)])
    free_mb = node.volume_group_free_bytes() // MIB
    # More than the free space plus one slab, no more than free space plus two.
    big = Pod(size_mb=free_mb + 2 * 384 - 8)
    reply = kubelet.mount(big)
    assert reply.ok, reply.message
    remaining = slabs()
    assert names[0] not in remaining and names[1] not in remaining
    assert remaining[names[2]].state == "free" and remaining[names[3]].state == "free"
    assert node.log_lines()[-1]["evicted"] == names[:2]
    check_pool(running=[big])


def test_when_nothing_can_make_room_nothing_is_evicted_and_kubelet_retries(kubelet):
    holder = Pod(size_mb=1024)
    assert kubelet.mount(holder).ok
    (cached,) = release_in_order(kubelet, [Pod(size_mb=256)])
    before = slabs()
    free_mb = node.volume_group_free_bytes() // MIB
    waiting = Pod(size_mb=free_mb + 256 + 64)
    reply = kubelet.mount(waiting)
    assert reply.status == "Failure"
    assert f"needs {waiting.size_mb} MiB" in reply.message and f"{free_mb} MiB free" in reply.message
    assert slabs() == before, "a failed mount must not evict or create anything"
    # The pod holding the big slab ends; kubelet's next retry gets room.
    assert kubelet.unmount(holder).ok
    assert kubelet.mount(waiting).ok
    assert cached not in slabs()
    check_pool(running=[waiting])


def test_a_slab_more_than_half_full_is_deleted_at_unmount(kubelet):
    full, light = Pod(size_mb=256), Pod(size_mb=256)
    assert kubelet.mount(full).ok and kubelet.mount(light).ok
    fill(full, 0.7)
    fill(light, 0.3)
    full_slab, light_slab = slab_at(full), slab_at(light)
    assert kubelet.unmount(full).ok and kubelet.unmount(light).ok
    assert full_slab not in slabs()
    assert slabs()[light_slab].state == "free"
    lines = node.log_lines()[-2:]
    assert lines[0]["decision"] == "deleted slab" and 0.65 < lines[0]["usage"] < 0.8
    assert lines[1]["decision"] == "kept slab" and 0.25 < lines[1]["usage"] < 0.35
    # The next pod after the deleted one starts cold on a fresh slab, not on a full one.
    check_pool()


def test_a_slab_whose_inodes_are_mostly_used_is_deleted_though_its_blocks_are_not(kubelet):
    # A cache of many small files: df -h shows room, but the next pod would get ENOSPC.
    small_files, big_file = Pod(size_mb=32), Pod(size_mb=32)
    assert kubelet.mount(small_files).ok and kubelet.mount(big_file).ok
    vfs = os.statvfs(small_files.dir)
    for i in range(int(vfs.f_files * 0.7)):
        os.close(os.open(os.path.join(small_files.dir, f"f{i}"), os.O_CREAT | os.O_WRONLY, 0o644))
    assert os.statvfs(small_files.dir).f_bfree / vfs.f_blocks > 0.6  # blocks: mostly free
    fill(big_file, 0.3)
    small_slab, big_slab = slab_at(small_files), slab_at(big_file)
    assert kubelet.unmount(small_files).ok and kubelet.unmount(big_file).ok
    assert small_slab not in slabs() and slabs()[big_slab].state == "free"
    lines = node.log_lines()[-2:]
    assert lines[0]["decision"] == "deleted slab" and 0.65 < lines[0]["usage"] < 0.8
    assert lines[1]["decision"] == "kept slab"
    check_pool()


def test_the_threshold_comes_from_the_config_file(kubelet):
    with open(CONFIG_PATH, "w") as handle:
        handle.write(f"[vol_plugin]\ndevice = {SCRATCH}\nusage_threshold = 0.2\n")
    pod = Pod(size_mb=256)
    assert kubelet.mount(pod).ok
    fill(pod, 0.3)
    name = slab_at(pod)
    assert kubelet.unmount(pod).ok
    assert name not in slabs()


def test_an_admin_may_remove_a_free_slab_or_grow_the_pool_without_telling_the_driver(kubelet):
    (name,) = release_in_order(kubelet, [Pod(size_mb=128)])
    node.run("lvremove", "--yes", f"{node.VOLUME_GROUP}/{name}")
    pod = Pod(size_mb=128)
    assert kubelet.mount(pod).ok
    assert slab_at(pod) != name
    check_pool(running=[pod])


def test_space_an_admin_adds_to_the_volume_group_is_used_without_telling_the_driver(kubelet):
    holder = Pod(size_mb=1536)
    assert kubelet.mount(holder).ok
    free_mb = node.volume_group_free_bytes() // MIB
    waiting = Pod(size_mb=free_mb + 32)
    assert kubelet.mount(waiting).status == "Failure"
    node.run("wipefs", "--all", "--quiet", SPARE)
    node.run("vgextend", "--yes", node.VOLUME_GROUP, SPARE)
    assert kubelet.mount(waiting).ok
    check_pool(running=[holder, waiting])


def test_a_pod_asking_for_more_than_max_size_mb_creates_and_evicts_nothing(kubelet):
    with open(CONFIG_PATH, "w") as handle:
        handle.write(f"[vol_plugin]\ndevice = {SCRATCH}\nmax_size_mb = 512\n")
    greedy = Pod(size_mb=1800)  # the whole volume group, were there no cap
    reply = kubelet.mount(greedy)
    assert reply.status == "Failure" and "max_size_mb 512" in reply.message
    assert not node.volume_group_exists()  # not even the volume group, on a blank disk
    warm = Pod(size_mb=256)
    assert kubelet.mount(warm).ok and kubelet.unmount(warm).ok
    before = (slabs(), node.volume_group_free_bytes())
    reply = kubelet.mount(greedy)
    assert reply.status == "Failure" and "nothing was created or evicted" in reply.message
    assert (slabs(), node.volume_group_free_bytes()) == before
    assert kubelet.mount(Pod(size_mb=512)).ok  # at the cap: fine


def small_metadata_area_on_spare():
    """A volume group whose metadata area holds about ten slabs: LVM's smallest (32 KiB, kept
    small by a small data alignment), 1 MiB extents so that extents outlast metadata."""
    node.run("pvcreate", "--yes", "--metadatasize", "32k", "--dataalignment", "16k", SPARE)
    node.run("vgcreate", "--yes", "--physicalextentsize", "1m", node.VOLUME_GROUP, SPARE)
    with open(CONFIG_PATH, "w") as handle:
        handle.write(f"[vol_plugin]\ndevice = {SPARE}\n")


def test_new_slabs_are_refused_before_the_metadata_area_fills_and_every_slab_stays_usable(kubelet):
    small_metadata_area_on_spare()
    pods = []
    for _ in range(40):
        pod = Pod(size_mb=1)
        reply = kubelet.mount(pod)
        if not reply.ok:
            break
        pods.append(pod)
    else:
        raise AssertionError("40 slabs fitted: the metadata area never came near full")
    assert "LVM metadata area is nearly full" in reply.message, reply.message  # the driver's, not LVM's
    assert len(pods) >= 3
    failures = [line for line in node.log_lines() if line["outcome"] != "Success"]
    assert len(failures) == 1  # no lvcreate or lvchange ever failed on a full area
    print(f"{len(pods)} slabs before the driver refused a new one: {reply.message}")
    # Every slab can still change hands: each pod's unmount retags its slab, then other pods of
    # the same size take slabs warm (a claim adds tags, so it needs room too).
    for pod in pods:
        assert kubelet.unmount(pod).ok
    again = [Pod(size_mb=1) for _ in pods[:3]]
    for pod in again:
        reply = kubelet.mount(pod)
        assert reply.ok and node.log_lines()[-1]["decision"] == "reused warm slab", reply.message
    for pod in again:
        assert kubelet.unmount(pod).ok
    # A size nobody has: the least recently used free slabs are evicted to make metadata room.
    oldest = min(slabs().values(), key=lambda s: (int(s.tags["ax.released"]), s.name)).name
    other = Pod(size_mb=2)
    reply = kubelet.mount(other)
    assert reply.ok, reply.message
    assert oldest in node.log_lines()[-1]["evicted"]
    check_pool(running=[other])
