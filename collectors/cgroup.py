"""Who runs on a GPU: process id -> cgroup path -> Kubernetes pod UID or Slurm job id.

NVML lists the processes of a GPU (``nvmlDeviceGetComputeRunningProcesses``) as host process
ids. The cgroup of a process names the workload that owns it:

* Kubernetes (kubelet, any container runtime) puts every container under a pod cgroup that
  carries the pod UID. With the ``cgroupfs`` driver the path is
  ``/kubepods/<qos>/pod<uid>/<container>`` (``<qos>`` is ``burstable`` or ``besteffort``,
  absent for Guaranteed pods); with the ``systemd`` driver it is
  ``/kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid>.slice/<runtime>-<id>.scope``,
  where the UID's dashes are written as underscores. Static (mirror) pods have a 32-digit hex
  UID without dashes.
* Slurm's cgroup plugin puts a job's tasks under ``/slurm/uid_<uid>/job_<id>/step_<s>/...``
  (cgroup v1; ``/slurm_<nodename>/...`` when several slurmd run on one host) or
  ``/system.slice/slurmstepd.scope/job_<id>/step_<s>/...`` (cgroup v2).

``/proc/<pid>/cgroup`` has one ``hierarchy-id:controllers:path`` line per hierarchy (cgroup v1)
or the single line ``0::<path>`` (cgroup v2); every line is searched. The node knows the pod
UID but not the pod's name or namespace (that needs the API server or the kubelet), so the
``pod`` field carries the UID and ``namespace`` stays null.

Reading needs the host's ``/proc``: run the agent in the host PID namespace (Kubernetes
``hostPID: true``) or mount the host's ``/proc`` and pass its path as ``proc_root``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_UUID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
# "pod<uid>" as a whole path element (cgroupfs) or as the tail of a systemd slice name.
_POD = re.compile(r"(?:^|/|-)pod(" + _UUID + r"|[0-9a-f]{32})(?:\.slice)?(?:/|$)")
_SLURM = (
    re.compile(r"/slurm[^/]*/uid_\d+/job_(\d+)(?:/|$)"),        # cgroup v1
    re.compile(r"/slurmstepd\.scope/job_(\d+)(?:/|$)"),          # cgroup v2
)


@dataclass(frozen=True)
class Attribution:
    """What a process's cgroup says about its owner (None where it says nothing)."""

    pod_uid: str | None = None
    job_id: str | None = None

    @property
    def known(self) -> bool:
        return self.pod_uid is not None or self.job_id is not None


NOBODY = Attribution()


def cgroup_paths(text: str) -> list[str]:
    """The paths of a ``/proc/<pid>/cgroup`` file (v1 and v2 lines alike)."""
    paths = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[2]:
            paths.append(parts[2].strip())
    return paths


def parse_cgroup(text: str) -> Attribution:
    """The pod UID and Slurm job id named by a ``/proc/<pid>/cgroup`` file's contents."""
    pod = job = None
    for path in cgroup_paths(text):
        if pod is None and "kubepods" in path:
            m = _POD.search(path)
            if m:
                pod = m.group(1).replace("_", "-")
        if job is None:
            for rx in _SLURM:
                m = rx.search(path)
                if m:
                    job = m.group(1)
                    break
    return Attribution(pod, job)


def attribute_pid(pid: int, proc_root: str | Path = "/proc") -> Attribution | None:
    """The attribution of a process, or None when its cgroup file cannot be read (the process
    has exited, or lives in a PID namespace this agent cannot see)."""
    try:
        text = (Path(proc_root) / str(int(pid)) / "cgroup").read_text()
    except (OSError, ValueError):
        return None
    return parse_cgroup(text)
