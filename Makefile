# make demo   boot a real kernel, install the driver, play kubelet for a series of pods
# make test   unit tests, the real-kernel suite (two VM boots) and the short reliability run
#             (one boot): about 75 minutes on 2 cores
# make reliability  the full reliability run, which writes docs/reliability.md
# make bench  ratios of the driver's speed to floors measured in the same run (docs/benchmarks.md)
# make deps   what both need: Debian's kernel, qemu, lvm2, xfsprogs; virtme-ng and pytest in .venv

VENV    := .venv
PYTHON  := $(VENV)/bin/python
APT_PKGS := linux-image-amd64 qemu-system-x86 lvm2 xfsprogs e2fsprogs udev kmod strace \
            docker.io apparmor busybox-static lintian inotify-tools prometheus
STAMP   := $(VENV)/.deps-installed
RELIABILITY_LEVEL ?= full

.PHONY: deps build deb test unit realkernel reliability reliability-short lint demo bench clean

$(STAMP): requirements-test.txt
	@if ! ls /boot/vmlinuz-* >/dev/null 2>&1 || ! command -v qemu-system-x86_64 >/dev/null || \
	    ! command -v lvcreate >/dev/null || ! command -v mkfs.xfs >/dev/null || ! command -v strace >/dev/null || \
	    ! command -v dockerd >/dev/null || ! command -v apparmor_parser >/dev/null || ! test -x /bin/busybox || \
	    ! command -v lintian >/dev/null || ! command -v inotifywait >/dev/null || ! command -v promtool >/dev/null; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(APT_PKGS); \
	fi
	@# kubectl (for `kubectl kustomize`): Debian's kubernetes-client, unless the machine has a kubectl already.
	@command -v kubectl >/dev/null || { apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends kubernetes-client; }
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --disable-pip-version-check -r requirements-test.txt
	touch $@

deps: $(STAMP)

build:
	packaging/build

deb:
	packaging/build-deb

lint: $(STAMP)
	$(VENV)/bin/ruff check flexdriver tests demo bench

unit: $(STAMP)
	$(PYTHON) -m pytest tests/unit tests/examples tests/packaging -q

realkernel: $(STAMP) build
	$(PYTHON) -m tests.vm.realkernel_suite

reliability: $(STAMP) build
	$(PYTHON) -m tests.vm.reliability_suite --level $(RELIABILITY_LEVEL)

# The short level inside `make test`: its report goes under .vm, docs/ keeps the full run's.
reliability-short: $(STAMP) build
	$(PYTHON) -m tests.vm.reliability_suite --level short --report .vm/reliability-short.md

test: lint unit realkernel reliability-short

demo: $(STAMP) build
	$(PYTHON) -m demo.run

bench: $(STAMP) build
	$(PYTHON) -m bench.host

clean:
	rm -rf dist .vm
