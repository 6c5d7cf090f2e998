"""Image references the way Docker reads them: which registry host an image name
names, and the full reference a runner pulls.

`busybox` and `team/job` are Docker Hub; `host:port/team/job`, `host.tld/team/job`
and `localhost/x` name that host. With a container registry, a name without that
registry's host is placed under it.
"""

from __future__ import annotations

DOCKER_HUB = "docker.io"
DOCKER_HUB_AUTH_ADDRESS = "https://index.docker.io/v1/"


def registry_host(image_name: str) -> str:
    """The registry an image name points at (Docker's rule for the first part)."""
    first, sep, _ = image_name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return DOCKER_HUB


def reference(image_name: str, image_tag: str, registry: str | None = None) -> str:
    """`name:tag` to pull, under `registry` (a host) when the name lacks it."""
    name = image_name
    if registry is not None and registry_host(image_name) != registry:
        name = f"{registry}/{image_name}"
    return f"{name}:{image_tag}"


def auth_address(host: str) -> str:
    """The server address Docker expects in X-Registry-Auth for a host."""
    return DOCKER_HUB_AUTH_ADDRESS if host in (DOCKER_HUB, "index.docker.io") else host
