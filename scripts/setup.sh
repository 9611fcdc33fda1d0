#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine (run as root for the real side).
#  1. Debian packages (bcc, kernel headers, Mininet, traffic tools)
#  2. the merged kernel-header tree bcc needs (.build/kernel-headers)
#  3. a venv from /usr/bin/python3 --system-site-packages with the project installed
# Without root it only builds the venv (the twin runs; the real datapath is skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PKGS="python3-bpfcc bpfcc-tools linux-headers-amd64 mininet bridge-utils iproute2 iputils-ping iputils-arping curl iperf3 tcpdump strace python3-venv python3-pyroute2 python3-yaml iptables nftables gcc libc6-dev etcd-server"
log() { printf 'setup: %s\n' "$*" >&2; }

if [ "$(id -u)" = 0 ]; then
  missing=""
  for p in $PKGS; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    log "installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends $missing >/dev/null
  fi
  # Mininet's package pulls in Open vSwitch; the project uses Linux bridges only.
  # bcc needs headers for the running kernel; Debian has none for 6.18, so merge
  # the installed linux-headers-*-common and *-amd64 trees (design.md).
  # The project's tree, and a shared cache the CLI also searches
  # (datapath/headers.py) so `twin` works from any directory.
  merge_headers() {
    local dst=$1 common arch
    [ -e "$dst/.complete" ] && return 0
    common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n1)
    arch=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n1)
    if [ -z "$common" ] || [ -z "$arch" ]; then
      log "no linux-headers-*-common/-amd64 tree under /usr/src; bcc cannot compile"; exit 1
    fi
    rm -rf "$dst"; mkdir -p "$dst"
    cp -as "$common/." "$dst/"
    cp -as --remove-destination "$arch/." "$dst/"
    touch "$dst/.complete"
    log "kernel headers merged into $dst ($(basename "$common") + $(basename "$arch"))"
  }
  merge_headers "$ROOT/.build/kernel-headers"
  merge_headers /var/cache/cilium-twin/kernel-headers
else
  log "not root: skipping Debian packages and kernel headers (the real datapath needs root)"
fi

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; assert sys.prefix != sys.base_prefix' 2>/dev/null; then
  log "creating .venv from /usr/bin/python3 --system-site-packages"
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -e "$stamp" ]; then
  log "installing the project into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  rm -f .venv/.installed-*; touch "$stamp"
fi
