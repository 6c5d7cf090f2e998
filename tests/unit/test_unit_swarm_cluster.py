"""tests/swarm_cluster.py's own logic, without Docker: the names a cluster gives its
nodes (unique to its state dir, short enough for a bridge), the VXLAN port it picks,
the dockerd command line, and how it finds what a killed run left behind (mounts
from mountinfo, cgroup directories, a shim's socket, stale pidfiles)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.swarm_cluster import (
    DEFAULT_ADDRESSES,
    SwarmCluster,
    SwarmFailed,
    _remove_stale_pidfile,
    _shim_socket_of,
    _wait,
    cgroup_dirs,
    cluster_tag,
    data_path_port,
    mount_points,
    shim_socket,
)

# /proc/self/mountinfo of a cgroup v1 machine with the unified (v2) hierarchy beside
# it, as Debian 12 here has it, plus a cluster's mounts (one path with a space).
MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
48 27 254:0 /run/rsw/node1/data /run/rsw/node1/data rw,relatime shared:3 - ext4 /dev/vda rw
50 27 0:4 net:[4026532178] /run/rsw/node1/exec/netns/ingress_sbox rw - nsfs nsfs rw
57 48 0:40 / /run/rsw/node1/data/overlay2/abc/merged rw,relatime shared:5 - overlay overlay rw
58 48 0:41 / /run/rsw/node1/data/my\\040dir rw - tmpfs shm rw
60 27 254:0 /run/rsw2/node1/data /run/rsw2/node1/data rw,relatime - ext4 /dev/vda rw
"""


def test_a_clusters_names_are_its_state_dirs_own_and_fit_a_bridge() -> None:
    tag = cluster_tag(Path("/run/runnerd-swarm"))
    assert tag == cluster_tag(Path("/run/runnerd-swarm"))
    assert tag != cluster_tag(Path("/run/rsw-dev"))
    assert tag.startswith("rsw")
    cluster = SwarmCluster()
    names = [n.bridge for n in cluster.nodes] + [n.namespace for n in cluster.nodes]
    assert len(set(n.bridge for n in cluster.nodes)) == 3
    assert all(len(name) <= 15 for name in names)  # IFNAMSIZ - 1


def test_the_defaults_are_the_documented_ones() -> None:
    cluster = SwarmCluster()
    assert cluster.manager_host == "unix:///run/runnerd-swarm/node1/sock"
    assert [n.address for n in cluster.nodes] == list(DEFAULT_ADDRESSES)
    assert [n.name for n in cluster.nodes] == [f"runnerd-node-{i}" for i in (1, 2, 3)]
    assert [n.labels for n in cluster.nodes] == [
        {"runnerd": "yes"},
        {"runnerd": "yes"},
        {"runnerd": "yes", "size": "large"},
    ]
    assert cluster.node(3).log_path == Path("/run/runnerd-swarm/node3/dockerd.log")


def test_each_cluster_gets_its_own_vxlan_port() -> None:
    assert data_path_port("127.0.0.11") == 4811
    assert data_path_port("127.0.0.21") != data_path_port("127.0.0.11")
    assert 4789 not in {data_path_port(f"127.0.0.{i}") for i in range(256)}


def test_a_nodes_dockerd_gives_containers_no_network_and_keeps_to_its_dir() -> None:
    node = SwarmCluster(Path("/run/x"), ("127.0.0.21", "127.0.0.22", "127.0.0.23")).node(2)
    command = node.command()
    for flag in ("--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false"):
        assert flag in command
    assert "--host=unix:///run/x/node2/sock" in command
    paths = [a.split("=", 1)[1] for a in command if a.startswith("--") and "/" in a]
    assert paths and all(p.startswith(("/run/x/node2/", "unix:///run/x/node2/")) for p in paths)
    assert f"--containerd-namespace={node.namespace}" in command


def test_a_state_dir_too_long_for_unix_sockets_is_refused() -> None:
    with pytest.raises(ValueError, match="too long"):
        SwarmCluster(Path("/run/" + "d" * 80))


def test_a_cluster_has_three_nodes() -> None:
    with pytest.raises(ValueError, match="three"):
        SwarmCluster(addresses=("127.0.0.11", "127.0.0.12"))
    with pytest.raises(ValueError, match="no node 4"):
        SwarmCluster().node(4)


def test_mounts_under_the_state_dir_come_deepest_first() -> None:
    assert mount_points(MOUNTINFO, Path("/run/rsw")) == [
        "/run/rsw/node1/data/overlay2/abc/merged",
        "/run/rsw/node1/exec/netns/ingress_sbox",
        "/run/rsw/node1/data/my dir",  # the kernel's \040 is a space
        "/run/rsw/node1/data",
    ]  # and nothing of /run/rsw2, whose name only begins alike


def test_a_processs_cgroups_are_found_under_their_hierarchies_mounts() -> None:
    proc_cgroup = (
        "12:pids:/docker/c1\n"
        "11:cpu,cpuacct:/docker/c1\n"
        "10:memory:/\n"  # a hierarchy's root: never removed
        "1:name=systemd:/docker/c1\n"
        "0::/docker/c1\n"
    )
    assert cgroup_dirs(proc_cgroup, MOUNTINFO) == [
        Path("/sys/fs/cgroup/pids/docker/c1"),
        Path("/sys/fs/cgroup/cpu,cpuacct/docker/c1"),
        Path("/sys/fs/cgroup/systemd/docker/c1"),
        Path("/sys/fs/cgroup/unified/docker/c1"),
    ]
    v2_only = "30 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n"
    assert cgroup_dirs("0::/system.slice/docker-c1.scope\n", v2_only) == [
        Path("/sys/fs/cgroup/system.slice/docker-c1.scope")
    ]


def test_a_shims_socket_is_where_containerd_puts_it() -> None:
    # Seen on this machine (containerd 1.6.20): this shim listened on that socket.
    cmdline = [
        "/usr/bin/containerd-shim-runc-v2",
        "-namespace",
        "rswf57d55-2",
        "-id",
        "6f52c0bdc16a98c85c6d6994fd2411d817018e986df1698acade444378199248",
        "-address",
        "/run/rsw-dev/node2/exec/containerd/containerd.sock",
    ]
    socket = Path(
        "/run/containerd/s/973d20a3164ccabd993b0ae8d7991287099bf7cbc77bea4855771187c22c2a0c"
    )
    assert _shim_socket_of(cmdline) == [socket]
    assert shim_socket(cmdline[6], cmdline[2], cmdline[4]) == socket
    assert _shim_socket_of(["/usr/bin/containerd", "--config", "x"]) == []


def test_a_stale_pidfile_goes_and_a_live_ones_stays(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "mark-xyz"])
    try:
        live = tmp_path / "live.pid"
        live.write_text(f"{sleeper.pid}\n")
        _remove_stale_pidfile(live, "mark-xyz")
        assert live.exists()
        _remove_stale_pidfile(live, "another-mark")  # a live pid, but not the node's
        assert not live.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    dead = tmp_path / "dead.pid"
    dead.write_text(f"{sleeper.pid}\n")  # reaped: no such process now
    _remove_stale_pidfile(dead, "mark-xyz")
    assert not dead.exists()
    garbled = tmp_path / "garbled.pid"
    garbled.write_text("not a pid")
    _remove_stale_pidfile(garbled, "mark-xyz")
    assert not garbled.exists()


def test_a_node_whose_pidfile_names_another_process_does_not_run() -> None:
    # A short state dir of its own: pytest's tmp_path (per xdist worker) can be
    # longer than the cluster allows for its unix socket paths.
    with tempfile.TemporaryDirectory(prefix="rsw-", dir="/tmp") as state_dir:
        cluster = SwarmCluster(Path(state_dir), ("127.0.0.21", "127.0.0.22", "127.0.0.23"))
        node = cluster.node(1)
        node.dir.mkdir()
        node.pidfile.write_text(str(os.getpid()))  # alive, but no dockerd of this node
        assert node.pid is None


def test_a_wait_returns_what_the_condition_gave_or_fails_on_its_deadline() -> None:
    answers = iter([None, 0, "ready"])
    assert _wait(lambda: next(answers), 5, "a value", interval=0.001) == "ready"
    with pytest.raises(SwarmFailed, match="waiting for nothing"):
        _wait(lambda: False, 0.02, "nothing", interval=0.005)
