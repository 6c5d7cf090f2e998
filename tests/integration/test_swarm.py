"""The swarm backend on a real three-node swarm (tests/swarm_cluster.py): where runs
land (spread, placement, nowhere), what a killed node or a killed daemon does to a
run, and that nothing of a run is left on the swarm after it. The guarantees the
docker backend has are proven on the swarm by the tests marked `swarm` elsewhere
(test_execution, test_cancel_and_limits); these are the swarm's own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from conftest import TEST_IMAGE, Api, Daemon, wait_until
from registry import REPOSITORY, TAG, Registry

from tests.swarm_cluster import SwarmCluster

pytestmark = pytest.mark.swarm_only

NODES = {"runnerd-node-1", "runnerd-node-2", "runnerd-node-3"}
LARGE = """
[instance_types.small]
cpu = 0.25
mem = 64

[instance_types.large]
cpu = 0.5
mem = 128
placement = ["node.labels.size==large"]
"""


def api_for(http: aiohttp.ClientSession, daemon: Daemon) -> Api:
    return Api(http, daemon.url, daemon.key)


async def runs_of(api: Api, runner_id: str) -> list[dict[str, Any]]:
    status, data = await api.get(f"/v1/runners/{runner_id}/runs")
    assert status == 200, data
    return list(data["runs"])


async def nothing_left(cluster: SwarmCluster, daemon: Daemon) -> None:
    """No service of the daemon's on the swarm, no container of it on any node."""
    daemon_id = daemon.daemon_id()

    async def gone() -> bool:
        services = [
            s
            for s in cluster.services()
            if (s["Spec"].get("Labels") or {}).get("io.runnerd.daemon") == daemon_id
        ]
        return not services and not any(node_containers(cluster, i, daemon_id) for i in (1, 2, 3))

    await wait_until(gone, timeout=30, what="the daemon's services and containers to go")


def node_containers(cluster: SwarmCluster, index: int, daemon_id: str) -> list[Any]:
    status, found = cluster.node(index).api(
        "GET",
        "/containers/json",
        {"all": "1", "filters": f'{{"label": ["io.runnerd.daemon={daemon_id}"]}}'},
    )
    assert status == 200, found
    return list(found)


async def test_runs_spread_over_the_nodes_and_each_names_the_node_it_ran_on(
    start_daemon: Callable[..., Daemon],
    http: aiohttp.ClientSession,
    swarm_cluster: SwarmCluster,
) -> None:
    daemon = start_daemon()
    api = api_for(http, daemon)
    runner = await api.create_runner(run_command="sleep 1; echo done")
    runs = [await api.trigger(runner["id"]) for _ in range(8)]
    done = [await api.wait_done(runner["id"], r["id"], timeout=90) for r in runs]
    assert all(d["status"] == "succeeded" for d in done), done
    nodes = [d["node"] for d in done]
    assert set(nodes) <= NODES, nodes
    assert len(set(nodes)) >= 2, f"every run on one node: {nodes}"
    for d in done:
        assert await api.logs(runner["id"], d["id"]) == b"done\n"
    await nothing_left(swarm_cluster, daemon)


async def test_an_instance_types_placement_puts_its_runs_on_the_nodes_it_names(
    start_daemon: Callable[..., Daemon],
    http: aiohttp.ClientSession,
    swarm_cluster: SwarmCluster,
) -> None:
    daemon = start_daemon(LARGE, top_level='default_instance_type = "small"')
    api = api_for(http, daemon)
    large = await api.create_runner(run_command="echo big", instance_type="large")
    runs = [await api.trigger(large["id"]) for _ in range(4)]
    done = [await api.wait_done(large["id"], r["id"], timeout=60) for r in runs]
    assert [(d["status"], d["node"]) for d in done] == [("succeeded", "runnerd-node-3")] * 4


async def test_a_run_no_node_can_take_fails_to_start_with_the_swarms_reason(
    start_daemon: Callable[..., Daemon],
    http: aiohttp.ClientSession,
    swarm_cluster: SwarmCluster,
) -> None:
    daemon = start_daemon('[swarm]\nplacement = ["node.labels.nosuch==yes"]\n')
    api = api_for(http, daemon)
    runner = await api.create_runner(run_command="echo never")
    run = await api.trigger(runner["id"])
    done = await api.wait_done(runner["id"], run["id"], timeout=60)
    assert (done["status"], done["failure_reason"]) == ("failed", "start_failed"), done
    assert "no suitable node" in done["error"], done["error"]
    assert "[swarm] placement" in done["error"], done["error"]
    await nothing_left(swarm_cluster, daemon)
    # The daemon goes on: a run that fits still runs.
    daemon.stop()
    daemon2 = start_daemon(name="fits")
    api2 = api_for(http, daemon2)
    ok = await api2.create_runner(run_command="echo fits")
    ok_run = await api2.trigger(ok["id"])
    assert (await api2.wait_done(ok["id"], ok_run["id"], timeout=60))["status"] == "succeeded"


async def test_a_killed_worker_loses_its_run_and_the_retry_runs_on_another_node(
    start_daemon: Callable[..., Daemon],
    http: aiohttp.ClientSession,
    swarm_cluster: SwarmCluster,
) -> None:
    # Workers only, so the node killed is never the manager.
    daemon = start_daemon('[swarm]\nplacement = ["node.role==worker"]\n')
    api = api_for(http, daemon)
    runner = await api.create_runner(
        run_command="echo started; sleep 6; echo finished",
        retry_policy={"max_retries": 1, "backoff_seconds": 1},
    )
    first = await api.trigger(runner["id"])
    running = await api.wait_status(runner["id"], first["id"], "running", timeout=60)

    async def node_known() -> str | None:
        return (await api.run(runner["id"], first["id"]))["node"]

    node = await wait_until(node_known, timeout=30, what="the run's node")

    async def started_logged() -> bool:
        return await api.logs(runner["id"], first["id"]) == b"started\n"

    await wait_until(started_logged, timeout=30, what="the run's first line in its log")
    index = int(node.rsplit("-", 1)[1])
    assert index in (2, 3), node
    swarm_cluster.kill_node(index)
    try:
        lost = await api.wait_done(runner["id"], running["id"], timeout=90)
        assert (lost["status"], lost["failure_reason"]) == ("failed", "lost"), lost
        assert node in lost["error"], lost["error"]
        # What it wrote before is kept; that more may have come is said, not hidden.
        assert lost["log_incomplete"] is True, lost
        lost_log = await api.logs(runner["id"], lost["id"])
        assert lost_log.startswith(b"started\n"), lost_log
        assert b"this log may be incomplete: the run was lost" in lost_log, lost_log

        async def retried() -> dict[str, Any] | None:
            runs = await runs_of(api, runner["id"])
            return runs[0] if len(runs) == 2 and runs[0]["status"] == "succeeded" else None

        retry = await wait_until(retried, timeout=90, what="the retry to succeed")
        assert retry["retry_of"] == first["id"]
        assert retry["node"] not in (None, node), retry
        assert await api.logs(runner["id"], retry["id"]) == b"started\nfinished\n"
    finally:
        swarm_cluster.start_node(index)


async def test_a_daemon_killed_mid_run_reattaches_and_records_the_real_exit_code(
    start_daemon: Callable[..., Daemon],
    http: aiohttp.ClientSession,
    swarm_cluster: SwarmCluster,
) -> None:
    daemon = start_daemon()
    api = api_for(http, daemon)
    runner = await api.create_runner(run_command="echo a; sleep 2; echo b; exit 5")
    run = await api.trigger(runner["id"])

    async def a_logged() -> bool:
        return await api.logs(runner["id"], run["id"]) == b"a\n"

    await wait_until(a_logged, timeout=60, what="the run's first line")
    daemon.kill()
    daemon.start()
    api = api_for(http, daemon)
    done = await api.wait_done(runner["id"], run["id"], timeout=60)
    assert (done["status"], done["exit_code"], done["failure_reason"]) == (
        "failed",
        5,
        "nonzero_exit",
    ), done
    assert await api.logs(runner["id"], run["id"]) == b"a\nb\n"
    await nothing_left(swarm_cluster, daemon)


async def test_a_private_image_is_pulled_by_the_node_that_runs_it_with_the_registrys_credentials(
    start_daemon: Callable[..., Daemon],
    http: aiohttp.ClientSession,
    swarm_cluster: SwarmCluster,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # The image is pushed from the manager and is on no worker. Node 2 is restarted
    # as a node of a real swarm is (the test swarm's nodes never pull: see
    # tests/swarm_cluster.py) and the run placed there: it runs only if node 2
    # pulled the image, and the registry lets nobody pull without the credentials.
    registry = Registry(tmp_path_factory.mktemp("registry"))
    registry.start()
    node2 = swarm_cluster.node(2)
    try:
        registry.push_test_image()
        node2.prefer_offline = False
        swarm_cluster.stop_node(2)
        swarm_cluster.start_node(2)
        daemon = start_daemon(f'[swarm]\nplacement = ["node.id=={node2.node_id}"]\n')
        api = api_for(http, daemon)
        status, data = await api.post(
            "/v1/container_registries",
            {
                "name": "private",
                "host": registry.host,
                "username": registry.username,
                "password": registry.password,
            },
        )
        assert status == 200, data
        runner = await api.create_runner(
            image_name=REPOSITORY,
            image_tag=TAG,
            run_command="echo hello from the private image",
            container_registry_id=data["container_registry"]["id"],
        )
        mark = registry.mark()
        run = await api.trigger(runner["id"])
        done = await api.wait_done(runner["id"], run["id"], timeout=90)
        assert done["status"] == "succeeded", done
        assert done["node"] == "runnerd-node-2", done
        assert await api.logs(runner["id"], run["id"]) == b"hello from the private image\n"
        manifests = [r for r in registry.requests(mark) if "/manifests/" in r.uri]
        assert len(manifests) >= 2 and all(r.status == 200 for r in manifests), manifests
        assert registry.password not in daemon.log_text()
        # Pinned by digest: the node's copy is the registry's, by that digest.
        status, images = node2.api("GET", "/images/json")
        assert status == 200, images
        digests = [d for i in images for d in i.get("RepoDigests") or []]
        assert any(d.startswith(f"{registry.host}/{REPOSITORY}@sha256:") for d in digests), images
    finally:
        registry.stop()
        if not node2.prefer_offline:
            node2.prefer_offline = True
            swarm_cluster.stop_node(2)
            swarm_cluster.start_node(2)
        # The registry's names go, by name: on the manager the pushed image is the
        # test image itself (the same id), which every later test needs.
        for node in swarm_cluster.nodes:
            for image in node.api("GET", "/images/json")[1]:
                names = (image.get("RepoTags") or []) + (image.get("RepoDigests") or [])
                for name in names:
                    if name.startswith(registry.host):
                        node.api("DELETE", f"/images/{quote(name, safe='')}")
            assert node.api("GET", f"/images/{quote(TEST_IMAGE, safe='')}/json")[0] == 200


async def test_a_manager_that_restarts_mid_run_is_waited_for_and_the_run_ends_as_it_did(
    start_daemon: Callable[..., Daemon],
    http: aiohttp.ClientSession,
    swarm_cluster: SwarmCluster,
) -> None:
    # On a worker, so the manager's dockerd stopping does not stop the run itself.
    daemon = start_daemon('[swarm]\nplacement = ["node.role==worker"]\n')
    api = api_for(http, daemon)
    runner = await api.create_runner(run_command="echo before; sleep 4; echo after; exit 3")
    run = await api.trigger(runner["id"])

    async def before_logged() -> bool:
        return await api.logs(runner["id"], run["id"]) == b"before\n"

    await wait_until(before_logged, timeout=60, what="the run's first line")
    swarm_cluster.stop_node(1)
    try:
        # The engine does not answer: the run is neither lost nor finished meanwhile.
        assert (await api.run(runner["id"], run["id"]))["status"] == "running"

        async def waiting_logged() -> bool:
            return "lost touch with the engine" in daemon.log_text()

        await wait_until(waiting_logged, timeout=30, what="the daemon to wait for the engine")
    finally:
        swarm_cluster.start_node(1)
    done = await api.wait_done(runner["id"], run["id"], timeout=120)
    assert (done["status"], done["exit_code"], done["failure_reason"]) == (
        "failed",
        3,
        "nonzero_exit",
    ), done
    assert await api.logs(runner["id"], run["id"]) == b"before\nafter\n"
    await nothing_left(swarm_cluster, daemon)


async def test_a_daemon_pointed_at_a_worker_keeps_runs_pending_saying_why_until_given_a_manager(
    start_daemon: Callable[..., Daemon],
    http: aiohttp.ClientSession,
    swarm_cluster: SwarmCluster,
) -> None:
    # A worker answers every swarm call with a 503: no run can start there, and
    # none may be failed for it (the operator's fix is the config, or a promote).
    docker = '[docker]\nurl = "{}"\nnetwork = "bridge"\nstop_grace_seconds = 1\n'
    daemon = start_daemon(docker.format(swarm_cluster.node(2).host))
    api = api_for(http, daemon)
    runner = await api.create_runner(run_command="echo ran")
    run = await api.trigger(runner["id"])

    async def unhealthy_saying_why() -> dict[str, Any] | None:
        status, body = await api.get("/healthz")
        return body if status == 503 and "not a swarm manager" in body["error"] else None

    health = await wait_until(unhealthy_saying_why, timeout=30, what="/healthz to say why")
    assert "[docker] url" in health["error"], health
    assert "runs stay pending meanwhile" in daemon.log_text()

    async def put_off() -> bool:  # the scheduler claims nothing until it can reconcile
        return "cannot reconcile with the engine: the engine at [docker] url" in daemon.log_text()

    await wait_until(put_off, timeout=30, what="the scheduler to wait for a manager")
    assert (await api.run(runner["id"], run["id"]))["status"] == "pending"
    labels = [s["Spec"].get("Labels") or {} for s in swarm_cluster.services()]
    assert not [x for x in labels if x.get("io.runnerd.daemon") == daemon.daemon_id()]
    # Pointed at the manager, the same daemon runs it: nothing was lost meanwhile.
    daemon.stop()
    daemon.config_path.write_text(
        daemon.config_path.read_text().replace(
            swarm_cluster.node(2).host, swarm_cluster.node(1).host
        )
    )
    daemon.start()
    api = api_for(http, daemon)
    done = await api.wait_done(runner["id"], run["id"], timeout=60)
    assert done["status"] == "succeeded", done
    assert await api.logs(runner["id"], run["id"]) == b"ran\n"
