#!/usr/bin/env bash
# The whole test suite, from a clean machine: Python deps, the gate (ruff, mypy),
# a Docker engine, the offline test image, Debian's chromium and chromedriver (the
# browser tier), then pytest. The README's test command; .ci/run calls it.
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

# 3. A Docker engine that answers. Where none does and we are root, install
#    Debian's docker.io and start dockerd without networking: no container gets
#    an address on this machine. The registry tests also need Debian's
#    docker-registry and htpasswd (apache2-utils); they start the registry
#    themselves, on 127.0.0.1 only.
docker_ok() { docker version >/dev/null 2>&1; }
registry_tools_ok() { [ -x /usr/bin/docker-registry ] && command -v htpasswd >/dev/null 2>&1; }
if ! command -v docker >/dev/null 2>&1 || ! command -v dockerd >/dev/null 2>&1 || ! command -v busybox >/dev/null 2>&1 || ! registry_tools_ok; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    if ! command -v dockerd >/dev/null 2>&1 || ! [ -x /bin/busybox ] || ! registry_tools_ok; then
      log "installing docker.io, busybox-static, docker-registry and apache2-utils"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io busybox-static \
        docker-registry apache2-utils >/dev/null
    fi
  fi
fi
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

# 4. The test image, built offline: a tarball of busybox-static with its applets.
export RUNNERD_TEST_IMAGE="${RUNNERD_TEST_IMAGE:-runnerd-test/busybox:latest}"
if ! docker image inspect "$RUNNERD_TEST_IMAGE" >/dev/null 2>&1; then
  log "building $RUNNERD_TEST_IMAGE from /bin/busybox"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/rootfs/bin" "$tmp/rootfs/tmp" "$tmp/rootfs/etc"
  cp /bin/busybox "$tmp/rootfs/bin/busybox"
  for applet in $("$tmp/rootfs/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$tmp/rootfs/bin/$applet"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' >"$tmp/rootfs/etc/passwd"
  tar -C "$tmp/rootfs" -cf "$tmp/rootfs.tar" .
  docker import -c 'CMD ["sh"]' -c 'ENV PATH=/bin' "$tmp/rootfs.tar" "$RUNNERD_TEST_IMAGE" >/dev/null
fi

# 5. The browser tier (tests/browser) drives Debian's chromium through its
#    chromedriver, never a downloaded browser: where either is missing and we are
#    root, install Debian's packages; otherwise say so and stop (the tier would fail).
browser_ok() { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }
if ! browser_ok; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing chromium and chromium-driver"
    apt-get update -qq
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; then
      log "apt-get could not install chromium and chromium-driver (output above)"
      exit 1
    fi
  fi
  if ! browser_ok; then
    log "/usr/bin/chromium or /usr/bin/chromedriver is missing and cannot be installed here" \
      "(not root, or no apt-get): install Debian's chromium and chromium-driver"
    exit 1
  fi
fi

# 6. The suite.
"$venv/bin/python" -m pytest "$@"
