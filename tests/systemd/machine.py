"""The systemd tier's machine: one Debian container booted with systemd as PID 1,
runnerd installed in it with systemd/runnerd.service as shipped; the tests drive it
with systemctl and journalctl.

The image is the debootstrap rootfs of tests/systemd/image.sh (cached by the hash of
that script). runnerd is installed at boot, offline, from a wheelhouse built here
with pip and bind-mounted, so a change to runnerd needs no new image. The container
has no network and no dockerd: its docker.service is socat forwarding
/run/docker.sock to the host's engine socket, bind-mounted, so `systemctl stop docker`
really takes the engine away from runnerd and `systemctl start docker` brings it
back. Runs are real containers on the host engine, removed at the end.

Nothing here skips: a machine where the tier cannot run fails it loudly.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import LABEL_DAEMON, TEST_IMAGE, docker_cli

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BOOT_DEADLINE = 120.0

# What the container gets from the host: the flags that boot systemd here
# (--privileged does not), no network, the engine socket and the wheelhouse.
RUN_FLAGS = [
    "--cap-add",
    "ALL",
    "--cap-drop",
    "SYS_RESOURCE",
    "--security-opt",
    "seccomp=unconfined",
    "--cgroupns=private",
    "-e",
    "container=docker",
    "--tmpfs",
    "/run",
    "--tmpfs",
    "/run/lock",
    "--network",
    "none",
]

DOCKER_SERVICE = """\
[Unit]
Description=Docker engine (test stand-in: forwards /run/docker.sock to the host's engine)

[Service]
ExecStart=/usr/bin/socat UNIX-LISTEN:/run/docker.sock,fork,unlink-early,unlink-close \\
  UNIX-CONNECT:/host/docker.sock

[Install]
WantedBy=multi-user.target
"""

CONFIG = """\
[server]
listen = "127.0.0.1:8420"

[docker]
network = "none"
stop_grace_seconds = 1

[scheduler]
max_concurrent_runs = 4
"""

# `api METHOD PATH [JSON]`: one request to runnerd with the test key; prints
# {"status": ..., "body": ...}. No retries: a refused connection is an answer too.
API_SCRIPT = """\
import json, sys, urllib.error, urllib.request
method, path = sys.argv[1], sys.argv[2]
data = sys.argv[3].encode() if len(sys.argv) > 3 else None
key = open("/etc/runnerd/test-key").read().strip()
req = urllib.request.Request("http://127.0.0.1:8420" + path, data=data, method=method,
                             headers={"Authorization": "Bearer " + key,
                                      "Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=30) as r:
        status, body = r.status, r.read()
except urllib.error.HTTPError as e:
    status, body = e.code, e.read()
except OSError as e:
    status, body = 0, str(e).encode()
try:
    parsed = json.loads(body)
except ValueError:
    parsed = body.decode(errors="replace")
print(json.dumps({"status": status, "body": parsed}))
"""


@dataclass
class Machine:
    """The booted container, and the runnerd unit in it."""

    name: str

    def sh(
        self, script: str, *, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["docker", "exec", self.name, "bash", "-c", script],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"in the container, `{script}` exited {done.returncode}:\n"
                f"{done.stdout}\n{done.stderr}"
            )
        return done

    def put(self, path: str, text: str) -> None:
        subprocess.run(
            [
                "docker",
                "exec",
                "-i",
                self.name,
                "bash",
                "-c",
                f"mkdir -p {shlex.quote(os.path.dirname(path))} && cat > {shlex.quote(path)}",
            ],
            input=text,
            text=True,
            check=True,
            timeout=60,
        )

    def show(self, *props: str, unit: str = "runnerd") -> dict[str, str]:
        out = self.sh(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def status_text(self) -> str:
        return self.show("StatusText")["StatusText"]

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        args = ["python3", "/usr/local/bin/api", method, path]
        if body is not None:
            args.append(json.dumps(body))
        out = self.sh(" ".join(shlex.quote(a) for a in args)).stdout
        answer = json.loads(out.splitlines()[-1])
        return answer["status"], answer["body"]

    def journal_cursor(self) -> str:
        out = self.sh("journalctl --show-cursor -n 0 --no-pager").stdout
        return out.strip().rsplit("cursor: ", 1)[-1]

    def journal(self, cursor: str, *args: str) -> str:
        """runnerd's journal from `cursor` on. --cursor, not --after-cursor: with a
        filter (-p) journalctl 252 seeks to the first match after the cursor and then
        skips it as if it were the cursor's own entry."""
        return self.sh(
            f"journalctl --no-pager -u runnerd --cursor={shlex.quote(cursor)} "
            + " ".join(shlex.quote(a) for a in args)
        ).stdout

    def ensure_running(self) -> None:
        """Each test starts from an active runnerd with the engine there."""
        self.sh("systemctl start docker")
        if self.show("ActiveState")["ActiveState"] != "active":
            self.sh("systemctl reset-failed runnerd; systemctl start runnerd")

    def daemon_id(self) -> str | None:
        done = self.sh(
            'python3 -c "import sqlite3; print(sqlite3.connect('
            "'file:/var/lib/runnerd/runnerd.db?mode=ro', uri=True).execute("
            '\\"SELECT value FROM meta WHERE key = \'daemon_id\'\\").fetchone()[0])"',
            check=False,
        )
        return done.stdout.strip() or None


def _host_socket() -> str:
    host = os.environ.get("DOCKER_HOST", "")
    if host and not host.startswith("unix://"):
        pytest.fail(f"the systemd tier needs the engine on a unix socket, not DOCKER_HOST={host}")
    return host.removeprefix("unix://") or "/var/run/docker.sock"


def _build_image() -> str:
    done = subprocess.run(
        ["bash", str(HERE / "image.sh")], stdout=subprocess.PIPE, text=True, timeout=1200
    )  # its log goes to our stderr
    if done.returncode != 0:
        pytest.fail(f"tests/systemd/image.sh failed (exit {done.returncode}); see its output")
    return done.stdout.strip().splitlines()[-1]


def _build_wheelhouse(into: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--disable-pip-version-check",
            "--wheel-dir",
            str(into),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        pytest.fail(f"pip wheel of runnerd failed:\n{done.stdout}\n{done.stderr}")


def _wait_booted(machine: Machine) -> None:
    deadline = time.monotonic() + BOOT_DEADLINE
    while True:
        done = machine.sh("systemctl is-system-running", check=False)
        state = done.stdout.strip()
        if state in ("running", "degraded"):
            return
        if time.monotonic() > deadline:
            logs = docker_cli("logs", "--tail", "50", machine.name, check=False)
            pytest.fail(
                f"systemd did not boot within {BOOT_DEADLINE} s (state {state!r}):\n"
                f"{logs.stdout}{logs.stderr}"
            )
        time.sleep(0.2)


@pytest.fixture(scope="session")
def machine(tmp_path_factory: pytest.TempPathFactory, docker_engine: str) -> Iterator[Machine]:
    image = _build_image()
    wheels = tmp_path_factory.mktemp("wheels")
    _build_wheelhouse(wheels)
    name = f"runnerd-systemd-test-{uuid.uuid4().hex[:8]}"
    started = docker_cli(
        "run",
        "-d",
        "--name",
        name,
        *RUN_FLAGS,
        "-v",
        f"{_host_socket()}:/host/docker.sock",
        "-v",
        f"{wheels}:/wheels:ro",
        image,
        check=False,
    )
    if started.returncode != 0:
        pytest.fail(f"cannot start the systemd container:\n{started.stderr}")
    m = Machine(name)
    try:
        _wait_booted(m)
        m.sh(
            "python3 -m venv /opt/runnerd && /opt/runnerd/bin/pip install -q "
            "--disable-pip-version-check --no-index --find-links /wheels runnerd && "
            "ln -sf /opt/runnerd/bin/runnerd /usr/local/bin/runnerd",
            timeout=600,
        )
        m.put("/etc/systemd/system/docker.service", DOCKER_SERVICE)
        m.put(
            "/etc/systemd/system/runnerd.service",
            (ROOT / "systemd" / "runnerd.service").read_text(),
        )
        m.put("/etc/runnerd/config.toml", CONFIG)
        m.put("/usr/local/bin/api", API_SCRIPT)
        m.sh("systemctl daemon-reload && systemctl enable --now docker")
        m.sh(
            "runnerd keys create --name test --config /etc/runnerd/config.toml "
            "| tail -n 1 > /etc/runnerd/test-key"
        )
        yield m
    finally:
        daemon_id = m.daemon_id()
        docker_cli("rm", "-f", name, check=False)
        if daemon_id:
            ids = docker_cli(
                "ps", "-aq", "--filter", f"label={LABEL_DAEMON}={daemon_id}", check=False
            ).stdout.split()
            if ids:
                docker_cli("rm", "-f", *ids, check=False)


@pytest.fixture
def runner(machine: Machine) -> dict[str, Any]:
    """A runner of the test image, which the host engine has (no pulls)."""
    machine.ensure_running()
    image, _, tag = TEST_IMAGE.rpartition(":")
    status, body = machine.api(
        "POST",
        "/v1/runners",
        {
            "name": f"sd-{uuid.uuid4().hex[:8]}",
            "image_name": image,
            "image_tag": tag,
            "image_pull_policy": "never",
            "run_command": "sleep ${SECONDS_TO_SLEEP:-0}",
            "timeout_seconds": 600,
        },
    )
    assert status == 200, body
    return body["runner"]
