"""The rootless tier: runnerd as an unprivileged user against that user's own
rootless `podman system service`, as a self-hoster runs it without root.

Set up once per session as root (see podman_user.py): the test user (made if
missing), its XDG_RUNTIME_DIR, a store and config of the session's own, the test
image imported into it, the service answering on
$XDG_RUNTIME_DIR/podman/podman.sock, and one runnerd process run as the user with a
key made as the user. Torn down at the end: containers removed, the service and
Podman's pause process ended, the session's files removed; the user stays.

It cannot run without root (or without podman and uidmap): that is a failure of
every test here, never a skip. The README's test command runs it as root.
"""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import pytest
from conftest import Api

from .podman_user import Session, SetupFailed, UserDaemon, ensure_user, new_session, user_daemon


@pytest.fixture(scope="session")
def rootless_engine() -> Iterator[Session]:
    try:
        session = new_session(ensure_user())
    except SetupFailed as e:
        pytest.fail(str(e))
    try:
        session.start()
    except SetupFailed as e:
        problems = session.stop()
        pytest.fail(f"{e}{'; then: ' + '; '.join(problems) if problems else ''}")
    yield session
    problems = session.stop()
    assert not problems, f"the rootless engine's teardown: {'; '.join(problems)}"


@pytest.fixture(scope="session")
def rootless_daemon(rootless_engine: Session) -> Iterator[UserDaemon]:
    daemon = user_daemon(rootless_engine)
    yield daemon
    if daemon.alive():
        assert daemon.stop() == 0, daemon.log_tail()


@pytest.fixture
def rootless_api(http: aiohttp.ClientSession, rootless_daemon: UserDaemon) -> Api:
    return Api(http, rootless_daemon.url, rootless_daemon.key)
