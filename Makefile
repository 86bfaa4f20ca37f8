# make demo   boot a real kernel, install the driver, play kubelet for a series of pods
# make test   lint, unit tests, the real-kernel suite (two VM boots) and the short reliability run
#             (one boot), each phase timed, with a table of their minutes at the end
# make reliability  the full reliability run, on a thick node and then a thin one, which writes docs/reliability.md
# make soak   500 pod cycles in a VM: LVM's archive and metadata, the log and call latency per 100,
#             extrapolated to 10,000 pods (docs/soak.md, and its section of docs/reliability.md)
# make bench  ratios of the driver's speed to floors measured in the same run (docs/benchmarks.md)
# make e2e    the real kubelet (built from the Go module proxy by make e2e-deps) with containerd
#             and pods from examples/, in a VM; the CSI scenarios with kube-apiserver and etcd (docs/e2e.md)
# make deps   what both need: Debian's kernel, qemu, lvm2 (with thin-provisioning-tools), xfsprogs; virtme-ng and pytest in .venv;
#             virtiofsd built with cargo into the cache dir (outside the repo)

VENV    := .venv
PYTHON  := $(VENV)/bin/python
APT_PKGS := linux-image-amd64 qemu-system-x86 lvm2 thin-provisioning-tools xfsprogs e2fsprogs udev kmod strace \
            docker.io apparmor busybox-static lintian inotify-tools prometheus \
            containernetworking-plugins
STAMP   := $(VENV)/.deps-installed
# Build outputs the VM tooling needs (virtiofsd), kept outside the repo and reused by later runs.
AX_CACHE_DIR ?= $(HOME)/.cache/ax-vol-plugin
export AX_CACHE_DIR
# The guest's root is the host's, shared by virtiofs with the guest's page cache on
# (virtme-ng's 9p root has none, and process starts in the guest then cost ~2x). virtme-ng picks
# up the Rust virtiofsd only; Debian 12 packages the C one, so it is built from crates.io.
VIRTIOFSD_VERSION := 1.14.0
VIRTIOFSD_STAMP   := $(AX_CACHE_DIR)/virtiofsd/.installed-$(VIRTIOFSD_VERSION)
CARGO   ?= $(shell command -v cargo || echo $(HOME)/.cargo/bin/cargo)
PHASE   := python3 tests/phases.py
RELIABILITY_LEVEL ?= full

.PHONY: deps build deb test unit csi-api realkernel reliability reliability-short soak lint demo bench clean e2e e2e-deps

$(STAMP): requirements-test.txt requirements-csi.txt
	@if ! ls /boot/vmlinuz-* >/dev/null 2>&1 || ! command -v qemu-system-x86_64 >/dev/null || \
	    ! command -v lvcreate >/dev/null || ! command -v mkfs.xfs >/dev/null || ! command -v strace >/dev/null || \
	    ! command -v dockerd >/dev/null || ! command -v apparmor_parser >/dev/null || ! test -x /bin/busybox || \
	    ! command -v lintian >/dev/null || ! command -v inotifywait >/dev/null || ! command -v promtool >/dev/null || \
	    ! test -x /usr/lib/cni/bridge || ! command -v thin_check >/dev/null; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(APT_PKGS); \
	fi
	@# kubectl (for `kubectl kustomize`): Debian's kubernetes-client, unless the machine has a kubectl already.
	@command -v kubectl >/dev/null || { apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends kubernetes-client; }
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --disable-pip-version-check -r requirements-test.txt -r requirements-csi.txt
	touch $@

$(VIRTIOFSD_STAMP):
	@dpkg -s libseccomp-dev libcap-ng-dev >/dev/null 2>&1 || { apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libseccomp-dev libcap-ng-dev pkg-config; }
	$(CARGO) install --quiet --locked --root $(AX_CACHE_DIR)/virtiofsd virtiofsd@$(VIRTIOFSD_VERSION)
	touch $@

# Timed (and shown in make test's table) only when there is something to install.
deps:
	@$(MAKE) -q $(STAMP) $(VIRTIOFSD_STAMP) 2>/dev/null || \
	  $(PHASE) run deps -- $(MAKE) --no-print-directory $(STAMP) $(VIRTIOFSD_STAMP)

build:
	packaging/build

deb:
	packaging/build-deb

lint: $(STAMP)
	$(VENV)/bin/ruff check flexdriver tests demo bench

# The CSI front-end's messages, generated from the spec's .proto (Go module proxy) into the cache
# dir; a no-op once there.
csi-api: $(STAMP)
	$(PYTHON) packaging/csi-api

unit: $(STAMP) csi-api
	$(PYTHON) -m pytest tests/unit tests/vm tests/examples tests/packaging -q

realkernel: $(STAMP) $(VIRTIOFSD_STAMP) build csi-api
	$(PYTHON) -m tests.vm.realkernel_suite

reliability: $(STAMP) $(VIRTIOFSD_STAMP) build
	$(PYTHON) -m tests.vm.reliability_suite --level $(RELIABILITY_LEVEL)

# The short level inside `make test`: its report goes under .vm, docs/ keeps the full run's.
reliability-short: $(STAMP) $(VIRTIOFSD_STAMP) build
	$(PYTHON) -m tests.vm.reliability_suite --level short --report .vm/reliability-short.md

# Not part of make test: about 21 minutes of VM time on its own.
SOAK_ARGS ?=
soak: $(STAMP) $(VIRTIOFSD_STAMP) build
	$(PYTHON) -m tests.vm.soak_suite $(SOAK_ARGS)

# kubelet and kube-apiserver at the release tests/e2e/build.py pins (and the etcd it selects), into
# the cache dir; reused.
e2e-deps: $(STAMP)
	$(PYTHON) -m tests.e2e.build

e2e: $(STAMP) $(VIRTIOFSD_STAMP) build csi-api e2e-deps
	$(PYTHON) -m tests.vm.e2e_suite

test: deps
	@$(PHASE) test lint unit realkernel reliability-short

demo: $(STAMP) $(VIRTIOFSD_STAMP) build
	$(PYTHON) -m demo.run

bench: $(STAMP) $(VIRTIOFSD_STAMP) build csi-api
	$(PYTHON) -m bench.host

clean:
	rm -rf dist .vm
