#!/bin/sh
# The host side of tests/image, as root: podman and its tools from Debian's archive, runc as the
# runtime (crun fails on this kind of host's cgroups), and the Dockerfile's base image made from
# Debian bookworm (its python3 is 3.11), since no registry can be pulled from here.
# Usage: build_base.sh BASE_IMAGE CACHE_DIR   (the rootfs tarball is kept in CACHE_DIR between runs)
set -eu
base=$1
cache=$2
suite=bookworm
mirror=http://deb.debian.org/debian
# python-is-python3: the Dockerfile runs `python`; passwd: its groupadd/useradd.
packages=python3,python3-venv,python-is-python3,passwd,ca-certificates

missing=""
for tool in podman buildah debootstrap runc; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
    echo "installing$missing from Debian's archive"
    apt-get update -qq
    # shellcheck disable=SC2086  # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

conf=/etc/containers/containers.conf
wanted='[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"'
if [ "$(cat "$conf" 2>/dev/null)" != "$wanted" ]; then
    mkdir -p /etc/containers
    if [ -e "$conf" ]; then cp "$conf" "$conf.before-image-test"; fi
    printf '%s\n' "$wanted" >"$conf"
    echo "wrote $conf (runtime runc)"
fi

if podman image exists "$base"; then
    exit 0
fi
mkdir -p "$cache"
rootfs_tar=$cache/$suite-python3-rootfs.tar
if [ ! -s "$rootfs_tar" ]; then
    echo "debootstrap $suite ($packages) into $rootfs_tar"
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >/dev/null
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/* \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
    tar -C "$rootfs" --numeric-owner -cf "$rootfs_tar.partial" .
    mv "$rootfs_tar.partial" "$rootfs_tar"
fi
container=$(buildah from scratch)
buildah add --quiet "$container" "$rootfs_tar" / >/dev/null
buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 "$container"
buildah commit --quiet --rm "$container" "$base" >/dev/null
echo "made $base from Debian $suite"
