"""A real three-node Docker Swarm on this one machine, for the swarm tests and bench/.

runnerd's swarm mode has to be tried against Swarm itself: the scheduler that places
tasks, a manager that marks a node Down when its engine dies, tasks that end on a
node that is gone. A `SwarmCluster` builds one out of three extra `dockerd`
processes beside the machine's own engine, the way moby's integration harness
(testutil/daemon) does it: each with its own data root, exec root, pidfile, socket,
log file and containerd namespace, listening for Swarm on a loopback address of its
own (127.0.0.11, .12, .13 by default; all of 127/8 is loopback on Linux, so no
interface has to be set up), the first the manager and the other two workers. The
test image is copied in from the main engine, so no node ever pulls.

What the nodes are given and why:

- `--bridge=none`, no iptables, no masquerade: a task's container gets no network
  address, as runnerd's own runs get none, and nothing here edits the host's
  firewall.
- The ingress network Swarm makes at `swarm init` is removed at once, before the
  workers join: its routing mesh is only for published ports, which jobs have none
  of, and every node would build a VXLAN device and a sandbox for it.
- Each node's `docker_gwbridge` (the local bridge Swarm gives a sandbox on an
  overlay network, made on first use with that same name on every engine of the
  host) is made beforehand with a bridge of this cluster's own name and no IPv4
  address, so no two engines of the machine ever share or delete one interface.
  The manager's short-lived ingress sandbox is its only user.
- A VXLAN port of this cluster's own (`data_path_port`): the kernel refuses a second
  VXLAN device with the same network id and port, and every swarm numbers its
  first overlay network alike.
- DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1, as moby's harness sets it: a node does not
  try the registry before it starts a task from an image it already has.

Everything a cluster makes lives under its state directory (/run/runnerd-swarm by
default; one node per `nodeN/` directory, the dockerd log in `nodeN/dockerd.log`),
so `stop()` — and `start()`, before it begins — can find and remove all of it from
the directory alone, even what a killed run left: engines found by their pidfiles,
their containerd, shims and task processes by command line and cgroup, the
mounts under the directory, the bridges by name. The machine's own engine is never
touched. Every wait is a condition polled against a deadline, and a failure says
what it waited for with the tail of the dockerd logs concerned.

Run as a module it brings a cluster up or down for bench/ (needs root and the test
image in the main engine):

    python -m tests.swarm_cluster up [--state-dir D] [--addresses A1,A2,A3]
    python -m tests.swarm_cluster down [--state-dir D]

`up` prints the manager's DOCKER_HOST. Nothing here needs pytest.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from tests.harness import (
    SWARM_ADDRESSES,
    SWARM_STATE_DIR,
    TEST_IMAGE,
    UnixHTTPConnection,
    engine_for,
)

API = "/v1.41"  # docker.io 20.10's API; every request names it
DEFAULT_STATE_DIR = SWARM_STATE_DIR
DEFAULT_ADDRESSES = SWARM_ADDRESSES
# Every node can run runnerd's tasks; the third is the one a placement test can
# aim at alone.
DEFAULT_LABELS: tuple[Mapping[str, str], ...] = (
    {"runnerd": "yes"},
    {"runnerd": "yes"},
    {"runnerd": "yes", "size": "large"},
)
SWARM_PORT = 2377
# The VXLAN port is this plus the last byte of the manager's address: two clusters
# on one machine have different addresses, so they get different ports, and none
# gets 4789, the port of a swarm made by hand with the defaults.
DATA_PATH_PORT_BASE = 4800
GATEWAY_NETWORK = "docker_gwbridge"
START_DEADLINE = 60.0  # a dockerd answers /_ping (first start: ~0.3 s)
READY_DEADLINE = 60.0  # the manager sees a node Ready (first start: ~1 s)
STOP_DEADLINE = 30.0  # a dockerd exits on SIGTERM before it is killed (~2.5 s)
# A unix socket's path must fit sockaddr_un.sun_path (108 bytes with its NUL).
MAX_SOCKET_PATH = 107
# What a node runs, by program name; a process of the cluster is one of these whose
# command line names the state directory, or one in a cgroup of a node's container.
ENGINE_PROGRAMS = frozenset(
    {"dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2", "runc"}
)
MNT_DETACH = 2

T = TypeVar("T")


class SwarmFailed(AssertionError):
    """The cluster did not come up, change or go down as it should (an
    AssertionError, so a test reports it as a failure, not an error)."""


# -- names and paths (pure: tests/unit/test_unit_swarm_cluster.py) ------------------


def cluster_tag(state_dir: Path) -> str:
    """A short name for the cluster of `state_dir`, unique to that directory: the
    prefix of its nodes' containerd namespaces and bridges. Short, because a
    bridge's name is at most 15 bytes."""
    return "rsw" + hashlib.sha256(str(state_dir.absolute()).encode()).hexdigest()[:6]


def data_path_port(manager_address: str) -> int:
    """The VXLAN port of a cluster whose manager listens on `manager_address`."""
    return DATA_PATH_PORT_BASE + int(manager_address.rsplit(".", 1)[1])


def _mounts(mountinfo: str) -> list[tuple[str, str, set[str]]]:
    """(mount point, file system type, super options) of each line of
    /proc/self/mountinfo's text. The kernel writes a space, tab, newline or
    backslash in a path as an octal escape (\\040)."""
    mounts = []
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) < 7 or "-" not in fields[6:]:
            continue
        tail = fields[fields.index("-", 6) + 1 :]
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        options = set(tail[2].split(",")) if len(tail) > 2 else set()
        mounts.append((point, tail[0], options))
    return mounts


def mount_points(mountinfo: str, under: Path) -> list[str]:
    """The mount points in `mountinfo` (/proc/self/mountinfo's text) at or below
    `under`, deepest first (the order to unmount them in)."""
    prefix = str(under).rstrip("/")
    found = {p for p, _, _ in _mounts(mountinfo) if p == prefix or p.startswith(prefix + "/")}
    return sorted(found, key=lambda p: (-p.count("/"), p))


def cgroup_dirs(proc_cgroup: str, mountinfo: str) -> list[Path]:
    """The cgroup directories /proc/PID/cgroup's text `proc_cgroup` names, each
    under the mount of its hierarchy in `mountinfo` (cgroup v1 hierarchies by their
    controllers, v2 at its cgroup2 mount, /sys/fs/cgroup or /sys/fs/cgroup/unified
    beside v1). A hierarchy's root is left out: it is never removed."""
    v2 = [p for p, kind, _ in _mounts(mountinfo) if kind == "cgroup2"]
    v1 = [(p, options) for p, kind, options in _mounts(mountinfo) if kind == "cgroup"]
    dirs = []
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3 or parts[2] in ("", "/"):
            continue
        if parts[1] == "":
            bases = v2
        else:
            wanted = set(parts[1].split(","))
            bases = [p for p, options in v1 if wanted <= options]
        dirs += [Path(base) / parts[2].lstrip("/") for base in bases[:1]]
    return dirs


def shim_socket(address: str, namespace: str, shim_id: str) -> Path:
    """Where containerd 1.6 puts the socket of the shim started with these
    `-address`, `-namespace` and `-id` (containerd's runtime/v2/shim.SocketAddress):
    a file that a shim killed by a signal leaves behind."""
    digest = hashlib.sha256(os.path.join(address, namespace, shim_id).encode()).hexdigest()
    return Path("/run/containerd/s") / digest


# -- talking to engines -------------------------------------------------------------


def engine_request(
    host: str,
    method: str,
    path: str,
    params: Mapping[str, str] | None = None,
    body: bytes | None = None,
    content_type: str = "application/json",
    timeout: float = 60,
) -> tuple[int, bytes]:
    """One request to the engine API at `host` (a unix:// address), body and all;
    returns the status and the raw response body. `path` is taken as given (no
    version prefix is added)."""
    if not host.startswith("unix://"):
        raise ValueError(f"the swarm nodes listen on unix sockets, not {host}")
    conn = UnixHTTPConnection(host[len("unix://") :], timeout)
    try:
        headers = {"Content-Type": content_type} if body is not None else {}
        conn.request(method, path + ("?" + urlencode(params) if params else ""), body, headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def engine_call(
    host: str,
    method: str,
    path: str,
    params: Mapping[str, str] | None = None,
    body: Any = None,
    timeout: float = 60,
) -> tuple[int, Any]:
    """`engine_request` on the /v1.41 API with `body` sent as JSON (when not None);
    returns the status and the parsed JSON body (None when empty, the text when not
    JSON)."""
    data = None if body is None else json.dumps(body).encode()
    status, raw = engine_request(host, method, API + path, params, data, timeout=timeout)
    if not raw:
        return status, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def _answers(host: str) -> bool:
    """The engine at `host` answers /_ping."""
    try:
        status, _ = engine_request(host, "GET", "/_ping", timeout=2)
    except OSError:
        return False
    return status == 200


def _wait(condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `condition` until it returns something truthy, and return that; raise
    SwarmFailed after `timeout` s (`what` says what was waited for). A condition
    may raise SwarmFailed itself when waiting on is pointless."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise SwarmFailed(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _each(work: Callable[[Node], T], nodes: Iterable[Node]) -> list[T]:
    """`work` on every node at once (the nodes are separate engines); the results in
    the nodes' order, or the first failure raised."""
    nodes = list(nodes)
    with ThreadPoolExecutor(max_workers=max(len(nodes), 1)) as pool:
        return list(pool.map(work, nodes))


# -- processes ----------------------------------------------------------------------


def _alive(pid: int) -> bool:
    """A process with this pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")[:-1]


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


# -- the cluster --------------------------------------------------------------------


@dataclass
class Node:
    """One dockerd of the cluster: node `index` (1 is the manager) listening for
    Swarm on `address`, with everything of its own under `dir`."""

    index: int
    address: str
    dir: Path
    namespace: str  # its containerd's namespace (the plugins' one adds "-plugins")
    bridge: str  # the bridge its docker_gwbridge network makes
    labels: dict[str, str]
    node_id: str = ""  # its swarm node id, once it is in the swarm
    # DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 for its dockerd (from its next start):
    # it never pulls a task's image. False: it pulls as a node of a real swarm does.
    prefer_offline: bool = True
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"runnerd-node-{self.index}"

    @property
    def socket_path(self) -> Path:
        return self.dir / "sock"

    @property
    def host(self) -> str:
        """Its DOCKER_HOST."""
        return f"unix://{self.socket_path}"

    @property
    def pidfile(self) -> Path:
        return self.dir / "pid"

    @property
    def log_path(self) -> Path:
        return self.dir / "dockerd.log"

    @property
    def swarm_address(self) -> str:
        return f"{self.address}:{SWARM_PORT}"

    @property
    def pid(self) -> int | None:
        """The pid of its dockerd while that runs (read from the pidfile when this
        process did not start it, as `python -m tests.swarm_cluster down`)."""
        if self.process is not None:
            return self.process.pid if self.process.poll() is None else None
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        # A stale pidfile may name a pid reused since: it must be this node's dockerd.
        return pid if _alive(pid) and f"--host={self.host}" in _cmdline(pid) else None

    def command(self) -> list[str]:
        d = self.dir
        return [
            "dockerd",
            f"--config-file={d / 'daemon.json'}",  # not /etc/docker/daemon.json
            f"--data-root={d / 'data'}",
            f"--exec-root={d / 'exec'}",
            f"--pidfile={self.pidfile}",
            f"--host={self.host}",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            f"--containerd-namespace={self.namespace}",
            f"--containerd-plugins-namespace={self.namespace}-plugins",
        ]

    def api(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        timeout: float = 60,
    ) -> tuple[int, Any]:
        """One request to this node's engine (`engine_call`)."""
        return engine_call(self.host, method, path, params, body, timeout)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class SwarmCluster:
    """Three dockerds on this machine in one swarm: node 1 the manager, 2 and 3
    workers, each named runnerd-node-N and labelled with `labels[N-1]`, each with
    `image` loaded. `start()` brings it up (clearing what an earlier run of the
    same `state_dir` left), `stop()` takes all of it away again."""

    def __init__(
        self,
        state_dir: Path = DEFAULT_STATE_DIR,
        addresses: Sequence[str] = DEFAULT_ADDRESSES,
        image: str = TEST_IMAGE,
        labels: Sequence[Mapping[str, str]] = DEFAULT_LABELS,
        *,
        source_host: str | None = None,
        heartbeat_period: float | None = None,
    ) -> None:
        """`source_host`: the engine `image` is copied from (default: the suite's
        Docker). `heartbeat_period`: seconds between a node's heartbeats to the
        manager (Swarm's default, 5, when None); a node is marked Down some
        multiple of it after its last one."""
        if len(addresses) != 3 or len(labels) != 3:
            raise ValueError("a cluster has three nodes: give three addresses and labels")
        self.state_dir = state_dir.absolute()
        self.image = image
        self.source_host = source_host or engine_for("docker").host
        self.heartbeat_period = heartbeat_period
        self.data_path_port = data_path_port(addresses[0])
        tag = cluster_tag(self.state_dir)
        self.nodes = [
            Node(
                index=i,
                address=address,
                dir=self.state_dir / f"node{i}",
                namespace=f"{tag}-{i}",
                bridge=f"{tag}-{i}",
                labels=dict(node_labels),
            )
            for i, (address, node_labels) in enumerate(zip(addresses, labels, strict=True), 1)
        ]
        # The longest socket path a node has: containerd's, under the exec root.
        longest = self.nodes[0].dir / "exec" / "containerd" / "containerd.sock"
        if len(str(longest)) > MAX_SOCKET_PATH:
            raise ValueError(f"state dir {state_dir} is too long for unix socket paths")

    # -- what tests use ---------------------------------------------------------

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    @property
    def manager_host(self) -> str:
        return self.manager.host

    def node(self, index: int) -> Node:
        """Node `index` (1, 2 or 3)."""
        if not 1 <= index <= len(self.nodes):
            raise ValueError(f"no node {index}: the nodes are 1 to {len(self.nodes)}")
        return self.nodes[index - 1]

    def api(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        timeout: float = 60,
    ) -> tuple[int, Any]:
        """One request to the manager's engine (`engine_call`)."""
        return self.manager.api(method, path, params, body, timeout)

    def create_service(self, spec: Mapping[str, Any]) -> str:
        """Create a service from `spec` (a ServiceSpec) through the manager; its id."""
        status, body = self.api("POST", "/services/create", body=spec)
        if status != 201:
            raise self._failed(
                f"the manager did not create service {spec.get('Name')}: {status} {body}",
                self.manager,
            )
        return str(body["ID"])

    def services(self) -> list[dict[str, Any]]:
        status, body = self.api("GET", "/services")
        if status != 200:
            raise self._failed(f"the manager did not list services: {status} {body}")
        return list(body)

    def remove_services(self) -> None:
        for service in self.services():
            status, body = self.api("DELETE", f"/services/{quote(service['ID'])}")
            if status not in (200, 404):
                raise self._failed(
                    f"the manager did not remove service {service['Spec']['Name']}: {status} {body}"
                )

    def tasks(self, service: str | None = None) -> list[dict[str, Any]]:
        """The manager's tasks (of `service`, a name or id, when given)."""
        params = {"filters": json.dumps({"service": [service]})} if service else None
        status, body = self.api("GET", "/tasks", params)
        if status != 200:
            raise self._failed(f"the manager did not list tasks: {status} {body}")
        return list(body)

    def node_of_task(self, task: Mapping[str, Any]) -> Node | None:
        """The node `task` is placed on (None while it is not placed)."""
        return next((n for n in self.nodes if n.node_id and n.node_id == task.get("NodeID")), None)

    def swarm_nodes(self) -> dict[str, dict[str, Any]]:
        """The manager's view of the nodes, by swarm node id."""
        status, body = self.api("GET", "/nodes", timeout=10)
        if status != 200:
            raise self._failed(f"the manager did not list nodes: {status} {body}")
        return {str(n["ID"]): n for n in body}

    def node_state(self, index: int) -> str:
        """Node `index`'s state as the manager sees it: "ready", "down", "unknown"…"""
        node = self.node(index)
        return str(self.swarm_nodes()[node.node_id]["Status"]["State"])

    def wait_node_state(self, index: int, state: str, timeout: float = READY_DEADLINE) -> float:
        """Wait until the manager sees node `index` in `state` ("ready", "down");
        the seconds it took."""
        t0 = time.monotonic()
        node = self.node(index)
        try:
            _wait(
                lambda: self._manager_sees(node, state),
                timeout,
                f"the manager to see {node.name} {state}",
            )
        except SwarmFailed as e:
            raise self._failed(str(e), self.manager, node) from None
        return time.monotonic() - t0

    # -- bringing it up ---------------------------------------------------------

    def start(self) -> None:
        """Bring the cluster up: the three dockerds, the swarm, the nodes' names and
        labels, the image on each; returns once the manager sees all three Ready
        and Active. Whatever an earlier run of this state dir left is cleared first;
        a start that fails takes down what it made (its failure carries the logs'
        tails), as no caller would stop a cluster it never got."""
        self._clear()
        try:
            self._bring_up()
        except BaseException:
            try:
                self.stop()
            except Exception:
                pass  # the first failure is the one to report
            raise

    def _bring_up(self) -> None:
        for node in self.nodes:
            node.dir.mkdir(parents=True)
            (node.dir / "daemon.json").write_text("{}\n")
        image_tar = self._export_image()
        _each(self._start_dockerd, self.nodes)
        _each(lambda node: self._load_image(node, image_tar), self.nodes)
        _each(self._make_gateway_bridge, self.nodes)
        self._init_swarm()
        status, swarm = self.api("GET", "/swarm")
        if status != 200:
            raise self._failed(f"the manager did not describe its swarm: {status} {swarm}")
        token = swarm["JoinTokens"]["Worker"]
        _each(lambda node: self._join(node, token), self.nodes[1:])
        for node in self.nodes:
            self._name_and_label(node)
        for node in self.nodes:
            self.wait_node_state(node.index, "ready")

    def attach(self) -> None:
        """Take up the cluster that runs from this state dir (one `python -m
        tests.swarm_cluster up` started, say): learn the nodes' swarm ids from the
        manager, by their names, whatever state they are in."""
        try:
            by_name = {n["Spec"].get("Name"): n["ID"] for n in self.swarm_nodes().values()}
        except OSError as e:
            raise self._failed(f"the manager does not answer at {self.manager_host}: {e}") from e
        for node in self.nodes:
            if node.name not in by_name:
                raise self._failed(f"the manager knows no {node.name}: {sorted(by_name)}")
            node.node_id = str(by_name[node.name])

    def _start_dockerd(self, node: Node) -> None:
        """Start node's dockerd (on the state it has) and wait until it answers."""
        # A killed dockerd leaves its pidfile, and its containerd one; a new dockerd
        # refuses to start while the pid in the first exists, and takes up the
        # containerd the second names while that pid exists (failing when it does
        # not answer). A zombie exists too: a process its parent, or pid 1 for an
        # orphan, has not reaped yet (on this machine pid 1 is a sandbox's agent
        # that reaps late or never). So a pidfile naming no live process of the
        # node's goes.
        for pidfile in (node.pidfile, node.dir / "exec" / "containerd" / "containerd.pid"):
            _remove_stale_pidfile(pidfile, str(node.dir) + "/")
        with open(node.log_path, "ab") as log:
            log.write(
                f"--- swarm_cluster: dockerd of {node.name} starts at "
                f"{time.strftime('%Y-%m-%dT%H:%M:%S')} ---\n".encode()
            )
            log.flush()
            node.process = subprocess.Popen(
                node.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={
                    **os.environ,
                    "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE": "1" if node.prefer_offline else "0",
                },
                # Its own session: a ^C meant for the test run does not reach it, and
                # it outlives `python -m tests.swarm_cluster up`.
                start_new_session=True,
            )
        process = node.process

        def answers() -> bool:
            if process.poll() is not None:
                raise SwarmFailed(
                    f"the dockerd of {node.name} exited with {process.returncode} while starting"
                )
            return _answers(node.host)

        try:
            _wait(
                answers,
                START_DEADLINE,
                f"the dockerd of {node.name} to answer /_ping",
                interval=0.05,
            )
        except SwarmFailed as e:
            raise self._failed(str(e), node) from None

    def _export_image(self) -> bytes:
        status, tar = engine_request(
            self.source_host, "GET", f"{API}/images/{quote(self.image, safe='')}/get", timeout=300
        )
        if status != 200:
            raise SwarmFailed(
                f"{self.source_host} did not export {self.image}: {status} "
                f"{tar[:500].decode(errors='replace')}"
            )
        return tar

    def _load_image(self, node: Node, tar: bytes) -> None:
        status, out = engine_request(
            node.host,
            "POST",
            f"{API}/images/load",
            {"quiet": "1"},
            tar,
            "application/x-tar",
            timeout=300,
        )
        text = out.decode(errors="replace")
        if status != 200 or '"error' in text:
            raise self._failed(f"{node.name} did not load {self.image}: {status} {text}", node)
        status, _ = node.api("GET", f"/images/{quote(self.image, safe='')}/json")
        if status != 200:
            raise self._failed(f"{node.name} has no {self.image} after loading it", node)

    def _make_gateway_bridge(self, node: Node) -> None:
        """Node's docker_gwbridge, on a bridge of its own name with no IPv4 address
        (why: the module's docstring)."""
        status, body = node.api(
            "POST",
            "/networks/create",
            body={
                "Name": GATEWAY_NETWORK,
                "Driver": "bridge",
                "CheckDuplicate": True,
                "Options": {
                    "com.docker.network.bridge.name": node.bridge,
                    "com.docker.network.bridge.inhibit_ipv4": "true",
                    "com.docker.network.bridge.enable_icc": "false",
                    "com.docker.network.bridge.enable_ip_masquerade": "false",
                },
            },
        )
        if status != 201:
            raise self._failed(
                f"{node.name} did not make its {GATEWAY_NETWORK}: {status} {body}", node
            )

    def _init_swarm(self) -> None:
        manager = self.manager
        spec: dict[str, Any] = {}
        if self.heartbeat_period is not None:
            spec["Dispatcher"] = {"HeartbeatPeriod": int(self.heartbeat_period * 1e9)}
        status, body = manager.api(
            "POST",
            "/swarm/init",
            body={
                "ListenAddr": manager.swarm_address,
                "AdvertiseAddr": manager.swarm_address,
                "DataPathPort": self.data_path_port,
                "Spec": spec,
            },
        )
        if status != 200:
            raise self._failed(f"swarm init on {manager.name} failed: {status} {body}", manager)
        manager.node_id = str(body)

        # Swarm makes its ingress network just after init answers; remove it once it
        # is there (a removal before would be undone), before any worker joins.
        def ingress_made() -> bool:
            status, _ = manager.api("GET", "/networks/ingress")
            return status == 200

        _wait(ingress_made, READY_DEADLINE, "Swarm to make its ingress network")
        status, body = manager.api("DELETE", "/networks/ingress")
        if status not in (200, 204):
            raise self._failed(
                f"the manager did not remove the ingress network: {status} {body}", manager
            )

    def _join(self, node: Node, token: str) -> None:
        status, body = node.api(
            "POST",
            "/swarm/join",
            body={
                "ListenAddr": node.swarm_address,
                "AdvertiseAddr": node.swarm_address,
                "RemoteAddrs": [self.manager.swarm_address],
                "JoinToken": token,
            },
        )
        if status != 200:
            raise self._failed(
                f"{node.name} did not join the swarm: {status} {body}", node, self.manager
            )
        status, info = node.api("GET", "/info")
        node_id = info.get("Swarm", {}).get("NodeID") if status == 200 else None
        if not node_id:
            raise self._failed(f"{node.name} has no swarm node id after joining: {info}", node)
        node.node_id = str(node_id)

    def _name_and_label(self, node: Node) -> None:
        """Give node its name and labels through the manager (every node says the
        machine's hostname of itself), keeping the rest of its spec."""
        status, current = self.api("GET", f"/nodes/{node.node_id}")
        if status != 200:
            raise self._failed(f"the manager does not know {node.name}: {status} {current}")
        spec = dict(current["Spec"])
        spec["Name"] = node.name
        spec["Labels"] = {**(spec.get("Labels") or {}), **node.labels}
        status, body = self.api(
            "POST",
            f"/nodes/{node.node_id}/update",
            {"version": str(current["Version"]["Index"])},
            spec,
        )
        if status != 200:
            raise self._failed(f"the manager did not rename {node.name}: {status} {body}")

    def _manager_sees(self, node: Node, state: str) -> bool:
        """The manager answers and sees `node` in `state` (and, for "ready", Active
        and named)."""
        try:
            status, nodes = self.api("GET", "/nodes", timeout=5)
        except OSError:
            return False  # the manager itself restarts
        if status != 200:
            return False  # e.g. 503 while a restarted manager takes up the raft log
        seen = next((n for n in nodes if n["ID"] == node.node_id), None)
        if seen is None or seen["Status"]["State"] != state:
            return False
        if state != "ready":
            return True
        spec = seen["Spec"]
        return bool(spec.get("Availability") == "active" and spec.get("Name") == node.name)

    # -- faults -----------------------------------------------------------------

    def kill_node(self, index: int) -> None:
        """SIGKILL node `index`'s dockerd (a node that dies): its containerd, shims
        and tasks are left to whatever they do then."""
        node = self.node(index)
        pid = node.pid
        if pid is None:
            raise self._failed(f"the dockerd of {node.name} does not run", node)
        self._stop_process(node, pid, signal.SIGKILL)

    def stop_node(self, index: int) -> None:
        """Stop node `index`'s dockerd as its service manager would: SIGTERM, and
        SIGKILL after STOP_DEADLINE."""
        node = self.node(index)
        pid = node.pid
        if pid is not None:
            self._stop_process(node, pid, signal.SIGTERM)

    def start_node(self, index: int) -> None:
        """Start node `index`'s dockerd again on the state it had, and wait until the
        manager sees it Ready, and every other node whose dockerd runs too: a
        manager that restarts knows the workers as "unknown" until they come back
        to it."""
        node = self.node(index)
        if node.pid is not None:
            raise self._failed(f"the dockerd of {node.name} runs already", node)
        self._start_dockerd(node)
        for other in self.nodes:
            if other is node or other.pid is not None:
                self.wait_node_state(other.index, "ready")

    def _stop_process(self, node: Node, pid: int, sig: int) -> None:
        """Send `sig` to node's dockerd `pid` and wait until it and its containerd
        are gone; SIGKILL the dockerd after STOP_DEADLINE, and fail if even that
        does not end it. Its containerd ends with it either way: on SIGTERM the
        dockerd stops it, on SIGKILL the kernel sends it the parent-death signal
        dockerd asked for. That ending takes a moment, and a dockerd started
        meanwhile would take the dying containerd up (its pidfile names a live
        process) and then fail: "timeout waiting for containerd to start"."""
        children = [p for p in _pids() if _parent(p) == pid and _program(p) == "containerd"]
        _signal(pid, sig)
        gone = self._gone(node, pid)
        try:
            _wait(gone, STOP_DEADLINE, f"the dockerd of {node.name} to exit", interval=0.05)
            killed = False
        except SwarmFailed:
            _signal(pid, signal.SIGKILL)
            killed = True
        try:
            _wait(gone, 10, f"the dockerd of {node.name} to die of SIGKILL", interval=0.05)
            _wait(
                lambda: not any(_alive(p) for p in children),
                10,
                f"the containerd of {node.name} to end with its dockerd",
                interval=0.05,
            )
        except SwarmFailed as e:
            raise self._failed(str(e), node) from None
        if killed:
            raise self._failed(
                f"the dockerd of {node.name} did not exit within "
                f"{STOP_DEADLINE:.0f} s of signal {sig} (it was killed)",
                node,
            )

    @staticmethod
    def _gone(node: Node, pid: int) -> Callable[[], bool]:
        def gone() -> bool:
            if node.process is not None and node.process.pid == pid:
                return node.process.poll() is not None  # ours: reap it
            return not _alive(pid)

        return gone

    # -- taking it down ---------------------------------------------------------

    def stop(self) -> None:
        """Take the cluster away: its services and their containers, the nodes'
        bridges, the dockerds (SIGTERM, SIGKILL after STOP_DEADLINE), whatever of
        theirs still runs after them, their mounts, the state dir. It works from
        the state dir alone, on a cluster some other process started too."""
        running = [n for n in self.nodes if n.pid is not None and _answers(n.host)]
        if self.manager in running:
            try:
                self.remove_services()
            except (SwarmFailed, OSError):
                pass  # a manager that cannot answer: the containers go below anyway
        _each(self._quiesce, running)
        self._clear()

    def _quiesce(self, node: Node) -> None:
        """Remove node's containers (by force: a task's process may ignore SIGTERM,
        and the engine would wait its grace period on each) and its gateway
        network, while its engine runs, so that it stops quickly and cleanly."""
        try:
            status, containers = node.api("GET", "/containers/json", {"all": "1"})
            for container in containers if status == 200 else []:
                node.api("DELETE", f"/containers/{container['Id']}", {"force": "1"})
            node.api("DELETE", f"/networks/{GATEWAY_NETWORK}")
        except OSError:
            pass  # the engine went away meanwhile: _clear deals with what it left

    def _clear(self) -> None:
        """Remove everything of this state dir's cluster from the machine: the
        dockerds its pidfiles name (SIGTERM first, so they clean up after
        themselves), then whatever still runs of theirs, their mounts, cgroups,
        shim sockets and bridges, and the directory itself."""
        _each(self._stop_quietly, self.nodes)
        for node in self.nodes:
            node.node_id = ""
        leftovers, shim_sockets = self._leftover_processes()
        if leftovers:
            mountinfo = _read("/proc/self/mountinfo")
            cgroups = {
                d for pid in leftovers for d in cgroup_dirs(_read(f"/proc/{pid}/cgroup"), mountinfo)
            }
            for pid in leftovers:
                _signal(pid, signal.SIGKILL)
            _wait(
                lambda: not any(_alive(pid) for pid in leftovers),
                10,
                "the cluster's leftover processes to die of SIGKILL",
                interval=0.05,
            )
            for path in sorted(cgroups, key=lambda p: -len(p.parts)):
                if path.is_dir():
                    try:
                        path.rmdir()
                    except OSError:
                        pass  # in use by another container of the same parent
        for path in shim_sockets:
            path.unlink(missing_ok=True)  # a shim killed by a signal leaves its socket
        libc = ctypes.CDLL(None, use_errno=True)
        for point in mount_points(_read("/proc/self/mountinfo"), self.state_dir):
            if libc.umount2(point.encode(), MNT_DETACH) != 0:
                errno = ctypes.get_errno()
                raise SwarmFailed(f"could not unmount {point}: {os.strerror(errno)}")
        for node in self.nodes:
            if Path(f"/sys/class/net/{node.bridge}").exists():
                subprocess.run(
                    ["ip", "link", "delete", node.bridge],
                    check=True,
                    capture_output=True,
                    timeout=30,
                )
        shutil.rmtree(self.state_dir, ignore_errors=True)
        if self.state_dir.exists():
            raise SwarmFailed(f"could not remove {self.state_dir}")
        still, _ = self._leftover_processes()
        if still:
            raise SwarmFailed(f"processes of the cluster outlived it: {sorted(still)}")

    def _stop_quietly(self, node: Node) -> None:
        """Stop node's dockerd if it runs; one that needs SIGKILL is not a failure here."""
        pid = node.pid
        if pid is None:
            return
        try:
            self._stop_process(node, pid, signal.SIGTERM)
        except SwarmFailed:
            if _alive(pid):
                raise
        node.process = None

    def _leftover_processes(self) -> tuple[set[int], list[Path]]:
        """Processes of this cluster still running without their dockerd: each
        engine program naming the state dir on its command line (containerd, shims),
        each process in a cgroup of one of the nodes' containers (tasks whose shim
        is gone), and every descendant of those; and the sockets of the shims among
        them."""
        container_ids = {
            p.name
            for node in self.nodes
            for p in (node.dir / "data" / "containers").glob("*")
            if len(p.name) == 64
        }
        prefix = str(self.state_dir) + "/"
        parents: dict[int, int] = {}
        found: set[int] = set()
        shim_sockets: list[Path] = []
        for pid in _pids():
            if pid == os.getpid():
                continue
            cmdline = _cmdline(pid)
            if not cmdline:
                continue
            parents[pid] = _parent(pid)
            if Path(cmdline[0]).name in ENGINE_PROGRAMS and any(prefix in a for a in cmdline):
                found.add(pid)
                shim_sockets += _shim_socket_of(cmdline)
            elif container_ids and any(
                cid in _read(f"/proc/{pid}/cgroup") for cid in container_ids
            ):
                found.add(pid)
        # Descendants: a task's processes, while its shim still runs.
        grew = True
        while grew:
            more = {pid for pid, parent in parents.items() if parent in found} - found
            found |= more
            grew = bool(more)
        return found, shim_sockets

    # -- failures ---------------------------------------------------------------

    def _failed(self, message: str, *nodes: Node) -> SwarmFailed:
        """A SwarmFailed saying `message`, with the log tails of `nodes` (of every
        node when none is named)."""
        named = {n.index: n for n in nodes or self.nodes}  # each node's tail once
        tails = "".join(
            f"\n--- {n.log_path} (last lines) ---\n{n.log_tail()}" for n in named.values()
        )
        return SwarmFailed(message + tails)


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _remove_stale_pidfile(path: Path, mark: str) -> None:
    """Remove the pidfile `path` unless it names a live process (not a zombie) with
    `mark` on its command line."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        path.unlink(missing_ok=True)
        return
    if not (_alive(pid) and any(mark in arg for arg in _cmdline(pid))):
        path.unlink(missing_ok=True)


def _program(pid: int) -> str:
    """The file name of the program `pid` runs ("" when it is gone)."""
    cmdline = _cmdline(pid)
    return Path(cmdline[0]).name if cmdline else ""


def _parent(pid: int) -> int:
    stat = _read(f"/proc/{pid}/stat")
    try:
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (IndexError, ValueError):
        return 0


def _shim_socket_of(cmdline: list[str]) -> list[Path]:
    """The socket of the shim with this command line (none for another program)."""
    if not Path(cmdline[0]).name.startswith("containerd-shim"):
        return []
    args = dict(zip(cmdline[1::2], cmdline[2::2], strict=False))
    try:
        return [shim_socket(args["-address"], args["-namespace"], args["-id"])]
    except KeyError:
        return []


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.swarm_cluster",
        description="Bring a three-node Docker Swarm on this machine up or down.",
    )
    parser.add_argument("action", choices=("up", "down"))
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument(
        "--addresses",
        default=",".join(DEFAULT_ADDRESSES),
        help="the nodes' loopback addresses, comma-separated",
    )
    args = parser.parse_args(argv)
    cluster = SwarmCluster(args.state_dir, tuple(args.addresses.split(",")))
    if args.action == "up":
        cluster.start()
        print(cluster.manager_host)
    else:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
