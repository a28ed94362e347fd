"""A multi-node Ray cluster on this machine, for tests: `ray start --head` plus `ray start --address`
for each further node, every node with its own CPUs and a custom resource naming it.

Every port a node would take by default (the GCS, the client server, the dashboard and its agent,
metrics, the runtime-env agent) is a free one picked here, so the cluster runs beside other Ray
sessions on the machine (other tests' `ray.init()` clusters) without taking their ports. Token
authentication is on, with a token of this cluster's own (Ray 2.5x enables it whenever a token
exists in ~/.ray, and a node started without it cannot join). `stop` ends only this cluster's
processes: each node's `ray start` runs in a process group of its own, which its daemons keep, and
every process whose environment carries this cluster's marker (the workers, which leave that
group) is ended by pid. `ray stop` is never used: it ends every Ray process on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

MARKER = "MVLP_TEST_RAY_CLUSTER"
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cli() -> str:
    return str(Path(sys.executable).with_name("ray"))


class RayCluster:
    """`nodes` maps each node's custom resource name to its CPU count; the first is the head."""

    def __init__(self, nodes: dict[str, int], start_seconds: float = 300, dashboard: bool = False) -> None:
        if not nodes:
            raise ValueError("a cluster needs a head node")
        self.nodes = nodes
        self.start_seconds = start_seconds
        # --temp-dir ends in socket paths (session_.../sockets/plasma_store), which must stay under
        # the 107-byte AF_UNIX limit: a short folder of our own under /tmp
        self.temp_dir = Path(tempfile.mkdtemp(prefix="mvlp-rc-", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # the dashboard serves the Jobs API: on only where a test submits jobs (it costs seconds)
        self.dashboard = dashboard
        self.dashboard_port = free_port()
        self.jobs_address = f"http://127.0.0.1:{self.dashboard_port}"
        self.token = secrets.token_hex(32)
        self._groups: list[int] = []  # the process group of each node's `ray start`

    @property
    def env(self) -> dict[str, str]:
        """What a driver needs in its environment to join this cluster (`ray.init(address=...)`)."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}

    @contextlib.contextmanager
    def driver(self) -> Iterator[None]:
        """This process as a driver of the cluster: its token in the environment, and Ray's
        cached token and config dropped before and after (an earlier `ray.init()` in this
        process cached the machine's own token)."""
        saved = {k: os.environ.get(k) for k in (*self.env, "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")}
        os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
        os.environ.pop("RAY_ADDRESS", None)
        os.environ.update(self.env)
        _reset_ray_auth()
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            _reset_ray_auth()

    def _node_env(self) -> dict[str, str]:
        paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        return {
            **env,
            **self.env,
            MARKER: str(self.temp_dir),
            "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)),
            "RAY_USAGE_STATS_ENABLED": "0",
        }

    def _start_node(self, index: int, resource: str, cpus: int) -> None:
        """`ray start` for one node; it returns once the node runs (the head) or has joined. The
        node's processes stay in the process group it was started in (its pid), for `stop`."""
        args = [
            _ray_cli(),
            "start",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={cpus}",
            "--num-gpus=0",
            f"--resources={json.dumps({resource: 1})}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            "--disable-usage-stats",
        ]
        if index == 0:
            args += [
                "--head",
                f"--port={self.port}",
                f"--temp-dir={self.temp_dir}",
                f"--ray-client-server-port={free_port()}",
                f"--include-dashboard={str(self.dashboard).lower()}",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
            ]
        else:
            args.append(f"--address={self.address}")
        log = self.temp_dir / f"node-{index}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, env=self._node_env(), start_new_session=True
            )
            self._groups.append(proc.pid)
            try:
                code = proc.wait(timeout=self.start_seconds)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        if code != 0:
            tail = log.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"ray start of test node {index} ({resource}) failed ({code}):\n{tail}")

    def start(self) -> RayCluster:
        """Start every node, one after the other; stopped again if one fails."""
        try:
            for index, (resource, cpus) in enumerate(self.nodes.items()):
                self._start_node(index, resource, cpus)
        except BaseException:
            self.stop()
            raise
        return self

    def _marked_pids(self) -> list[int]:
        """Processes of this user whose environment carries this cluster's marker."""
        needle = f"{MARKER}={self.temp_dir}".encode()
        found = []
        for entry in Path("/proc").iterdir() if Path("/proc").exists() else []:
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def stop(self) -> None:
        """End this cluster's processes, and nothing else: each node's process group (its raylet,
        GCS, agents), then every process carrying the marker (workers leave their node's group)."""
        for group in self._groups:
            with_suppressed(os.killpg, group, signal.SIGKILL)
        for pid in self._marked_pids():
            with_suppressed(os.kill, pid, signal.SIGKILL)
        self._groups.clear()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _reset_ray_auth() -> None:
    """Make Ray read its auth mode and token from the environment again (what Ray's own tests do
    between clusters: ray._private.authentication_test_utils.reset_auth_token_state)."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def with_suppressed(fn, *args) -> None:
    try:
        fn(*args)
    except (ProcessLookupError, PermissionError):
        pass


@contextlib.contextmanager
def running(nodes: dict[str, int], dashboard: bool = False) -> Iterator[RayCluster]:
    """A started cluster, stopped (its processes only) on leaving the block."""
    cluster = RayCluster(nodes, dashboard=dashboard).start()
    try:
        yield cluster
    finally:
        cluster.stop()
