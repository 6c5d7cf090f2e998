#!/usr/bin/env bash
# The base image of the systemd test tier: a minimal Debian rootfs (debootstrap) with
# systemd as init, python3 and socat, imported into the local engine. Prints its tag.
#
# Cached by a hash of this script: a rerun finds the image and takes no time. runnerd
# itself is not in it; the tests install it at boot from a bind-mounted wheelhouse.
# The Debian mirror is read from this host's apt sources, never written down here.
set -euo pipefail
cd "$(dirname "$0")"

log() { echo "tests/systemd/image.sh: $*" >&2; }

packages=systemd,systemd-sysv,dbus,python3,python3-venv,socat
hash=$(sha256sum image.sh | cut -c1-12)
tag="runnerd-systemd-test/base:$hash"
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "$tag"
  exit 0
fi

. /etc/os-release
suite="${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}"
# The first URIs: of a deb822 stanza for this suite, else the first `deb` line.
mirror=$(awk -v suite="$suite" '
  /^[[:space:]]*$/ { if (uri != "" && ok) { print uri; exit } uri = ""; ok = 0; next }
  /^URIs:/ { uri = $2 }
  /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) ok = 1 }
  END { if (uri != "" && ok) print uri }' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror=$(awk -v suite="$suite" '$1 == "deb" && $3 == suite { print $2; exit }' \
    /etc/apt/sources.list)
fi
if [ -z "$mirror" ]; then
  log "no apt source for $suite in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list"
  exit 1
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  log "installing debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
log "debootstrap $suite from $mirror into $tmp (a few minutes)"
debootstrap --variant=minbase --include="$packages" "$suite" "$tmp/rootfs" "$mirror" \
  >"$tmp/debootstrap.log" 2>&1 || { tail -30 "$tmp/debootstrap.log" >&2; exit 1; }

root="$tmp/rootfs"
# Boot quickly and quietly in a container: no consoles, no udev, no time sync, no
# timers; an empty machine-id is filled in at boot.
for unit in getty.target console-getty.service systemd-udevd.service \
    systemd-udev-trigger.service systemd-timesyncd.service apt-daily.timer \
    apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer man-db.timer \
    systemd-tmpfiles-clean.timer; do
  ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
: >"$root/etc/machine-id"
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*

tar -C "$root" -c . | docker import \
  -c 'CMD ["/lib/systemd/systemd"]' -c 'ENV container=docker' \
  - "$tag" >/dev/null
log "built $tag"
echo "$tag"
