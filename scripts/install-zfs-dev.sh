#!/usr/bin/env bash
# Installs libzfs_core and libnvpair with their headers (Debian's libzfslinux-dev), which the
# off-by-default `libzfs-core` feature of coppice-zfs links against. bookworm ships them in
# backports' contrib component, which the default sources do not list: a sources entry is
# added for the install and removed again. Root only.
set -euo pipefail

if [[ -f /usr/include/libzfs/libzfs_core.h ]] && ldconfig -p | grep -q 'libzfs_core\.so '; then
    exit 0
fi

sources=/etc/apt/sources.list.d/coppice-zfs-dev.sources
cleanup() {
    rm -f "$sources"
    apt-get update -q >/dev/null 2>&1 || true
}
trap cleanup EXIT

# Same archive and keyring the system already trusts.
uri=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
uri=${uri:-http://deb.debian.org/debian}
cat >"$sources" <<EOT
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOT
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -t bookworm-backports libzfslinux-dev
