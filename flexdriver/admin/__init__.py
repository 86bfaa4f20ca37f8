"""ax-vol-plugin: the node admin's command for the slab pool (a click application).

It is built into its own single file, dist/ax-vol-plugin, with click vendored, and installed
beside the driver. The driver never imports this package: kubelet's calls stay stdlib-only.
"""
