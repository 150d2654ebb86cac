#!/usr/bin/env bash
# Installs CRIU 4.2.1 as /usr/local/sbin/criu unless a CRIU of at least 4.2 is already there.
# Debian bookworm's criu 3.17 fails on kernels that expose a vvar_vclock mapping (>= 6.13), and
# CRIU before 4.2 cannot dump an inet socket on kernels >= 6.16 (SO_PASSCRED/SO_PASSSEC are
# refused there), so this builds CRIU from Debian unstable's source package: a temporary
# deb-src entry for sid,
# the upstream tarball, the build dependencies from bookworm, `make criu`. Root only.
set -euo pipefail

CRIU_VERSION=${CRIU_VERSION:-4.2.1}
TARGET=/usr/local/sbin/criu

have_criu() {
    local version
    version=$("$TARGET" --version 2>/dev/null | sed -n 's/^Version: *//p') || return 1
    [[ -n "$version" ]] || return 1
    # 4.2 or newer.
    [[ "$(printf '%s\n4.2\n' "$version" | sort -V | head -1)" == "4.2" ]]
}

if have_criu; then
    exit 0
fi

build_deps=(build-essential libbsd-dev libcap-dev libgnutls28-dev libnet1-dev libnftables-dev
    libnl-3-dev libprotobuf-c-dev libprotobuf-dev pkgconf protobuf-c-compiler protobuf-compiler
    uuid-dev python3-protobuf xz-utils)
export DEBIAN_FRONTEND=noninteractive

work=$(mktemp -d)
sources=/etc/apt/sources.list.d/coppice-criu-src.sources
cleanup() {
    rm -rf "$work"
    if [[ -e "$sources" ]]; then
        rm -f "$sources"
        apt-get update -q >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

# The deb-src entry uses the archive and keyring the system already trusts.
uri=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
uri=${uri:-http://deb.debian.org/debian}
cat >"$sources" <<EOF
Types: deb-src
URIs: $uri
Suites: sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
apt-get update -q
apt-get install -y -q --no-install-recommends "${build_deps[@]}"
(
    cd "$work"
    # Only the upstream tarball is needed; the package's own build is not used.
    apt-get source -q --download-only -o APT::Sandbox::User=root "criu=${CRIU_VERSION}-1" || true
    if ! compgen -G "criu_*.orig.tar.*" >/dev/null; then
        # The archive moved on from that version: take the one it has (checked below to be
        # at least 4.2).
        apt-get source -q --download-only -o APT::Sandbox::User=root criu || true
    fi
    tarball=$(compgen -G "criu_*.orig.tar.*" | sed -n 1p || true)
    if [[ -z "$tarball" ]]; then
        echo "install-criu: could not download CRIU's source from the Debian archive" >&2
        exit 1
    fi
    tar xf "$tarball"
    source_dir=$(tar tf "$tarball" | sed -n '1s|/.*||p')
    make -s -C "$source_dir" -j"$(nproc)" criu >"$work/build.log" 2>&1 || {
        tail -40 "$work/build.log" >&2
        exit 1
    }
    install -m 0755 "$source_dir/criu/criu" "$TARGET"
)
have_criu
"$TARGET" check
