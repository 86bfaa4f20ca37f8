"""Boot a throw-away VM on a real kernel and run one command in it.

The host kernel has no device-mapper, so everything that touches LVM, filesystems or mounts runs
in a guest: Debian's kernel under qemu (software emulation; nested KVM hangs on these machines),
booted by virtme-ng. The guest sees the host's root read-only, with throw-away overlays on /etc,
/usr, /var, /tmp; the only devices it can write are the blank sparse disk images made here, and
the only way out is the results dir.
"""

from __future__ import annotations

import glob
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence, TypeVar

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUEST_PATH = "/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"
MIB = 1 << 20
T = TypeVar("T")
# vCPUs of a guest that runs beside another. Measured on a 2-core host (the same probe of process
# starts and imports in each guest): two 1-vCPU guests side by side took 58 s for both, where
# one 2-vCPU guest alone took 66 s and two side by side 113 s (four vCPU threads on two cores,
# and multi-threaded TCG's cross-vCPU work). Concurrency inside a guest is still real: its
# processes are preempted and interleaved on the one vCPU.
LANE_CPUS = 1
CACHE_DIR = os.environ.get("AX_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "ax-vol-plugin")


# Where virtme-ng's guest init mounts something fresh (tmpfs, the kernel's own filesystems) over
# the host's root: a host path under one of these is not what the guest sees there. The rest is
# the host's (read-only, or under a throw-away overlay), but for a few single files. Kept true by
# tests/realkernel/test_vm.py, which compares it with the guest's mount table.
GUEST_HIDDEN = (
    "/dev", "/proc", "/sys", "/run", "/var/log", "/var/tmp", "/var/cache", "/var/lib/apt", "/var/lib/private", "/etc/lvm",
)


def hidden_in_guest(path: str) -> Optional[str]:
    """The guest-hidden location `path` is under, if any (after resolving links, as the guest would)."""
    real = os.path.realpath(path)
    for hidden in GUEST_HIDDEN:
        if real == hidden or real.startswith(hidden + "/"):
            return hidden
    return None


def check_guest_can_see(paths: Sequence[str]) -> None:
    """Refuse before booting when the guest would not see the checkout or the Python that runs the
    suite (it would fail minutes later with a bare `not found`)."""
    for path in paths:
        hidden = hidden_in_guest(path)
        if hidden is not None:
            sys.exit(
                f"vm: {path} is under {hidden}, which the test VM mounts afresh, so the guest cannot see it; "
                f"use a checkout (and venv) outside {', '.join(GUEST_HIDDEN)}, e.g. under /work, /srv, /home or /tmp"
            )


def kernel() -> str:
    candidates = sorted(glob.glob("/boot/vmlinuz-*"))
    if not candidates:
        sys.exit("no kernel in /boot: run `make deps` (installs linux-image-amd64)")
    return candidates[-1]


def host_path() -> str:
    # vng runs virtme-run by name: the venv's bin dir must be on PATH, activated or not; and it
    # looks for virtiofsd on PATH, where `make deps` built it into the cache dir.
    bins = [os.path.dirname(sys.executable), os.path.join(CACHE_DIR, "virtiofsd", "bin")]
    return os.pathsep.join([*bins, os.environ.get("PATH", "")])


def vng() -> str:
    found = shutil.which("vng", path=host_path())
    if not found:
        sys.exit("vng not found: run `make deps` (installs virtme-ng into .venv)")
    return found


def virtiofsd() -> str:
    # Without it vng falls back to a 9p root quietly, and every suite takes about twice as long.
    found = shutil.which("virtiofsd", path=host_path())
    if not found:
        sys.exit(f"virtiofsd not found under {CACHE_DIR}: run `make deps` (builds it with cargo)")
    return found


def make_disks(workdir: str, sizes_mb: Dict[str, int]) -> Dict[str, str]:
    """Blank sparse images. Their exact sizes go into the manifest, so that the guest suite can
    check that the device it is about to wipe is one of these and not anything else."""
    paths = {}
    for name, size_mb in sizes_mb.items():
        path = os.path.join(workdir, f"{name}.img")
        with open(path, "wb") as image:
            image.truncate(size_mb * MIB)
        paths[name] = path
    return paths


def boot(
    command: Sequence[str],
    workdir: str,
    disks: Dict[str, str],
    *,
    memory: str = "2G",
    cpus: int = 2,
    timeout_s: float = 5400,
    env: Dict[str, str] = None,
    lane: str = "",
) -> int:
    """Run `command` in a fresh guest with `disks` attached in order (vda, vdb, ...).
    Returns the command's exit code inside the guest. `lane` names the guest in every line it
    relays, for guests booted side by side (see in_lanes)."""
    workdir = os.path.abspath(workdir)
    # The results dir is shared with the guest wherever it is; everything else must be in view.
    check_guest_can_see([REPO, sys.prefix, *[a for a in command if os.path.isabs(a) and not a.startswith(workdir + "/")]])
    virtiofsd()
    names = list(disks)
    manifest = {
        "disks": {
            f"/dev/vd{chr(ord('a') + i)}": {"name": name, "bytes": os.path.getsize(disks[name])}
            for i, name in enumerate(names)
        },
        "results": workdir,
    }
    manifest_path = os.path.join(workdir, "manifest.json")
    with open(manifest_path, "w") as handle:
        json.dump(manifest, handle, indent=1)
    rc_path = os.path.join(workdir, "guest.rc")
    if os.path.exists(rc_path):
        os.unlink(rc_path)
    exports = {
        "AX_VM_MANIFEST": manifest_path,
        "PATH": GUEST_PATH,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "AX_CACHE_DIR": CACHE_DIR,  # build outputs the guest's tests use (the CSI modules)
        **(env or {}),
    }
    script = os.path.join(workdir, "guest.sh")
    with open(script, "w") as handle:
        handle.write("#!/bin/sh\n")
        for key, value in exports.items():
            handle.write(f"export {key}={shlex.quote(value)}\n")
        # A node's boot: the modules a CI node loads for LVM, its filesystems and overlay2.
        handle.write("for m in dm-mod dm-snapshot ext4 xfs overlay loop; do modprobe $m 2>/dev/null; done\n")
        # The host-side check above knows virtme-ng's mounts; this one says so if it did not.
        handle.write(
            f"test -d {shlex.quote(os.path.join(REPO, 'tests'))} || {{ echo 'vm: the guest cannot see the checkout "
            f"{REPO}' >&2; echo 126 > {shlex.quote(rc_path)}; exit 1; }}\n"
        )
        # The mount table as virtme-ng's init left it, before the suite mounts anything: what
        # tests/realkernel/test_vm.py checks GUEST_HIDDEN against.
        handle.write(f"cat /proc/self/mountinfo > {shlex.quote(os.path.join(workdir, 'guest-mountinfo'))}\n")
        handle.write(f"cd {shlex.quote(REPO)}\n")
        handle.write(f"{shlex.join(command)}\n")
        handle.write(f"echo $? > {shlex.quote(rc_path)}\n")
    os.chmod(script, 0o755)
    argv = [vng(), "--disable-kvm", "-r", kernel(), "--memory", memory, "--cpus", str(cpus), "--rwdir", workdir]
    # vng gives each disk the path it was handed as its serial, of which the guest sees 20
    # bytes: short links make those differ per disk (udev's ID_SERIAL, /dev/disk/by-id names).
    links = tempfile.mkdtemp(prefix="ax-", dir="/tmp")
    for name in names:
        link = os.path.join(links, name)
        os.symlink(disks[name], link)
        argv += ["--disk", link]
    argv += ["--exec", script]
    console = os.path.join(workdir, f"console-{int(time.time())}.log")
    try:
        finished = _relay(argv, console, timeout_s, f"[{lane}] " if lane else "")
    finally:
        shutil.rmtree(links, ignore_errors=True)
    _report_root(workdir)
    if not finished:
        print(f"vm: guest did not finish within {timeout_s:.0f} s (console: {console})", file=sys.stderr)
        return 124
    try:
        with open(rc_path) as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        print("vm: the guest ended without reporting an exit code (kernel panic or crash?)", file=sys.stderr)
        return 125


def guest_root_type(workdir: str) -> Optional[str]:
    """The filesystem type of the guest's root, from the mount table its script saved."""
    kind = None
    try:
        with open(os.path.join(workdir, "guest-mountinfo")) as handle:
            for line in handle:
                fields = line.split()
                if fields[4] == "/":
                    kind = fields[fields.index("-") + 1]  # the last mount on / is the one in view
    except (OSError, IndexError, ValueError):
        return None
    return kind


def _report_root(workdir: str) -> None:
    kind = guest_root_type(workdir)
    if kind is not None and kind != "virtiofs":
        print(f"vm: warning: the guest's root was {kind}, not virtiofs (vng did not start virtiofsd?): "
              "every process start in the guest was about twice as slow", file=sys.stderr)


# Lines qemu and the guest's shell print on every boot that say nothing about the run.
_NOISE = ("leaked on", "Image format was not specified", "Automatically detecting the format", "Specify the 'raw' format")


_OUTPUT = threading.Lock()


def say(line: str, prefix: str = "") -> None:
    """One whole line to stdout, never interleaved with another lane's."""
    with _OUTPUT:
        sys.stdout.write(prefix + line + ("" if line.endswith("\n") else "\n"))
        sys.stdout.flush()


def in_lanes(lanes: Dict[str, Callable[[str], T]]) -> Dict[str, T]:
    """Run each lane's function (given the lane's name) in a thread of its own, all at once, and
    return their results by name. A guest under software emulation keeps about one host core
    busy (its work is mostly one process at a time), so two guests side by side use a 2-core
    host that one leaves half idle. Boot lane guests with LANE_CPUS."""
    results: Dict[str, T] = {}
    errors: List[BaseException] = []

    def run(name: str) -> None:
        try:
            results[name] = lanes[name](name)
        except BaseException as error:  # re-raised below, in the caller's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(name,), name=f"lane-{name}") for name in lanes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def _relay(argv: List[str], console: str, timeout_s: float, prefix: str = "") -> bool:
    """Run vng with its console on a pipe: the whole of it goes to `console`, and all but known
    noise to our stdout. (Given a file as stdout, qemu reopens it and writes from offset 0 over
    what was there.) Returns False on timeout."""
    with open(console, "wb") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "PATH": host_path()}, start_new_session=True,
        )
        # A silent hang must end too; the whole group, since qemu is vng's child.
        watchdog = threading.Timer(timeout_s, os.killpg, (proc.pid, signal.SIGKILL))
        watchdog.start()
        try:
            for line in proc.stdout:
                log.write(line)
                text = line.decode("utf-8", errors="replace")
                if not any(marker in text for marker in _NOISE):
                    say(text, prefix)
            proc.wait()
        finally:
            watchdog.cancel()
    return proc.returncode != -9


def main(argv: List[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--disk", action="append", default=[], metavar="NAME:MiB")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    sizes = {}
    for spec in args.disk:
        name, _, size = spec.partition(":")
        sizes[name] = int(size)
    return boot(args.command, args.workdir, make_disks(args.workdir, sizes))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
