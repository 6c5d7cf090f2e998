"""The swarm backend without a swarm: its config, the service spec a run becomes,
and how a task's state is read. The real swarm: tests/integration/test_swarm.py
and the tests marked `swarm`."""

from __future__ import annotations

from typing import Any

import pytest

from runnerd.config import ConfigError, from_dict
from runnerd.daemon import make_engine
from runnerd.engine import ContainerSpec, Engine, RegistryCredentials
from runnerd.swarm import SwarmEngine, _created, _never_ran

SWARM = {"executor": {"backend": "swarm"}, "docker": {"network": "bridge"}}


def spec(**over: Any) -> ContainerSpec:
    fields: dict[str, Any] = {
        "name": "runnerd-r1",
        "image": "job:1",
        "cmd": ["sh", "-c", "echo hi"],
        "entrypoint": None,
        "env": [("A", "1")],
        "cpu": 0.5,
        "mem_mib": 64,
        "pids": 32,
        "network": "bridge",
        "log_file_bytes": 1024,
        "labels": {"io.runnerd.run": "r1"},
        "instance_type": "large",
    }
    return ContainerSpec(**{**fields, **over})


def test_the_default_backend_is_docker_and_swarm_is_chosen_by_executor_backend() -> None:
    assert from_dict({}).executor.backend == "docker"
    assert type(make_engine(from_dict({}))) is Engine
    config = from_dict(
        {
            **SWARM,
            "swarm": {"placement": ["node.labels.runnerd==yes"]},
            "instance_types": {
                "large": {"cpu": 2, "mem": 2048, "placement": ["node.labels.size == large"]},
                "small": {"cpu": 1, "mem": 512},
            },
            "default_instance_type": "small",
        }
    )
    engine = make_engine(config)
    assert isinstance(engine, SwarmEngine)
    assert engine.placement == ("node.labels.runnerd==yes",)
    assert engine.instance_placement == {"large": ("node.labels.size == large",)}


@pytest.mark.parametrize(
    ("data", "key", "says"),
    [
        ({"executor": {"backend": "k8s"}}, "executor.backend", "'docker', 'swarm'"),
        (
            {"executor": {"backend": "swarm"}, "docker": {"network": "none"}},
            "docker.network",
            '"none" is not available',
        ),
        (
            {**SWARM, "swarm": {"placement": "node.role==worker"}},
            "swarm.placement",
            "must be a list",
        ),
        (
            {**SWARM, "swarm": {"placement": ["size=large"]}},
            "swarm.placement",
            "is not a Swarm constraint",
        ),
        (
            {"swarm": {"placement": ["node.role==worker"]}},
            "swarm.placement",
            "Swarm backend only",
        ),
        (
            {
                "instance_types": {
                    "big": {"cpu": 1, "mem": 64, "placement": ["node.role==worker"]}
                },
                "default_instance_type": "big",
            },
            "instance_types.big.placement",
            "Swarm backend only",
        ),
    ],
)
def test_bad_swarm_config_names_its_key_and_what_is_wrong(
    data: dict[str, Any], key: str, says: str
) -> None:
    with pytest.raises(ConfigError) as e:
        from_dict(data)
    assert str(e.value).startswith(f"{key}:"), str(e.value)
    assert says in str(e.value), str(e.value)


def test_a_run_becomes_a_service_of_no_replica_yet_that_never_restarts_with_its_limits() -> None:
    engine = SwarmEngine(
        placement=("node.labels.runnerd==yes",),
        instance_placement={"large": ("node.labels.size==large",)},
        stop_grace_seconds=2.5,
    )
    service = engine._service_spec(spec(), "job:1@sha256:abc")
    assert service["Name"] == "runnerd-r1"
    assert service["Labels"] == {"io.runnerd.run": "r1"}
    assert service["Mode"] == {"Replicated": {"Replicas": 0}}  # start makes it one
    template = service["TaskTemplate"]
    assert template["RestartPolicy"] == {"Condition": "none", "MaxAttempts": 0}
    assert template["Resources"] == {
        "Limits": {"NanoCPUs": 500_000_000, "MemoryBytes": 64 * 1024 * 1024, "Pids": 32}
    }
    assert template["Placement"] == {
        "Constraints": ["node.labels.runnerd==yes", "node.labels.size==large"]
    }
    assert template["Networks"] == [{"Target": "bridge"}]
    container = template["ContainerSpec"]
    assert container["Image"] == "job:1@sha256:abc"
    assert container["Env"] == ["A=1"]
    assert container["StopGracePeriod"] == 2_500_000_000
    # Swarm's Command is the image's entrypoint: a command alone goes to Args.
    assert "Command" not in container and container["Args"] == ["sh", "-c", "echo hi"]


def test_an_entrypoint_becomes_the_services_command_and_the_command_its_args() -> None:
    service = SwarmEngine()._service_spec(spec(entrypoint=["/bin/run"], cmd=["x"]), "job:1")
    container = service["TaskTemplate"]["ContainerSpec"]
    assert (container["Command"], container["Args"]) == (["/bin/run"], ["x"])


def test_the_spec_never_shows_the_registry_password() -> None:
    shown = repr(spec(credentials=RegistryCredentials("r.example", "me", "s3cret")))
    assert "s3cret" not in shown and "me" in shown


def test_tasks_sort_by_creation_time_whatever_digits_go_left_of_the_fraction() -> None:
    tasks = [
        {"ID": "b", "CreatedAt": "2026-12-03T12:42:10.5Z"},
        {"ID": "a", "CreatedAt": "2026-12-03T12:42:10.49Z"},
        {"ID": "c", "CreatedAt": "2026-12-03T12:42:10.51Z"},
    ]
    assert [t["ID"] for t in sorted(tasks, key=_created)] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("err", "never_ran"),
    [
        ("task: non-zero exit (3)", False),
        ("", False),
        ('starting container failed: exec: "nope": executable file not found', True),
        ("No such image: job:1", True),
    ],
)
def test_a_failed_task_never_ran_only_when_the_swarm_says_it_could_not_start_it(
    err: str, never_ran: bool
) -> None:
    assert _never_ran({"State": "failed", "Err": err}) is never_ran
