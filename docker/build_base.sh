#!/usr/bin/env bash
# Builds the Python 3.11 base image that the Dockerfile's PYTHON_IMAGE build argument points
# at, from Debian packages, for machines that cannot pull python:3.11-slim from a registry.
#
#   docker/build_base.sh [--force]
#
# debootstrap writes a minimal Debian bookworm (python3.11, its venv module, passwd for
# `useradd`, CA certificates) into a scratch folder; docs, man pages, locales and apt's
# caches are removed (python:3.11-slim does the same), `python` is linked to python3.11, and
# the tree is committed as $BASE_IMAGE with /usr/sbin on PATH. An existing image is kept
# unless --force. Needs root (debootstrap chroots) and the Debian mirror $DEBIAN_MIRROR.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
USAGE="docker/build_base.sh [--force]"
# shellcheck source=docker/common.sh
source "$ROOT/docker/common.sh"

DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# python3-distutils provides python3.11-distutils, which python3.11-venv depends on but
# debootstrap's resolver does not find through the virtual package.
PACKAGES=python3.11,python3.11-venv,python3-distutils,passwd,ca-certificates

force=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h|--help) echo "usage: $USAGE"; exit 0 ;;
        *) usage_error "unknown argument: $arg" ;;
    esac
done

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap and buildah mount need it)"
require_tools buildah debootstrap

if [ "$force" = 0 ] && image_exists "$BASE_IMAGE"; then
    echo "$BASE_IMAGE exists (docker/build_base.sh --force rebuilds it)"
    exit 0
fi

mkdir -p "$IMAGES_WORK"
rootfs=$(mktemp -d "$IMAGES_WORK/base-rootfs.XXXXXX")
container=""
cleanup() {
    [ -n "$container" ] && bah rm "$container" >/dev/null 2>&1 || true
    rm -rf "$rootfs"
}
trap cleanup EXIT

echo "debootstrap bookworm ($PACKAGES) from $DEBIAN_MIRROR"
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$rootfs" "$DEBIAN_MIRROR" \
    >"$IMAGES_WORK/debootstrap.log" 2>&1 \
    || die "debootstrap failed; see $IMAGES_WORK/debootstrap.log and $rootfs/debootstrap/debootstrap.log"

# What a container never needs; python:3.11-slim leaves these out too.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/share/locale/* "$rootfs"/var/log/* "$rootfs"/debootstrap
ln -sf /usr/bin/python3.11 "$rootfs/usr/local/bin/python"
chroot "$rootfs" python -m venv --help >/dev/null || die "python -m venv does not work in the new root"

container=$(bah from scratch)
mountpoint=$(bah mount "$container")
tar -C "$rootfs" -cf - . | tar -C "$mountpoint" -xf -
bah umount "$container" >/dev/null
bah config \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 \
    --cmd python3 \
    --label org.opencontainers.image.description="Debian bookworm minbase + python3.11 (docker/build_base.sh)" \
    "$container"
bah commit --quiet "$container" "$BASE_IMAGE" >/dev/null
echo "built $BASE_IMAGE ($(bah images --format '{{.Size}}' "$BASE_IMAGE"))"
