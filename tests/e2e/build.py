"""Build the real kubelet, kube-apiserver and etcd from the Go module proxy, for the end-to-end suite.

k8s.io/kubernetes is not meant to be a dependency: its go.mod points each staging module
(k8s.io/api, k8s.io/client-go, ...) at ./staging/src/..., which a module download does not have.
So the build module here requires k8s.io/kubernetes at one pinned release and replaces every
staging module with its published v0 release of the same minor, a list generated from that
release's own go.mod, never written by hand. Outputs go to the cache dir (outside the repo),
keyed by the release; a second run with the binaries present does nothing.

Why this release: the newest the module proxy serves, and it still runs on Debian 12's
containerd 1.6.20. That containerd speaks CRI v1 but lacks the RuntimeConfig call (containerd
>= 1.7 has it); kubelet 1.37 then falls back to its own cgroupDriver setting (it logs "Falling
back to using cgroupDriver from kubelet config").
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time

KUBERNETES = "v1.37.2"
STAGING_VERSION = "v0." + KUBERNETES[len("v1."):]  # k8s.io/api etc. are tagged v0.<minor>.<patch>
# Each program's main package. etcd is the release k8s.io/kubernetes's own module graph selects
# (the one its apiserver is built and tested against), so it adds no module of its own choosing.
PACKAGES = {
    "kubelet": "k8s.io/kubernetes/cmd/kubelet",
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "etcd": "go.etcd.io/etcd/server/v3",
}
PROGRAMS = tuple(PACKAGES)  # what `make e2e-deps` builds
# What the suite runs: kubelet for the FlexVolume scenarios, and the control plane the CSI
# scenarios need (kubelet serves a CSI inline volume only for a driver its CSIDriver object names).
SUITE_PROGRAMS = PROGRAMS
CACHE_DIR = os.environ.get("AX_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "ax-vol-plugin")
E2E_CACHE = os.path.join(CACHE_DIR, "e2e")
BUILD_DIR = os.path.join(E2E_CACHE, f"kubernetes-{KUBERNETES}")
BIN_DIR = os.path.join(BUILD_DIR, "bin")
IMAGES_DIR = os.path.join(E2E_CACHE, "images")
GO_ENV = {
    "GOMODCACHE": os.path.join(E2E_CACHE, "gomod"),
    "GOCACHE": os.path.join(E2E_CACHE, "gocache"),
    "GOFLAGS": "-modcacherw -buildvcs=false",  # a cache that `rm -rf` can remove
    "CGO_ENABLED": "0",  # static binaries: the guest runs them from the host's root
    "GOTOOLCHAIN": "local",
}
REPLACED = re.compile(r"^\s*(k8s\.io/[A-Za-z0-9._-]+)\s*=>\s*\./staging/src/\1\s*$")


def binary(program: str) -> str:
    return os.path.join(BIN_DIR, program)


def go(*args: str, cwd: str, log) -> None:
    env = {**os.environ, **GO_ENV}
    log.write(f"$ go {' '.join(args)}\n".encode())
    log.flush()
    out = subprocess.run(["go", *args], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    if out.returncode != 0:
        raise SystemExit(f"e2e-deps: go {' '.join(args)} failed (exit {out.returncode}); see {log.name}")


def staging_modules(kubernetes_go_mod: str) -> list:
    """The module paths that k8s.io/kubernetes's go.mod replaces with its own staging dirs."""
    with open(kubernetes_go_mod) as handle:
        return sorted({m.group(1) for m in map(REPLACED.match, handle) if m})


def go_mod(staging: list) -> str:
    lines = ["module ax-vol-plugin.local/e2e-kubernetes", "", "go 1.26", "", f"require k8s.io/kubernetes {KUBERNETES}", "",
             "replace ("]
    lines += [f"\t{module} => {module} {STAGING_VERSION}" for module in staging]
    lines += [")", ""]
    return "\n".join(lines)


def ldflags() -> str:
    """What kubernetes' own build stamps, so that `kubelet --version` and the node's status name the release."""
    major, minor = KUBERNETES[1:].split(".")[:2]
    flags = []
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {package}.gitVersion={KUBERNETES}", f"-X {package}.gitMajor={major}",
                  f"-X {package}.gitMinor={minor}", f"-X {package}.gitTreeState=clean",
                  f"-X {package}.buildDate=1970-01-01T00:00:00Z"]
    return " ".join(["-s", "-w", *flags])


def build(programs: tuple) -> dict:
    # One build at a time per release: a second (another checkout's make e2e, say) waits here
    # for the first and then finds the binaries made.
    os.makedirs(BIN_DIR, exist_ok=True)
    with open(os.path.join(BUILD_DIR, ".lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"e2e-deps: waiting for the build of {KUBERNETES} already running", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        missing = tuple(p for p in programs if not os.access(binary(p), os.X_OK))
        if not missing:
            return {}
        if shutil.which("go") is None:
            raise SystemExit("e2e-deps: no go on PATH (the machines have Go 1.26)")
        return _build_locked(missing)


def _build_locked(programs: tuple) -> dict:
    figures = {}
    with open(os.path.join(BUILD_DIR, "build.log"), "ab") as log:
        started = time.monotonic()
        fetched = subprocess.run(["go", "mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES}"],
                                 cwd=BUILD_DIR, env={**os.environ, **GO_ENV}, capture_output=True, text=True)
        if fetched.returncode != 0:
            raise SystemExit(f"e2e-deps: cannot fetch k8s.io/kubernetes@{KUBERNETES}: {fetched.stderr.strip()}")
        staging = staging_modules(json.loads(fetched.stdout)["GoMod"])
        if not staging:
            raise SystemExit(f"e2e-deps: k8s.io/kubernetes@{KUBERNETES}'s go.mod replaces no staging modules: layout changed?")
        with open(os.path.join(BUILD_DIR, "go.mod"), "w") as handle:
            handle.write(go_mod(staging))
        # k8s.io/kubernetes's packages first (kubelet's when only etcd is missing): they settle the
        # module graph, and go.sum, that etcd's version is then read from.
        kubernetes = [p for p in programs if PACKAGES[p].startswith("k8s.io/kubernetes/")]
        go("get", *(f"{PACKAGES[p]}@{KUBERNETES}" for p in kubernetes or ["kubelet"]), cwd=BUILD_DIR, log=log)
        for program in programs:
            if program not in kubernetes:  # at the version already selected: `go get` alone would upgrade it
                module = PACKAGES[program]
                version = _selected_version(module)
                go("get", f"{module}@{version}", cwd=BUILD_DIR, log=log)
        figures["fetch_s"] = time.monotonic() - started
        # The programs in one go build: the packages they share (most of them) compile once,
        # and the compiler keeps both cores busy across them.
        started = time.monotonic()
        partial = os.path.join(BUILD_DIR, "bin.partial")
        shutil.rmtree(partial, ignore_errors=True)
        os.makedirs(partial)
        go("build", "-trimpath", "-ldflags", ldflags(), "-o", partial + "/",
           *(PACKAGES[p] for p in programs), cwd=BUILD_DIR, log=log)
        for program in programs:
            os.replace(os.path.join(partial, output_name(PACKAGES[program])), binary(program))
        os.rmdir(partial)
        figures["build_s"] = time.monotonic() - started
    return figures


def _selected_version(module: str) -> str:
    listed = subprocess.run(["go", "list", "-m", "-f", "{{.Version}}", module], cwd=BUILD_DIR,
                            env={**os.environ, **GO_ENV}, capture_output=True, text=True)
    if listed.returncode != 0 or not listed.stdout.strip():
        raise SystemExit(f"e2e-deps: {module} is not in k8s.io/kubernetes@{KUBERNETES}'s module graph: "
                         f"{listed.stderr.strip()}")
    return listed.stdout.strip()


def output_name(package: str) -> str:
    """The file `go build -o DIR/` writes for a main package: its last path element, or the one
    before a major-version suffix (go.etcd.io/etcd/server/v3 is `server`)."""
    parts = package.split("/")
    return parts[-2] if len(parts) > 1 and re.fullmatch(r"v([2-9]|[1-9][0-9]+)", parts[-1]) else parts[-1]


def size_mb(path: str) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total / (1 << 20)


def main(argv: list) -> int:
    """`python -m tests.e2e.build [PROGRAM...]`: those named, or every program."""
    programs = tuple(argv) or PROGRAMS
    unknown = sorted(set(programs) - set(PROGRAMS))
    if unknown:
        raise SystemExit(f"e2e-deps: can build {', '.join(PROGRAMS)}, not {', '.join(unknown)}")
    started = time.monotonic()
    figures = build(programs)
    if figures:
        figures["total_s"] = time.monotonic() - started
        figures["module_cache_mb"] = size_mb(GO_ENV["GOMODCACHE"])
        figures["build_cache_mb"] = size_mb(GO_ENV["GOCACHE"])
        for program in programs:
            figures[f"{program}_mb"] = os.path.getsize(binary(program)) / (1 << 20)
        figures["programs"] = " ".join(programs)
        with open(os.path.join(BUILD_DIR, "figures.json"), "w") as handle:
            json.dump(figures, handle, indent=1)
        print("e2e-deps: built " + ", ".join(f"{k} {v:.0f}" if isinstance(v, float) else f"{k} {v}"
                                            for k, v in figures.items()))
    else:
        print(f"e2e-deps: {' and '.join(programs)} {KUBERNETES} already built in {BIN_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
