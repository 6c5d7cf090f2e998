"""A real private image registry for the tests: Debian's `docker-registry`
(distribution 2.x) on 127.0.0.1 with htpasswd auth, holding the test image as
`<host>/team/job:v1`.

The registry's access log tells what the engine asked it (one line per request,
in the combined log format), so a test can prove that a pull reached it, with
which result, or that nothing did.
"""

from __future__ import annotations

import re
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from conftest import TEST_IMAGE
from helpers_engine import engine_api

REGISTRY_BIN = "/usr/bin/docker-registry"
START_DEADLINE = 30.0
REPOSITORY = "team/job"
TAG = "v1"
# 127.0.0.1 - - [28/Nov/2026:21:16:07 +0000] "HEAD /v2/team/job/manifests/v1 HTTP/1.1" 200 527
ACCESS_LINE = re.compile(r'^\S+ - \S+ \[[^\]]+\] "([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3}) ', re.M)


@dataclass(frozen=True)
class Request:
    method: str
    uri: str
    status: int


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Registry:
    """One registry process with one user; `start()`, `push_test_image()`, `stop()`."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.username = "ci-puller"
        # Unique, so a search of a database or a log for it means something.
        self.password = "regpw-" + secrets.token_hex(16)
        self.log_path = self.dir / "registry.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def image_ref(self) -> str:
        """The pushed image, as Docker names it."""
        return f"{self.host}/{REPOSITORY}:{TAG}"

    def start(self) -> None:
        for tool in (REGISTRY_BIN, "htpasswd"):
            if shutil.which(tool) is None:
                raise AssertionError(
                    f"{tool} is missing; tests/run.sh installs Debian's "
                    "docker-registry and apache2-utils"
                )
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "storage").mkdir(exist_ok=True)
        htpasswd = subprocess.run(
            ["htpasswd", "-Bbn", self.username, self.password],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        (self.dir / "htpasswd").write_text(htpasswd.stdout)
        config = self.dir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: info\n"
            "storage:\n"
            f"  filesystem:\n    rootdirectory: {self.dir / 'storage'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n  secret: {secrets.token_hex(16)}\n"
            "auth:\n  htpasswd:\n    realm: runnerd-test\n"
            f"    path: {self.dir / 'htpasswd'}\n"
        )
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + START_DEADLINE
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"docker-registry exited with {self.proc.returncode}:\n"
                    f"{self.log_text()[-3000:]}"
                )
            if self._v2_status() == 401:  # up, and asking for credentials
                return
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(
                    f"docker-registry did not answer 401 on /v2/ within "
                    f"{START_DEADLINE} s:\n{self.log_text()[-3000:]}"
                )
            time.sleep(0.05)

    def _v2_status(self) -> int | None:
        try:
            with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as e:
            return int(e.code)
        except (urllib.error.URLError, OSError):
            return None

    @property
    def auth(self) -> dict[str, str]:
        """The user's credentials as the engine API takes them for a push."""
        return {"username": self.username, "password": self.password, "serveraddress": self.host}

    def push(self, repository: str, tag: str) -> None:
        """Push the engine's `<host>/<repository>:<tag>` here, then remove it from
        the engine (so the image is absent locally under that name). Through the
        engine API with the credentials in the request: nothing is stored, as a
        `docker login` would."""
        engine_api.push(f"{self.host}/{repository}", tag, self.auth)
        self.remove_local(f"{self.host}/{repository}:{tag}")

    def push_test_image(self) -> None:
        """Push the test image as `image_ref`."""
        engine_api.tag(TEST_IMAGE, f"{self.host}/{REPOSITORY}", TAG)
        self.push(REPOSITORY, TAG)

    def remove_local(self, ref: str | None = None) -> None:
        """Make sure the engine does not have `ref` (default: the pushed image)."""
        ref = ref or self.image_ref
        engine_api.remove_image(ref)
        if self.has_local(ref):
            raise AssertionError(f"could not remove {ref} from the engine")

    @staticmethod
    def has_local(ref: str) -> bool:
        return engine_api.has_image(ref)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    # -- what it was asked ---------------------------------------------------

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def mark(self) -> int:
        """A point in the log; `requests(since=mark)` lists only what came after."""
        return self.log_path.stat().st_size

    def requests(self, since: int = 0) -> list[Request]:
        with open(self.log_path, "rb") as f:
            f.seek(since)
            text = f.read().decode("utf-8", "replace")
        return [Request(m[1], m[2], int(m[3])) for m in ACCESS_LINE.finditer(text)]

    def manifest_requests(
        self, since: int = 0, repository: str = REPOSITORY, tag: str = TAG
    ) -> list[Request]:
        """Requests for a repository's manifest by tag: one per pull the engine
        makes (Docker asks with HEAD and then fetches the manifest by digest;
        Podman GETs it by tag)."""
        uri = f"/v2/{repository}/manifests/{tag}"
        return [r for r in self.requests(since) if r.method in ("HEAD", "GET") and r.uri == uri]
