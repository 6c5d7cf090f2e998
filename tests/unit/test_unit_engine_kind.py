"""engine_kind: which engine answers, from what its /version and /info say.

The samples are real answers, trimmed to the fields that matter here (and a few
that show which engine it was), captured on 2026-12-02 on the test machine
(Debian 12, cgroup v1) from: Debian's dockerd 20.10.24; Debian's Podman 4.3.1 as
root (`podman system service`, the suite's rootful engine); the same Podman as an
unprivileged user (tests/rootless' engine). Podman's Components carry Details,
left out here.
"""

from __future__ import annotations

from typing import Any

from runnerd.engine import DOCKER, LIMITS, PODMAN, engine_kind

DOCKER_VERSION: dict[str, Any] = {
    "Platform": {"Name": ""},
    "Components": [
        {"Name": "Engine", "Version": "20.10.24+dfsg1"},
        {"Name": "containerd", "Version": "1.6.20~ds1"},
        {"Name": "runc", "Version": "1.1.5+ds1"},
        {"Name": "docker-init", "Version": "0.19.0"},
    ],
    "Version": "20.10.24+dfsg1",
    "ApiVersion": "1.41",
    "MinAPIVersion": "1.12",
    "Os": "linux",
    "Arch": "amd64",
}
DOCKER_INFO: dict[str, Any] = {
    "Driver": "overlay2",
    "CgroupDriver": "cgroupfs",
    "CgroupVersion": "1",
    "MemoryLimit": True,
    "SwapLimit": True,
    "CpuCfsPeriod": True,
    "CpuCfsQuota": True,
    "PidsLimit": True,
    "OperatingSystem": "Debian GNU/Linux 12 (bookworm)",
    "ServerVersion": "20.10.24+dfsg1",
    "SecurityOptions": ["name=seccomp,profile=default"],
    "DockerRootDir": "/var/lib/docker",
    "LoggingDriver": "json-file",
}

# Rootful and rootless Podman answer /version alike.
PODMAN_VERSION: dict[str, Any] = {
    "Platform": {"Name": "linux/amd64/debian-12"},
    "Components": [
        {"Name": "Podman Engine", "Version": "4.3.1"},
        {"Name": "Conmon", "Version": "conmon version 2.1.6, commit: unknown"},
        {
            "Name": "OCI Runtime (runc)",
            "Version": "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev\n"
            "go: go1.19.8\nlibseccomp: 2.5.4",
        },
    ],
    "Version": "4.3.1",
    "ApiVersion": "1.41",
    "MinAPIVersion": "1.24",
    "Os": "linux",
    "Arch": "amd64",
}
PODMAN_ROOTFUL_INFO: dict[str, Any] = {
    "Driver": "overlay",
    "CgroupDriver": "cgroupfs",
    "CgroupVersion": "1",
    "MemoryLimit": True,
    "SwapLimit": True,
    "CpuCfsPeriod": True,
    "CpuCfsQuota": True,
    "PidsLimit": True,
    "OperatingSystem": "debian",
    "ServerVersion": "4.3.1",
    "SecurityOptions": ["name=seccomp,profile=default"],
    "Rootless": False,
    "DockerRootDir": "/var/lib/containers/storage",
    "LoggingDriver": "",
}
# Rootless Podman 4.3 says so only in its own "Rootless" field: its SecurityOptions
# carry no "name=rootless", and it reports every limit flag true on cgroup v1,
# where it applies none of them.
PODMAN_ROOTLESS_INFO: dict[str, Any] = {
    **PODMAN_ROOTFUL_INFO,
    "Rootless": True,
    "DockerRootDir": "/home/runnerd-rootless/.local/share/containers/storage",
}


def test_docker_20_10_is_docker_rootful_with_every_limit_applied() -> None:
    kind = engine_kind(DOCKER_VERSION, DOCKER_INFO)
    assert kind.name == DOCKER
    assert kind.version == "20.10.24+dfsg1"
    assert kind.api_version == "1.41"
    assert not kind.rootless
    assert kind.cgroup_version == "1"
    assert kind.unenforced_limits == ()
    assert kind.exact_follow and not kind.joins_line_pieces and kind.log_driver == "local"
    assert kind.label == "Docker 20.10.24+dfsg1"


def test_rootful_podman_4_3_is_podman_with_every_limit_applied() -> None:
    kind = engine_kind(PODMAN_VERSION, PODMAN_ROOTFUL_INFO)
    assert kind.name == PODMAN
    assert kind.version == "4.3.1"
    assert kind.api_version == "1.41"
    assert not kind.rootless
    assert kind.cgroup_version == "1"
    assert kind.unenforced_limits == ()
    assert not kind.exact_follow and kind.joins_line_pieces and kind.log_driver == "k8s-file"
    assert kind.label == "Podman 4.3.1"


def test_rootless_podman_4_3_on_cgroup_v1_is_rootless_and_applies_no_limit() -> None:
    kind = engine_kind(PODMAN_VERSION, PODMAN_ROOTLESS_INFO)
    assert kind.name == PODMAN
    assert kind.rootless
    assert kind.cgroup_version == "1"
    assert kind.unenforced_limits == LIMITS == ("cpu", "memory", "pids")
    assert kind.label == "Podman 4.3.1 (rootless)"
    assert kind.as_json() == {
        "name": "podman",
        "version": "4.3.1",
        "api_version": "1.41",
        "rootless": True,
        "cgroup_version": "1",
        "unenforced_limits": ["cpu", "memory", "pids"],
    }


def test_rootless_podman_on_cgroup_v2_lacks_only_the_controllers_it_says_it_lacks() -> None:
    # Not captured here (this host is cgroup v1): the rootless sample on a cgroup v2
    # host whose user slice has no cpu controller delegated (systemd's default
    # delegates memory and pids only).
    info = {**PODMAN_ROOTLESS_INFO, "CgroupVersion": "2", "CpuCfsQuota": False}
    kind = engine_kind(PODMAN_VERSION, info)
    assert kind.rootless
    assert kind.unenforced_limits == ("cpu",)


def test_rootless_docker_says_so_in_its_security_options() -> None:
    # Not captured here: the form Docker's rootless mode documents for `docker info`
    # ("Security Options: seccomp Profile: builtin, rootless, cgroupns"), on cgroup v1.
    info = {
        **DOCKER_INFO,
        "SecurityOptions": ["name=seccomp,profile=builtin", "name=rootless", "name=cgroupns"],
    }
    kind = engine_kind(DOCKER_VERSION, info)
    assert kind.name == DOCKER
    assert kind.rootless
    assert kind.unenforced_limits == LIMITS
    assert kind.label == "Docker 20.10.24+dfsg1 (rootless)"


def test_the_rootful_samples_are_not_taken_for_rootless() -> None:
    # "Rootless": false (Podman) and no such field (Docker) both mean rootful.
    assert not engine_kind(PODMAN_VERSION, PODMAN_ROOTFUL_INFO).rootless
    assert "Rootless" not in DOCKER_INFO
    assert not engine_kind(DOCKER_VERSION, DOCKER_INFO).rootless
