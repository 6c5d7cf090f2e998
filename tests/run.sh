#!/usr/bin/env bash
# The whole test suite, from a clean machine: Python deps, the gate (ruff, mypy),
# two engines (a Docker engine and a rootful Podman service on its own socket), the
# offline test image in each, Debian's chromium and chromedriver (the browser
# tier), then pytest, one worker per engine. The README's test command; .ci/run
# calls it.
#
#   bash tests/run.sh [PYTEST ARGS]          everything: tests/unit, api, integration,
#                                            browser, ...
#   bash tests/run.sh --fast [PYTEST ARGS]   the fast tier: tests/unit and tests/api,
#                                            without Docker (none installed, started or
#                                            asked: the tier's tests cannot reach one)
#
# PYTEST ARGS go to pytest as they are (`-k store`, `-x`, paths); with --fast, paths
# must be inside tests/unit or tests/api, and without any the tier is both.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

log() { echo "tests/run.sh: $*" >&2; }

fast=0
if [ "${1:-}" = "--fast" ]; then
  fast=1
  shift
  paths=0
  for arg in "$@"; do
    case "$arg" in
      tests/unit | tests/unit/* | tests/api | tests/api/*) paths=1 ;;
      tests/*)
        log "--fast runs tests/unit and tests/api only, not $arg (that needs Docker)"
        exit 2
        ;;
    esac
  done
  if [ "$paths" = 0 ]; then
    set -- tests/unit tests/api "$@"
  fi
fi

# 1. Python: a venv of our own so the suite never depends on what the host has.
venv="${RUNNERD_TEST_VENV:-$root/.venv}"
if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv"
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]"

# 2. The gate: lint, format and types, from the venv's pinned tools (pyproject.toml
#    holds their settings). Every check runs, so one run shows every problem; any
#    failure fails the command, before a single test.
gate_failed=()
gate() {
  local name=$1
  shift
  log "gate: $name"
  if ! "$@"; then
    gate_failed+=("$name")
  fi
}
gate "ruff check" "$venv/bin/ruff" check runnerd tests bench
gate "ruff format --check" "$venv/bin/ruff" format --check runnerd tests bench
gate "mypy (strict, runnerd/)" "$venv/bin/mypy"
if [ ${#gate_failed[@]} -gt 0 ]; then
  log "the gate failed: ${gate_failed[*]} (output above)"
  exit 1
fi

# The fast tier stops short of Docker: its tests need no engine, and its conftest
# makes sure they cannot reach one. Its tests mostly wait (on an in-process app, a
# subprocess CLI, a store's lock), so four workers (pytest-xdist) share 2 cores well;
# RUNNERD_FAST_WORKERS=0 runs it in one process.
if [ "$fast" = 1 ]; then
  exec "$venv/bin/python" -m pytest -n "${RUNNERD_FAST_WORKERS:-4}" "$@"
fi

# 3. The engines and tools, from Debian where missing and we are root, in one
#    apt-get: docker.io (dockerd), podman (the second engine: every integration
#    test runs on both) with uidmap (newuidmap, for the rootless tier),
#    busybox-static (the test image), for the registry tests Debian's
#    docker-registry and htpasswd (apache2-utils) (they start the registry
#    themselves, on 127.0.0.1 only), and for the browser tier chromium and
#    chromium-driver.
browser_ok() { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }
registry_tools_ok() { [ -x /usr/bin/docker-registry ] && command -v htpasswd >/dev/null 2>&1; }
missing=()
{ command -v dockerd && command -v docker; } >/dev/null 2>&1 || missing+=(docker.io)
[ -x /bin/busybox ] || missing+=(busybox-static)
registry_tools_ok || missing+=(docker-registry apache2-utils)
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v newuidmap >/dev/null 2>&1 || missing+=(uidmap)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)  # the test swarm removes its bridges
browser_ok || missing+=(chromium chromium-driver)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  log "installing ${missing[*]}"
  apt-get update -qq
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; then
    log "apt-get could not install ${missing[*]} (output above)"
    exit 1
  fi
fi

# 4. A Docker engine that answers. Where none does and we are root, start
#    dockerd without networking: no container gets an address on this machine.
docker_ok() { docker version >/dev/null 2>&1; }
if ! docker_ok; then
  if [ "$(id -u)" != 0 ]; then
    log "no Docker engine answers and we are not root: start one, or set DOCKER_HOST"
    exit 1
  fi
  log "starting dockerd (--bridge=none --iptables=false --ip-masq=false)"
  nohup dockerd --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
    >/var/log/runnerd-test-dockerd.log 2>&1 &
  for _ in $(seq 1 120); do
    docker_ok && break
    sleep 0.5
  done
  if ! docker_ok; then
    log "dockerd did not answer within 60 s; its log:"
    tail -50 /var/log/runnerd-test-dockerd.log >&2 || true
    exit 1
  fi
fi

# 5. A rootful Podman service (its Docker-compatible API) on a socket of its own:
#    tests/conftest.py runs every integration test once per engine and finds this
#    one at RUNNERD_TEST_PODMAN_HOST. One that answers there already is used as it
#    is. RUNNERD_TEST_ENGINES=docker leaves Podman out (a machine without it).
#    "swarm" is the swarm backend on a three-node test swarm of extra dockerds,
#    which the suite starts and removes itself (tests/swarm_cluster.py).
export RUNNERD_TEST_ENGINES="${RUNNERD_TEST_ENGINES:-docker,podman,swarm}"
podman_dir=/run/runnerd-test-podman
podman_log=/var/log/runnerd-test-podman.log
export RUNNERD_TEST_PODMAN_HOST="${RUNNERD_TEST_PODMAN_HOST:-unix://$podman_dir/podman.sock}"
podman_ok() { DOCKER_HOST="$RUNNERD_TEST_PODMAN_HOST" docker version >/dev/null 2>&1; }
if [[ ",$RUNNERD_TEST_ENGINES," == *,podman,* ]] && ! podman_ok; then
  if [ "$(id -u)" != 0 ] || ! command -v podman >/dev/null 2>&1; then
    log "no Podman service answers at $RUNNERD_TEST_PODMAN_HOST and we cannot start one" \
      "(not root, or no podman): start one there, or test on Docker only with" \
      "RUNNERD_TEST_ENGINES=docker"
    exit 1
  fi
  mkdir -p "$podman_dir"
  # Podman gives each container default ulimits of its own (nofile 1048576, ...),
  # and raising a hard limit needs CAP_SYS_RESOURCE, which root lacks in an
  # unprivileged container (a CI runner): every create then fails with "error
  # setting rlimit type 7" (nofile) or "type 6" (nproc). So the containers get
  # limits under ours. Measured (Podman 4.3.1): nofile equal to our hard limit
  # works, but nproc failed above 32768 with a hard limit of 96363, as the podman
  # process caps its own nproc limit (at kernel.pid_max, 32768 there). Half of
  # each, nproc capped at pid_max first: far more than any test needs, and clear
  # of both.
  hard_n=$(ulimit -Hn)
  [ "$hard_n" = unlimited ] && hard_n=$(cat /proc/sys/fs/nr_open)
  hard_u=$(ulimit -Hu)
  pid_max=$(cat /proc/sys/kernel/pid_max)
  if [ "$hard_u" = unlimited ] || [ "$hard_u" -gt "$pid_max" ]; then
    hard_u=$pid_max
  fi
  {
    echo "# Written by tests/run.sh for its Podman service (see there): limits under"
    echo "# the hard limits it had (nofile $(ulimit -Hn), nproc $(ulimit -Hu), pid_max $pid_max)."
    echo "[containers]"
    echo "default_ulimits = [\"nofile=$((hard_n / 2)):$((hard_n / 2))\", \"nproc=$((hard_u / 2)):$((hard_u / 2))\"]"
    echo "[engine]"
    echo "# The tests read the engine's events since they began (a container started"
    echo "# twice is a run executed twice); at its default 1m Podman rotates its events"
    echo "# file several times a suite, dropping the older half, events a test may need."
    echo "events_logfile_max_size = \"256m\""
  } >"$podman_dir/containers.conf"
  # The registry tests push to and pull from a plain-HTTP registry on
  # 127.0.0.1:<a free port>. dockerd treats 127.0.0.0/8 as insecure; Podman
  # reads registries.conf, whose [[registry]] location "127.0.0.1" also matches
  # "127.0.0.1:<port>/..." (containers/image, sysregistriesv2 refMatchingPrefix:
  # the prefix may be followed by ':'), so one entry covers every port. Short
  # names resolve to docker.io, as on Docker.
  {
    echo "# Written by tests/run.sh for its Podman service (see there)."
    echo 'unqualified-search-registries = ["docker.io"]'
    echo '[[registry]]'
    echo 'location = "127.0.0.1"'
    echo 'insecure = true'
  } >"$podman_dir/registries.conf"
  log "starting podman system service at $RUNNERD_TEST_PODMAN_HOST (log: $podman_log)"
  CONTAINERS_CONF="$podman_dir/containers.conf" \
    CONTAINERS_REGISTRIES_CONF="$podman_dir/registries.conf" \
    nohup podman system service --time=0 "$RUNNERD_TEST_PODMAN_HOST" >"$podman_log" 2>&1 &
  for _ in $(seq 1 120); do
    podman_ok && break
    sleep 0.5
  done
  if ! podman_ok; then
    log "the Podman service did not answer within 60 s; its log:"
    tail -50 "$podman_log" >&2 || true
    exit 1
  fi
fi

# 6. The test image, built offline and the same on each engine: a tarball of
#    busybox-static with its applets, imported where it is missing. Into Podman
#    through its own API (podman --url): it names the image
#    localhost/runnerd-test/busybox:latest, which the short name finds.
export RUNNERD_TEST_IMAGE="${RUNNERD_TEST_IMAGE:-runnerd-test/busybox:latest}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
import_test_image() { # the engine's DOCKER_HOST, then the command that imports into it
  local host=$1
  shift
  if DOCKER_HOST="$host" docker image inspect "$RUNNERD_TEST_IMAGE" >/dev/null 2>&1; then
    return
  fi
  if [ ! -f "$tmp/rootfs.tar" ]; then
    log "building $RUNNERD_TEST_IMAGE from /bin/busybox"
    mkdir -p "$tmp/rootfs/bin" "$tmp/rootfs/tmp" "$tmp/rootfs/etc"
    cp /bin/busybox "$tmp/rootfs/bin/busybox"
    for applet in $("$tmp/rootfs/bin/busybox" --list); do
      [ "$applet" = busybox ] || ln -sf busybox "$tmp/rootfs/bin/$applet"
    done
    echo 'root:x:0:0:root:/root:/bin/sh' >"$tmp/rootfs/etc/passwd"
    tar -C "$tmp/rootfs" -cf "$tmp/rootfs.tar" .
  fi
  log "importing $RUNNERD_TEST_IMAGE into $host"
  "$@" import -c 'CMD ["sh"]' -c 'ENV PATH=/bin' "$tmp/rootfs.tar" "$RUNNERD_TEST_IMAGE" >/dev/null
}
import_test_image "${DOCKER_HOST:-unix:///var/run/docker.sock}" docker
if [[ ",$RUNNERD_TEST_ENGINES," == *,podman,* ]]; then
  import_test_image "$RUNNERD_TEST_PODMAN_HOST" podman --url "$RUNNERD_TEST_PODMAN_HOST"
fi

# 7. The browser tier (tests/browser) drives Debian's chromium through its
#    chromedriver, never a downloaded browser (step 3 installs them as root);
#    without them, say so and stop (the tier would fail).
if ! browser_ok; then
  log "/usr/bin/chromium or /usr/bin/chromedriver is missing and cannot be installed here" \
    "(not root, or no apt-get): install Debian's chromium and chromium-driver"
  exit 1
fi

# 8. The suite, in pytest-xdist workers (--dist loadgroup): tests/conftest.py puts
#    all of an engine's tests in one xdist group, so Docker's, Podman's and the
#    swarm's run side by side, each engine seeing one test of ours at a time; the
#    tests with no engine fill in wherever a worker is free. One worker per engine
#    (three on 2 cores: the engine tests mostly wait on containers and polls).
#    RUNNERD_TEST_WORKERS=0 runs it all in one process (about twice as long).
engines=$(tr ',' '\n' <<<"$RUNNERD_TEST_ENGINES" | grep -c .)
workers="${RUNNERD_TEST_WORKERS:-$((engines > 2 ? engines : 2))}"
if [ "$workers" = 0 ]; then
  exec "$venv/bin/python" -m pytest "$@"
fi
exec "$venv/bin/python" -m pytest -n "$workers" --dist loadgroup "$@"
