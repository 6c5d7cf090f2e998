"""Rootless Podman for the rootless tier: an unprivileged test user, its own
`podman system service`, and runnerd run as that user against it.

Everything here runs as root (the test command does, in CI) and acts as the user
through `setpriv`, which execs the command itself (no process in between, unlike
`runuser`), so a signal sent to a Popen's pid reaches podman or runnerd directly.
There is no systemd-logind on the test machine, so nothing makes the user's
XDG_RUNTIME_DIR: `ensure_user` does, as logind would (/run/user/<uid>, 0700).

Every session gets its own directory (`Session.dir`, under /tmp, owned by the
user) holding the engine's storage and config and runnerd's data: Podman reads its
configuration from CONTAINERS_CONF and CONTAINERS_STORAGE_CONF, never from the
user's home, so each session starts on an empty store and leaves nothing behind.

Nothing here needs pytest.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from packaging.requirements import Requirement

import runnerd
from tests.harness import TEST_IMAGE, Daemon, DaemonFailed, engine_api, write_config

USER = os.environ.get("RUNNERD_ROOTLESS_USER", "runnerd-rootless")
SUBID_COUNT = 65536
SERVICE_DEADLINE = 30.0
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# What rootless storage to try, in order: the kernel's own overlay (unprivileged
# overlay mounts exist since Linux 5.13, and Podman 4.3 uses them when told to:
# with no storage.conf it picks vfs for a new rootless store, a full copy of the
# image per container), then overlay through fuse-overlayfs (older kernels), then
# vfs (always works, slowly). The first with which a container runs is used.
STORAGE_DRIVERS: tuple[tuple[str, str], ...] = (
    ("overlay (native)", 'driver = "overlay"\n'),
    (
        "overlay (fuse-overlayfs)",
        'driver = "overlay"\n\n[storage.options.overlay]\nmount_program = "/usr/bin/fuse-overlayfs"\n',
    ),
    ("vfs", 'driver = "vfs"\n'),
)


class SetupFailed(AssertionError):
    """The rootless engine could not be set up; the message says what and why."""


def _run(argv: list[str], timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


def _must(argv: list[str], what: str, timeout: float = 120) -> str:
    out = _run(argv, timeout)
    if out.returncode != 0:
        raise SetupFailed(f"{what} failed ({' '.join(argv)}): {out.stderr.strip()}")
    return out.stdout


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: Path

    @property
    def runtime_dir(self) -> Path:
        return Path(f"/run/user/{self.uid}")

    @property
    def socket(self) -> Path:
        """Where `podman.socket` puts it for a user: $XDG_RUNTIME_DIR/podman/podman.sock."""
        return self.runtime_dir / "podman" / "podman.sock"

    def command(self, argv: list[str], env: dict[str, str] | None = None) -> list[str]:
        """`argv` as this user, with only its own environment (and `env`)."""
        base = {
            "HOME": str(self.home),
            "USER": self.name,
            "LOGNAME": self.name,
            "PATH": PATH,
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
            "LANG": "C.UTF-8",
        }
        pairs = [f"{k}={v}" for k, v in {**base, **(env or {})}.items()]
        return [
            "setpriv",
            f"--reuid={self.uid}",
            f"--regid={self.gid}",
            "--init-groups",
            "--",
            "env",
            "-i",
            *pairs,
            *argv,
        ]

    def run(
        self, argv: list[str], env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return _run(self.command(argv, env), timeout, cwd="/")

    def chown(self, path: Path) -> None:
        os.chown(path, self.uid, self.gid)


def _subid_ranges(path: Path) -> list[tuple[str, int, int]]:
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            out.append((parts[0], int(parts[1]), int(parts[2])))
    return out


def ensure_user(name: str = USER) -> User:
    """The test user, made if missing (`useradd -m`), with subordinate uid and gid
    ranges (Debian's useradd adds them; usermod when it did not) and its
    XDG_RUNTIME_DIR. The user stays after the session."""
    if os.geteuid() != 0:
        raise SetupFailed(
            "the rootless tier sets up an unprivileged user and its Podman service, "
            "which needs root: run the suite as root (tests/run.sh in CI does)"
        )
    missing = [t for t in ("podman", "setpriv", "newuidmap", "newgidmap") if not shutil.which(t)]
    if missing:
        raise SetupFailed(
            f"{', '.join(missing)} missing: the rootless tier needs Debian's podman and "
            "uidmap (tests/run.sh installs them)"
        )
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        _must(["useradd", "--create-home", "--shell", "/bin/sh", name], f"useradd {name}")
        entry = pwd.getpwnam(name)
    for path, flag in (
        (Path("/etc/subuid"), "--add-subuids"),
        (Path("/etc/subgid"), "--add-subgids"),
    ):
        ranges = _subid_ranges(path)
        if not any(owner in (name, str(entry.pw_uid)) for owner, _, _ in ranges):
            start = max([100000, *(s + n for _, s, n in ranges)])
            _must(
                ["usermod", flag, f"{start}-{start + SUBID_COUNT - 1}", name],
                f"giving {name} subordinate ids in {path}",
            )
    user = User(name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))
    user.runtime_dir.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    user.runtime_dir.mkdir(mode=0o700, exist_ok=True)
    user.chown(user.runtime_dir)
    user.runtime_dir.chmod(0o700)
    return user


def _busybox_rootfs(dest: Path) -> Path:
    """The test image's rootfs as tests/run.sh builds it: busybox-static with its
    applet links and an /etc/passwd, as a tarball."""
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        raise SetupFailed("/bin/busybox missing: tests/run.sh installs busybox-static")
    root = dest / "rootfs"
    for d in ("bin", "tmp", "etc"):
        (root / d).mkdir(parents=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    applets = _must([str(busybox), "--list"], "busybox --list").split()
    for applet in applets:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    tar = dest / "rootfs.tar"
    _must(["tar", "-C", str(root), "-cf", str(tar), "."], "building the image's tarball")
    shutil.rmtree(root)
    return tar


def _distributions(top: str) -> list[importlib.metadata.Distribution]:
    """`top`'s installed dependencies, transitively (extras and other platforms' left out)."""
    seen: dict[str, importlib.metadata.Distribution] = {}
    todo = [top]
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        dist = importlib.metadata.distribution(name)
        seen[key] = dist
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return [d for k, d in seen.items() if k != top]


def install_runnerd(dest: Path) -> Path:
    """runnerd and what it imports, copied where the user can read them; returns
    the directory to put on PYTHONPATH. The suite's venv (and often the checkout)
    lives under /root, which is 0700: the user cannot read it. So this copies the
    checkout's `runnerd/` package and each dependency's installed files (about
    35 MB, bytecode included, so it starts as fast as from the venv), not the
    whole venv (over 250 MB with the test tools)."""
    lib = dest / "pylib"
    shutil.copytree(
        Path(runnerd.__file__).parent, lib / "runnerd", ignore=shutil.ignore_patterns("__pycache__")
    )
    for dist in _distributions("runnerd"):
        for f in dist.files or []:
            if f.parts[0] == "..":  # scripts in the venv's bin/: not needed
                continue
            src = Path(str(dist.locate_file(f)))
            if src.is_file():
                (lib / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, lib / f)
    return lib


def user_python(user: User) -> str:
    """A Python of this suite's minor version that the user can run: the suite's own
    base interpreter where the user can reach it, else Debian's /usr/bin/python3.X
    (compiled dependencies are built for the minor version, so any patch level fits)."""
    want = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [
        os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
        f"/usr/bin/python{want}",
        "/usr/bin/python3",
    ]
    tried = []
    for exe in dict.fromkeys(candidates):
        out = user.run([exe, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"])
        got = out.stdout.strip().replace(" ", ".")
        if out.returncode == 0 and got == want:
            return exe
        tried.append(f"{exe}: {got or out.stderr.strip()[:80]}")
    raise SetupFailed(
        f"no Python {want} the user {user.name} can run ({'; '.join(tried)}): install "
        f"Debian's python{want}"
    )


@dataclass
class Session:
    """One session's rootless engine: the user's `podman system service` on
    $XDG_RUNTIME_DIR/podman/podman.sock, on a store of its own in `dir`."""

    user: User
    dir: Path
    storage: str = ""  # which of STORAGE_DRIVERS worked
    service: subprocess.Popen[bytes] | None = None
    python: str = ""
    pylib: Path = field(default_factory=Path)
    _lock: BinaryIO | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.user.socket}"

    @property
    def env(self) -> dict[str, str]:
        """What every podman of this session runs with."""
        return {
            "CONTAINERS_CONF": str(self.dir / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(self.dir / "storage.conf"),
        }

    def podman(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.user.run(["podman", *args], self.env, timeout)

    @property
    def service_log(self) -> Path:
        return self.dir / "podman-service.log"

    def _write_confs(self, storage: str) -> None:
        # cgroupfs and a file for events: no systemd user session here (with one,
        # as under `systemctl --user`, Podman's defaults, systemd and journald, fit).
        # No default_ulimits, unlike the rootful engine's (tests/run.sh): rootless
        # Podman gives a container its own limits (nofile 20000, the hard limit,
        # and nproc 32768, the host's pid_max, here), which it can always set;
        # root's default nofile (1048576, the kernel's maximum) is what fails
        # ("error setting rlimit type 7") without CAP_SYS_RESOURCE. A value of our
        # own fails where it passes the user's podman's limits: half of this host's
        # nproc hard limit (48181) did ("rlimit type 6").
        (self.dir / "containers.conf").write_text(
            '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
            f'tmp_dir = "{self.dir / "libpod-tmp"}"\n'
        )
        # rootless_storage_path, not graphroot: a rootless Podman ignores graphroot.
        (self.dir / "storage.conf").write_text(
            f'[storage]\nrootless_storage_path = "{self.dir / "storage"}"\n{storage}'
        )

    def _pick_storage(self, tar: Path) -> None:
        """The first of STORAGE_DRIVERS on which the test image imports and a
        container runs, with the image imported into it."""
        failures = []
        for name, conf in STORAGE_DRIVERS:
            self._clear_engine_state()
            self._write_confs(conf)
            imported = self.podman(
                "import", "-c", 'CMD ["sh"]', "-c", "ENV PATH=/bin", str(tar), TEST_IMAGE
            )
            if imported.returncode == 0:
                ran = self.podman("run", "--rm", "--network", "none", TEST_IMAGE, "true")
                if ran.returncode == 0:
                    self.storage = name
                    return
                failures.append(f"{name}: run: {ran.stderr.strip()[-300:]}")
            else:
                failures.append(f"{name}: import: {imported.stderr.strip()[-300:]}")
        raise SetupFailed("no rootless storage works: " + "; ".join(failures))

    def _clear_engine_state(self) -> None:
        """No store, no pause process (it holds the namespaces, and the mounts in
        them, of what ran before) and no runtime state (rootless Podman keeps it in
        $XDG_RUNTIME_DIR/containers, whatever storage.conf says)."""
        _end_pause_process(self.dir / "libpod-tmp" / "pause.pid", self.user.uid)
        for d in (
            self.dir / "storage",
            self.dir / "libpod-tmp",
            self.user.runtime_dir / "containers",
        ):
            shutil.rmtree(d, ignore_errors=True)

    def start(self) -> None:
        """Storage, the test image, the service (answering), runnerd's files."""
        # One session at a time per user (e.g. pytest-xdist workers): they share
        # the socket's path and the user's namespace (Podman's pause process).
        self._lock = open(self.user.runtime_dir / "runnerd-test.lock", "wb")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        tar = _busybox_rootfs(self.dir)
        for path in (self.dir, tar):
            self.user.chown(path)
        self._pick_storage(tar)
        self.user.socket.parent.mkdir(exist_ok=True)
        self.user.chown(self.user.socket.parent)
        self.user.socket.unlink(missing_ok=True)  # one a killed service left
        with open(self.service_log, "wb") as log:
            self.service = subprocess.Popen(
                self.user.command(["podman", "system", "service", "--time=0", self.url], self.env),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd="/",
            )
        deadline = time.monotonic() + SERVICE_DEADLINE
        while not self.answers():
            if self.service.poll() is not None or time.monotonic() > deadline:
                raise SetupFailed(
                    f"podman system service as {self.user.name} did not answer on "
                    f"{self.user.socket}: {self.service_log.read_text(errors='replace')[-2000:]}"
                )
            time.sleep(0.05)
        self.python = user_python(self.user)
        self.pylib = install_runnerd(self.dir)
        _must(["chown", "-R", f"{self.user.uid}:{self.user.gid}", str(self.pylib)], "chown")

    def answers(self) -> bool:
        try:
            status, body = engine_api("GET", "/_ping", host=self.url, timeout=2)
        except OSError:
            return False
        return status == 200 and str(body).strip() == "OK"

    def engine_json(self, path: str) -> Any:
        status, body = engine_api("GET", path, host=self.url)
        assert status == 200, body
        return body

    def stop(self) -> list[str]:
        """Containers removed, the service stopped, Podman's pause process (which
        holds the user's namespaces) ended, this session's files removed. Returns
        what went wrong (for the caller to report; cleanup goes on regardless)."""
        problems = []
        if self.storage:
            out = self.podman("rm", "--all", "--force", "--time", "0")
            if out.returncode != 0:
                problems.append(f"podman rm --all: {out.stderr.strip()}")
        if self.service is not None:
            if self.service.poll() is None:
                self.service.send_signal(signal.SIGTERM)
            try:
                self.service.wait(30)
            except subprocess.TimeoutExpired:
                self.service.kill()
                self.service.wait(10)
                problems.append("podman system service did not stop within 30 s of SIGTERM")
        self._clear_engine_state()
        shutil.rmtree(self.dir, ignore_errors=True)
        self.user.socket.unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.close()  # releases the flock
        return problems


def _end_pause_process(pidfile: Path, uid: int) -> None:
    """End the pause process the pid file names, if it is the user's (and wait
    until it has: its namespaces go with it)."""
    try:
        pid = int(pidfile.read_text().strip())
        if os.stat(f"/proc/{pid}").st_uid != uid:
            return
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return  # no pause process (or it is gone already)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:  # gone, or a zombie (its parent, init, reaps it when it does)
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return
        if state == "Z":
            return
        time.sleep(0.02)


def new_session(user: User) -> Session:
    d = Path(tempfile.mkdtemp(prefix="runnerd-rootless-", dir="/tmp"))
    return Session(user=user, dir=d)


@dataclass
class UserDaemon(Daemon):
    """A `runnerd serve` run as the session's user, on the session's engine. The
    harness's Daemon, with the commands wrapped: everything else (stop, the log,
    the database) is the same."""

    session: Session | None = None

    cwd: str | None = "/"  # the user may not enter the tests' working directory

    def command(self, *args: str) -> list[str]:
        assert self.session is not None
        return self.session.user.command(
            [self.session.python, "-m", "runnerd", *args],
            {"PYTHONPATH": str(self.session.pylib), "PYTHONNOUSERSITE": "1"},
        )

    def create_key(self, name: str, scope: str = "full") -> str:
        out = _run(
            self.command(
                "keys",
                "create",
                "--name",
                name,
                "--scope",
                scope,
                "--config",
                str(self.config_path),
            ),
            60,
            cwd="/",
        )
        if out.returncode != 0:
            raise DaemonFailed(f"runnerd keys create (as the user) failed: {out.stderr.strip()}")
        return out.stdout.strip().splitlines()[-1]

    def remove_containers(self) -> list[str]:
        """The session's teardown removes every container of its engine."""
        return []


def user_daemon(session: Session, extra_config: str = "") -> UserDaemon:
    """A runnerd for the session's user: its config, data dir and key, started."""
    d = session.dir / "daemon"
    d.mkdir()
    config_path = d / "config.toml"
    write_config(
        config_path,
        d / "data",
        f'[docker]\nurl = "{session.url}"\nnetwork = "none"\nstop_grace_seconds = 1\n'
        + extra_config,
    )
    session.user.chown(d)
    session.user.chown(config_path)
    daemon = UserDaemon(dir=d, config_path=config_path, extra_config=extra_config, session=session)
    daemon.key = daemon.create_key("test")
    daemon.start()
    return daemon
