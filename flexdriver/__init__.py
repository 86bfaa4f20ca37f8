"""ax/vol_plugin: a FlexVolume driver that keeps Docker graph storage warm in reusable LVM slabs.

Layers, outermost first:
  kubelet.py   the FlexVolume protocol: argv in, exactly one JSON object out
  driver.py    mount/unmount as sequences of steps that are safe to kill at any instant
  pool.py      pure decisions over a snapshot of slabs (reuse, create, evict, keep, delete)
  system/      adapters that touch the node: commands, LVM, filesystems, mounts, locks
"""

__version__ = "0.1.0"

# The answer to `init`. attach false: there is nothing to attach, so kubelet must not wait for
# an attach. fsGroup false: kubelet would otherwise chown the whole docker cache to the pod's
# fsGroup on every mount: slow on a warm slab, and it rewrites the ownership of image layers.
INIT_RESPONSE = '{"status": "Success", "capabilities": {"attach": false, "fsGroup": false}}'
