"""A real Ray cluster on 127.0.0.1: a head and worker nodes, each a ``ray start --block`` process.

The tests and ``bench/ray_scaling.py`` run the Ray executor on it. Every node is its own
``ray start`` process (in a process group of its own), so a node is stopped by its PID and
nothing is left behind; the head takes no tasks (``--num-cpus 0``), so a cluster of N worker
nodes with one CPU each runs N episode batches at once. Footprint is kept small for a 2-core
machine: no dashboard, a small object store, no usage stats.

Example::

    with LocalRayCluster.start(workers=2, root=tmp_path) as cluster:
        run_sync(RunConfig(..., execution=ExecutionOptions(executor="ray",
                 ray_address=cluster.address)), db)
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["LocalRayCluster", "RayNode"]

_STARTED = "Ray runtime started."
_START_TIMEOUT_S = 90.0
_STOP_GRACE_S = 10.0
_OBJECT_STORE_BYTES = 80 * 1024 * 1024  # Ray's floor is ~75 MiB; episodes move kilobytes
_WORKER_PORTS = 16
_PORT_FLAGS = (
    "--node-manager-port",
    "--object-manager-port",
    "--metrics-export-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: every Ray component of a node gets its own, so nodes of
    this cluster (and of others on the same host) never race for a default one."""
    ports: list[int] = []
    while len(ports) < count:
        port = _free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _descends_from(pid: int, groups: set[int]) -> bool:
    """Whether ``pid`` or one of its ancestors is in one of the process ``groups``."""
    while pid > 1:
        try:
            if os.getpgid(pid) in groups:
                return True
            # /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after ")".
            pid = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ProcessLookupError, ValueError, IndexError):
            return False
    return False


def _ray_executable() -> str:
    # The `ray` script of the running interpreter, so a venv's Ray is the one started.
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.exists() else "ray"


@dataclass(slots=True)
class RayNode:
    """One ``ray start --block`` process and its log."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    startup_s: float = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Stop the node and every process it started (its process group), by its PID.

        SIGKILL by default: a test cluster holds nothing worth saving, and on SIGTERM a node
        drains for up to 30 s.
        """
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)
            try:
                self.process.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.process.wait()
        # Raylets and workers left in the group after `ray start` itself exited.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


class LocalRayCluster:
    """A head node and ``workers`` worker nodes on 127.0.0.1; stop() stops them all by PID.

    Args:
        root: a folder for Ray's session files and the nodes' logs (kept short: Ray's unix
            socket paths live under it).
    """

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.nodes: list[RayNode] = []

    @property
    def address(self) -> str:
        """What ``ray.init(address=...)`` and ``--ray-address`` take."""
        return f"127.0.0.1:{self.port}"

    @property
    def workers(self) -> list[RayNode]:
        return [node for node in self.nodes if node.name != "head"]

    @classmethod
    def start(cls, *, workers: int = 2, root: Path, cpus_per_worker: int = 1) -> LocalRayCluster:
        """Start the head, then each worker node in turn: nodes on one host share a session
        folder, and two starting at once race for its socket names.

        Raises:
            RuntimeError: a node did not start within 90 s; the message holds its log.
        """
        root.mkdir(parents=True, exist_ok=True)
        cluster = cls(root, _free_port())
        try:
            cluster._wait(cluster._spawn("head", ["--head", "--port", str(cluster.port), "--num-cpus", "0"]))
            for _ in range(workers):
                cluster.add_worker(cpus=cpus_per_worker)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def add_worker(self, *, cpus: int = 1) -> RayNode:
        """Start one more worker node with ``cpus`` CPUs (each runs one episode batch)."""
        return self._wait(self._spawn_worker(cpus))

    def _spawn_worker(self, cpus: int) -> RayNode:
        name = f"worker{len(self.workers) + 1}"
        return self._spawn(name, ["--address", self.address, "--num-cpus", str(cpus)])

    def _spawn(self, name: str, role: list[str]) -> RayNode:
        log = self.root / f"{name}.log"
        ports = _free_ports(len(_PORT_FLAGS) + _WORKER_PORTS)
        named = dict(zip(_PORT_FLAGS, ports, strict=False))
        command = [
            _ray_executable(),
            "start",
            *role,
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            "--object-store-memory",
            str(_OBJECT_STORE_BYTES),
            "--disable-usage-stats",
            *[part for flag, port in named.items() for part in (flag, str(port))],
            # Each worker process listens on one of these (a handful is plenty here).
            "--worker-port-list",
            ",".join(str(port) for port in ports[len(_PORT_FLAGS) :]),
        ]
        if name == "head":
            command += ["--include-dashboard=false", "--temp-dir", str(self.root / "ray")]
        env = {
            **os.environ,
            "RAY_USAGE_STATS_ENABLED": "0",
            # A token file left by a local Ray elsewhere on this machine (~/.ray/auth_token)
            # would turn token authentication on for the head but not for the nodes joining it.
            "RAY_AUTH_MODE": "disabled",
            # Keep a job's idle workers (Ray's system config, read from RAY_* variables): a
            # process driving several runs reuses warm ones instead of paying a fresh worker's
            # imports each time, even while another job's workers share the node.
            "RAY_num_workers_soft_limit": "8",
            "RAY_idle_worker_killing_time_threshold_ms": "600000",
        }
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        node = RayNode(name, process, log)
        self.nodes.append(node)
        return node

    def _wait(self, node: RayNode) -> RayNode:
        name, process, log = node.name, node.process, node.log
        started = time.monotonic()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while _STARTED not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
                raise RuntimeError(f"ray node {name} did not start (exit {process.poll()}):\n{tail}")
            time.sleep(0.1)
        node.startup_s = time.monotonic() - started
        return node

    def task_processes(self, function: str) -> list[int]:
        """PIDs of this cluster's worker processes running ``function`` now.

        Ray titles a worker process ``ray::NAME`` while it runs a task of NAME. Workers start
        sessions of their own, so a process counts as this cluster's when one of its
        ancestors is in a node's process group.
        """
        groups = {node.pid for node in self.nodes}
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if title.startswith(f"ray::{function}") and _descends_from(int(entry.name), groups):
                found.append(int(entry.name))
        return sorted(found)

    def stop(self) -> None:
        """Stop the worker nodes, then the head, each by its PID; safe to call twice."""
        for node in reversed(self.nodes):
            node.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
