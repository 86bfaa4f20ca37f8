"""`make bench`: where users feel the driver's speed, each figure a ratio to a floor measured in
the same run (see docs/benchmarks.md). host.py runs on the machine; guest.py inside the VM."""
