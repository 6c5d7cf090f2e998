"""Image references: the registry host in an image name, read as Docker reads it, and
the reference runnerd pulls."""

from __future__ import annotations

import pytest

from runnerd import images

# -- image references ------------------------------------------------------------


@pytest.mark.parametrize(
    "name, host",
    [
        ("busybox", "docker.io"),
        ("library/busybox", "docker.io"),
        ("team/job", "docker.io"),
        ("team/sub/job", "docker.io"),
        ("registry.example.com/team/job", "registry.example.com"),
        ("registry.example.com:5000/team/job", "registry.example.com:5000"),
        ("127.0.0.1:5000/team/job", "127.0.0.1:5000"),
        ("localhost/job", "localhost"),
        ("localhost:5000/job", "localhost:5000"),
        ("ghcr.io/owner/job", "ghcr.io"),
    ],
)
def test_registry_host_is_parsed_from_the_image_name_like_docker(name: str, host: str) -> None:
    assert images.registry_host(name) == host


def test_reference_puts_a_hostless_name_under_the_registry_and_never_doubles_the_host() -> None:
    assert images.reference("team/job", "v1", "127.0.0.1:5000") == "127.0.0.1:5000/team/job:v1"
    assert (
        images.reference("127.0.0.1:5000/team/job", "v1", "127.0.0.1:5000")
        == "127.0.0.1:5000/team/job:v1"
    )
    assert images.reference("team/job", "v1") == "team/job:v1"
    assert images.reference("ghcr.io/o/job", "2", None) == "ghcr.io/o/job:2"
