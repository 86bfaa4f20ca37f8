"""volume_group's thin-pool sizing (the LVM calls themselves are proven in tests/realkernel)."""

from __future__ import annotations

from flexdriver.volume_group import THIN_METADATA_MAX, thin_metadata_bytes

MIB = 1 << 20
GIB = 1 << 30


def test_a_device_of_a_few_gib_gets_the_64_mib_metadata_floor():
    assert thin_metadata_bytes(2 * GIB) == 64 * MIB


def test_a_large_device_gets_128_bytes_per_chunk_up_to_dm_thins_limit():
    assert thin_metadata_bytes(1024 * GIB) == 2 * GIB  # 16 Mi chunks of 64 KiB
    assert thin_metadata_bytes(1 << 50) == THIN_METADATA_MAX


def test_on_a_small_device_metadata_and_its_spare_leave_most_of_it_for_data():
    # A 71 MiB disk: 64 MiB of metadata and a spare as big did not fit ("Not enough space for
    # thin pool creation"), so the first mount on such a node failed.
    device = 71 * MIB
    metadata = thin_metadata_bytes(device)
    assert 2 * metadata <= device // 8 and metadata % MIB == 0


def test_metadata_is_never_below_lvms_minimum():
    assert thin_metadata_bytes(8 * MIB) == 2 * MIB
