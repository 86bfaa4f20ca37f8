"""The VM itself, as the host-side launcher assumes it: what of the host the guest can see."""

import json
import os

from tests.vm import launch


def _boot_mounts() -> list:
    """(mount point, filesystem type) of every mount virtme-ng's init made, as the guest's
    script recorded them before the suite ran."""
    with open(os.environ["AX_VM_MANIFEST"]) as handle:
        results = json.load(handle)["results"]
    mounts = []
    with open(os.path.join(results, "guest-mountinfo")) as handle:
        for line in handle:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")
            mounts.append((point, fields[fields.index("-") + 1]))
    return mounts


def test_every_dir_the_guest_mounts_afresh_is_one_the_launcher_refuses():
    # A checkout under any of these would be invisible to the guest; launch.GUEST_HIDDEN is
    # how the host knows to refuse it before booting.
    shared = {"virtiofs", "9p", "overlay"}  # the host's own files (overlays keep the host's below)
    fresh = [(point, kind) for point, kind in _boot_mounts()
             if kind not in shared and point != "/" and not os.path.isfile(point)]  # files: /etc/hosts and such
    assert fresh, "no fresh mounts read: the snapshot is not what virtme-ng's init left"
    missed = [(point, kind) for point, kind in fresh if launch.hidden_in_guest(point) is None]
    assert not missed, f"mounted afresh in the guest but not in launch.GUEST_HIDDEN: {missed}"


def test_the_root_is_the_hosts_over_virtiofs():
    assert ("/", "virtiofs") in _boot_mounts()


def test_each_hidden_dir_really_is_mounted_afresh():
    # The list refuses checkouts: an entry that hides nothing would refuse one for no reason.
    points = {point for point, _ in _boot_mounts()}
    stale = [d for d in launch.GUEST_HIDDEN if d not in points]
    assert not stale, f"in launch.GUEST_HIDDEN but not mounted afresh in the guest: {stale}"
