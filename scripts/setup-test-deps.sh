#!/bin/sh
# Install what the integration tests need: Debian packages for the peers and
# tools (tshark, iproute2, nftables, conntrack, iperf3, iputils-ping, ethtool,
# python3-venv; openssl for the RSA keys of the certificate tests;
# strongswan-charon, strongswan-swanctl, libcharon-extra-plugins
# and libstrongswan-standard-plugins for strongSwan's userspace ESP with
# AES-GCM in make bench-e2e; systemd for systemd-analyze, lintian and
# man-db for the service and package tests) and a virtualenv at
# $REPO/.venv with scapy >= 2.6 from PyPI (Debian's 2.5 has ESP bugs),
# cargo-fuzz from crates.io for the bounded fuzz runs, and cargo-deb for
# make deb and the package test.
#
# With --bench it also tries Debian's dpdk-doc, libdpdk-dev and pkg-config,
# from which make bench-e2e builds DPDK's ipsec-secgw for its DPDK row; if
# they can not be had it says so and goes on (that row is then skipped).
# With --bench it also installs linux-perf, for make bench-syscalls, and
# what building its AF_XDP ports (cargo feature af-xdp: xsk-rs, which
# builds libxdp and libbpf from source) needs: clang, libclang-dev,
# libelf-dev, zlib1g-dev, m4, make and pkg-config.
#
# Idempotent and non-interactive: a second run installs nothing and only
# checks. Prints one line per thing it installs; exits non-zero with a
# message naming what failed.
#
# Environment: REPO (default: the repository this script lives in),
# PYTHON (default /usr/bin/python3; the python3 first on PATH may be a
# pyenv build without Debian's venv/ensurepip).
set -eu

REPO=${REPO:-$(cd "$(dirname "$0")/.." && pwd)}
PYTHON=${PYTHON:-/usr/bin/python3}
VENV="$REPO/.venv"
SCAPY_SPEC='scapy>=2.6'
PACKAGES="tshark python3-venv openssl iproute2 nftables conntrack iperf3 iputils-ping ethtool strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-standard-plugins systemd lintian man-db"

export DEBIAN_FRONTEND=noninteractive

die() {
    echo "setup-test-deps: ERROR: $*" >&2
    exit 1
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n DEBIAN_FRONTEND=noninteractive "$@"
    else
        die "need root (or passwordless sudo) to run: $*"
    fi
}

pkg_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

# --- Debian packages -------------------------------------------------------
missing=""
for p in $PACKAGES; do
    pkg_installed "$p" || missing="$missing $p"
done

if [ -n "$missing" ]; then
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install by hand:$missing"
    # tshark's postinst asks whether non-root users may capture; answer no.
    echo "wireshark-common wireshark-common/install-setuid boolean false" |
        as_root debconf-set-selections ||
        die "debconf-set-selections failed"
    echo "setup-test-deps: apt-get update (missing:$missing)"
    log=$(mktemp)
    trap 'rm -f "$log"' EXIT
    as_root apt-get update -qq >"$log" 2>&1 || { cat "$log" >&2; die "apt-get update failed"; }
    for p in $missing; do
        echo "setup-test-deps: installing Debian package $p"
    done
    # shellcheck disable=SC2086
    as_root apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        $missing >"$log" 2>&1 ||
        { cat "$log" >&2; die "apt-get install failed for:$missing"; }
    for p in $missing; do
        pkg_installed "$p" || die "package $p still not installed after apt-get install"
    done
fi

# --- make bench-e2e's DPDK row: optional ----------------------------------
if [ "${1:-}" = "--bench" ]; then
    bench_missing=""
    for p in dpdk-doc libdpdk-dev pkg-config; do
        pkg_installed "$p" || bench_missing="$bench_missing $p"
    done
    if [ -n "$bench_missing" ]; then
        echo "setup-test-deps: installing Debian packages for the DPDK row:$bench_missing"
        # shellcheck disable=SC2086
        if ! { as_root apt-get update -qq >/dev/null 2>&1 &&
            as_root apt-get install -y -qq --no-install-recommends $bench_missing >/dev/null 2>&1; }; then
            echo "setup-test-deps: could not install$bench_missing; bench-e2e will skip its DPDK ipsec-secgw row" >&2
        fi
    fi
    syscalls_missing=""
    for p in linux-perf clang libclang-dev libelf-dev zlib1g-dev m4 make pkg-config; do
        pkg_installed "$p" || syscalls_missing="$syscalls_missing $p"
    done
    if [ -n "$syscalls_missing" ]; then
        echo "setup-test-deps: installing Debian packages for make bench-syscalls:$syscalls_missing"
        # shellcheck disable=SC2086
        { as_root apt-get update -qq >/dev/null 2>&1 &&
            as_root apt-get install -y -qq --no-install-recommends $syscalls_missing >/dev/null 2>&1; } ||
            die "apt-get install failed for:$syscalls_missing"
    fi
fi

command -v tshark >/dev/null 2>&1 || die "tshark not on PATH after installing package tshark"

# --- Python virtualenv with scapy ------------------------------------------
[ -x "$PYTHON" ] || die "interpreter $PYTHON not found (set PYTHON=...)"

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup-test-deps: creating virtualenv $VENV with $PYTHON"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" || die "'$PYTHON -m venv $VENV' failed (is python3-venv installed?)"
fi

scapy_ok() {
    "$VENV/bin/python" - <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
v = tuple(int(x) for x in version("scapy").split(".")[:2])
sys.exit(0 if v >= (2, 6) else 1)
PY
}

crypto_ok() {
    "$VENV/bin/python" -c 'import cryptography' 2>/dev/null
}

if ! scapy_ok || ! crypto_ok; then
    echo "setup-test-deps: installing $SCAPY_SPEC and cryptography into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "$SCAPY_SPEC" cryptography ||
        die "pip install '$SCAPY_SPEC' cryptography failed (is PyPI reachable?)"
    scapy_ok || die "scapy >= 2.6 not importable from $VENV after pip install"
    crypto_ok || die "cryptography not importable from $VENV after pip install"
fi

# --- cargo-fuzz, for the bounded fuzz runs of make test ----------------------
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    echo "setup-test-deps: installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install --quiet --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION" ||
        die "cargo install cargo-fuzz $CARGO_FUZZ_VERSION failed (is crates.io reachable?)"
fi

# --- cargo-deb, for make deb and tests/deb.rs --------------------------------
CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
    echo "setup-test-deps: installing cargo-deb $CARGO_DEB_VERSION"
    cargo install --quiet --locked cargo-deb --version "$CARGO_DEB_VERSION" ||
        die "cargo install cargo-deb $CARGO_DEB_VERSION failed (is crates.io reachable?)"
fi
command -v systemd-analyze >/dev/null 2>&1 || die "systemd-analyze not on PATH after installing package systemd"
command -v lintian >/dev/null 2>&1 || die "lintian not on PATH after installing package lintian"

echo "setup-test-deps: ok ($("$VENV/bin/python" -c 'import scapy; print("scapy", scapy.VERSION)'), $(tshark --version 2>/dev/null | head -n1))"
