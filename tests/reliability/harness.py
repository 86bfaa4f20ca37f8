"""Trials, kubelet's retries, and the figures each scenario reports.

A trial is one thing tried (a crash at one step, one fault, one power cut, one storm round, one
fuzzed call). It fails when it raises (the driver answered wrongly, a failpoint was not reached,
a retry never succeeded) or when the invariant checker finds anything afterwards. Every finding
is counted in its figure, so a report with zeros means the checker looked and found nothing.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
import traceback
from typing import Callable, Dict, List, Optional

from tests.realkernel import node
from tests.realkernel.node import Kubelet, Pod, Reply

from . import invariants

FAILPOINTS_ENV = "AX_VOL_PLUGIN_FAILPOINTS"
MAX_ATTEMPTS = 5  # kubelet would go on forever; more than this is a failure to recover
RETRY_TARGET = 2


class TrialFailed(AssertionError):
    pass


def _node_state() -> str:
    """What a failed trial's report needs to tell LVM's and the kernel's side from the driver's:
    every LV of the volume group with its thin ids and attributes, and the kernel's last words."""
    lvs = node.run("lvs", "-a", "--noheadings", "-o", "lv_name,lv_attr,transaction_id,thin_id,lv_tags",
                   node.VOLUME_GROUP, check=False)
    kernel = node.run("dmesg", check=False).stdout.splitlines()[-15:]
    rows = " | ".join(" ".join(line.split()[:4]) for line in lvs.stdout.splitlines())
    return f"lvs: {rows or lvs.stderr.strip()[-300:]}; dmesg: {' / '.join(kernel)}"[-2500:]


@dataclasses.dataclass
class Figures:
    name: str
    title: str
    trials: int = 0
    failures: int = 0
    leaked: int = 0
    double_mounts: int = 0
    data_loss: int = 0
    max_retries: int = 0
    retries_total: int = 0
    recoveries: int = 0
    seconds: float = 0.0
    complete: bool = False  # False while running, or if the run was cut short
    tried: List[str] = dataclasses.field(default_factory=list)  # what the trials were, in short
    problems: List[str] = dataclasses.field(default_factory=list)
    notes: List[str] = dataclasses.field(default_factory=list)

    def missed(self) -> List[str]:
        missed = []
        if self.trials == 0:
            missed.append("no trials ran")
        if not self.complete:
            missed.append(f"interrupted after {self.trials} trials")
        for label, value in (("failures", self.failures), ("leaked slabs", self.leaked),
                             ("double mounts", self.double_mounts), ("data-loss events", self.data_loss)):
            if value:
                missed.append(f"{value} {label}")
        if self.max_retries > RETRY_TARGET:
            missed.append(f"{self.max_retries} retries needed (target <= {RETRY_TARGET})")
        return missed


class Scenario:
    """Holds a scenario's figures and the pods running in it with their markers."""

    def __init__(self, figures: Figures, kubelet: Kubelet, after_trial: Callable[[], None] = lambda: None) -> None:
        self.figures = figures
        self.after_trial = after_trial
        self.kubelet = kubelet
        self.running: Dict[Pod, str] = {}
        self._trial_bad = False

    # ---- trials

    def trial(self, label: str, body: Callable[[], None], extra_processes=()) -> bool:
        self.figures.trials += 1
        self.figures.tried.append(label)
        self._trial_bad = False
        ok = True
        try:
            body()
        except Exception as err:  # noqa: BLE001 - every way a trial can go wrong is a failure
            ok = False
            self.figures.failures += 1
            detail = "".join(traceback.format_exception_only(type(err), err)).strip()
            if isinstance(err, subprocess.CalledProcessError):
                detail += f" stderr: {(err.stderr or '').strip()[-400:]}"
            # The cause is at the end (a command's message follows its argv, which can be long).
            if len(detail) > 900:
                detail = f"{detail[:300]} [...] {detail[-600:]}"
            self.figures.problems.append(f"{label}: {detail}")
            self.figures.notes.append(f"{label}, the node when it failed: {_node_state()}")
        if not self.checkpoint(label, extra_processes) or self._trial_bad:
            ok = False
        if not ok:
            self._resync(extra_processes)
        print(f"  [{'ok' if ok else 'FAIL'}] {label}", flush=True)
        self.after_trial()
        return ok

    def _resync(self, extra_processes=()) -> None:
        """After a failed trial, what it broke has been counted (in this trial's checkpoint);
        the next trials start from the node as it is (stray processes killed, lost pods
        forgotten), so that one failure is not counted again in every trial after it."""
        invariants.kill_strays(extra_processes)
        for pod in list(self.running):
            if os.path.ismount(pod.dir):
                self.running[pod] = node.read_marker(pod)
            else:
                del self.running[pod]

    def checkpoint(self, label: str = "", extra_processes=()) -> bool:
        """Run the invariant checker now (also mid-trial); findings go into the figures."""
        found = invariants.check(self.running, extra_processes)
        if found:
            self._trial_bad = True
            self.figures.leaked += len(found.leaked)
            self.figures.double_mounts += len(found.double_mounts)
            self.figures.data_loss += len(found.data_loss)
            self.figures.problems.extend(f"{label or self.figures.tried[-1]}: {m}" for m in found.all())
        return not found

    def note_retries(self, retries: int) -> None:
        self.figures.retries_total += retries
        self.figures.recoveries += 1
        self.figures.max_retries = max(self.figures.max_retries, retries)

    # ---- kubelet's side

    def mount(self, pod: Pod, marker: Optional[str] = None, env=None) -> Reply:
        reply = self.kubelet.mount(pod, env=env)
        expect_one_object(reply)
        if not reply.ok:
            raise TrialFailed(f"mount of pod {pod.uid[:8]} failed: {reply.message}")
        self.running[pod] = node.read_marker(pod)
        if marker is not None:
            self.write(pod, marker)
        return reply

    def write(self, pod: Pod, marker: str) -> None:
        node.write_marker(pod, marker)
        self.running[pod] = marker

    def unmount(self, pod: Pod) -> Reply:
        reply = self.kubelet.unmount(pod)
        expect_one_object(reply)
        if not reply.ok:
            raise TrialFailed(f"unmount of pod {pod.uid[:8]} failed: {reply.message}")
        self.running.pop(pod, None)
        return reply

    def retry_mount(self, pod: Pod, marker: Optional[str] = None) -> int:
        """Kubelet's retries after a failed or killed mount; returns how many calls it took."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            reply = self.kubelet.mount(pod)
            expect_one_object(reply)
            if reply.ok:
                self.running[pod] = node.read_marker(pod)
                if marker is not None:
                    self.write(pod, marker)
                self.note_retries(attempt)
                return attempt
            time.sleep(0.3 * attempt)
        raise TrialFailed(f"mount of pod {pod.uid[:8]} still failing after {MAX_ATTEMPTS} retries: {reply.message}")

    def retry_unmount(self, pod: Pod) -> int:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            reply = self.kubelet.unmount(pod)
            expect_one_object(reply)
            if reply.ok:
                self.running.pop(pod, None)
                self.note_retries(attempt)
                return attempt
            time.sleep(0.3 * attempt)
        raise TrialFailed(f"unmount of pod {pod.uid[:8]} still failing after {MAX_ATTEMPTS} retries: {reply.message}")

    def killed_call(self, verb: str, pod: Pod, failpoint: str) -> None:
        """A call armed to SIGKILL itself at `failpoint`; fails the trial if it was not reached."""
        if verb == "mount":
            os.makedirs(pod.dir, mode=0o750, exist_ok=True)
            argv = ("mount", pod.dir, pod.options())
        else:
            argv = ("unmount", pod.dir)
        proc = self.kubelet.start(*argv, env={FAILPOINTS_ENV: failpoint})
        out, _ = proc.communicate(timeout=600)
        if proc.returncode != -signal.SIGKILL:
            raise TrialFailed(f"failpoint {failpoint} was not reached (exit {proc.returncode}): {out[:300]!r}")
        self.after_dead_call(verb, pod)

    def after_dead_call(self, verb: str, pod: Pod) -> None:
        """What kubelet does when a call died: for a mount, remove the dir if nothing is on it."""
        if verb == "mount" and os.path.isdir(pod.dir) and not os.path.ismount(pod.dir):
            os.rmdir(pod.dir)

    def kill_at(self, verb: str, pod: Pod, delay_s: float) -> bool:
        """Start a call and SIGKILL its process group after `delay_s`; True if it was killed."""
        if verb == "mount":
            os.makedirs(pod.dir, mode=0o750, exist_ok=True)
            proc = self.kubelet.start("mount", pod.dir, pod.options())
        else:
            proc = self.kubelet.start("unmount", pod.dir)
        time.sleep(delay_s)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, _ = proc.communicate(timeout=600)
        killed = proc.returncode == -signal.SIGKILL
        if not killed:
            reply = node.parse_reply(out.decode(errors="replace"), proc.returncode, 0.0)
            if not reply.ok:
                raise TrialFailed(f"{verb} finished before the kill, with {reply.message}")
            if verb == "mount":
                self.running[pod] = node.read_marker(pod)
            else:
                os.rmdir(pod.dir)
                self.running.pop(pod, None)
        self.after_dead_call(verb, pod)
        return killed


def expect_one_object(reply: Reply) -> None:
    """parse_reply already insists on one JSON object; a Failure must also read as a message."""
    if reply.status == "Failure":
        if not reply.message or "Traceback" in reply.message or "internal error" in reply.message:
            raise TrialFailed(f"a Failure without a clean message: {reply.raw[:400]}")
        if reply.rc != 1:
            raise TrialFailed(f"a Failure with exit code {reply.rc}")


def run_scenario(name: str, title: str, body: Callable[[Scenario], None],
                 progress: Callable[[Figures], None] = lambda figures: None) -> Figures:
    """`progress` gets the figures so far after every trial, so a run cut short still reports."""
    from tests.realkernel.conftest import wipe_pool

    figures = Figures(name=name, title=title)
    started = time.monotonic()
    print(f"=== {name}: {title} ===", flush=True)
    wipe_pool()

    def after_trial():
        figures.seconds = round(time.monotonic() - started, 1)
        progress(figures)

    scenario = Scenario(figures, Kubelet(), after_trial)
    try:
        body(scenario)
    except Exception as err:  # noqa: BLE001 - a scenario that breaks down is a failure, reported
        figures.failures += 1
        where = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        figures.problems.append(f"scenario stopped: {where[-1500:]}")
    seconds = sorted(r.seconds for r in scenario.kubelet.calls)
    if seconds:
        figures.notes.append(
            f"{len(seconds)} driver calls; median {seconds[len(seconds) // 2]:.1f} s, slowest {seconds[-1]:.1f} s"
        )
    internal = [line for line in node.log_lines() if line.get("reason") == "internal"]
    if internal:
        figures.failures += len(internal)
        figures.problems.extend(f"internal error in the driver log: {line.get('message', '')[:300]}" for line in internal)
    figures.seconds = round(time.monotonic() - started, 1)
    figures.complete = True
    print(f"=== {name}: {figures.trials} trials, {figures.failures} failures, {figures.seconds} s ===", flush=True)
    return figures
