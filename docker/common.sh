# Settings shared by docker/build_base.sh, docker/build.sh and docker/smoke.sh (sourced, not run).
#
# The images are built and run with buildah alone, because that is what works on a machine
# with no Docker daemon and no registry access (the development machines and CI):
#   * storage driver: overlay by default. It needs a kernel with overlayfs and a backing
#     filesystem that supports it (ext4/xfs); vfs works everywhere but stores a full copy of
#     the file system for every layer (the train image's 7 GB venv again under each layer
#     above it), so it is only the fallback: IMAGES_STORAGE_DRIVER=vfs.
#   * isolation: chroot. The OCI runtimes cannot start a container here: `podman run` fails
#     with crun ("cgroups in hybrid mode not supported", then "setrlimit RLIMIT_NPROC:
#     operation not permitted") and with runc (the same setrlimit error), and so does
#     `buildah run --isolation oci`. Chroot isolation shares the host's network, which the
#     serve smoke test relies on to reach the server on 127.0.0.1.
# Every variable can be overridden from the environment.

IMAGES_STORAGE_DRIVER=${IMAGES_STORAGE_DRIVER:-overlay}
# Where the images go; `buildah images` / `podman images` with the same driver lists them.
IMAGE_REPO=${IMAGE_REPO:-localhost/cyclegan}
# The Python base the Dockerfile's PYTHON_IMAGE build argument points at (docker/build_base.sh).
BASE_IMAGE=${BASE_IMAGE:-localhost/cyclegan-python:3.11-bookworm}
# Scratch space for the smoke tests and the pip settings handed to the build.
IMAGES_WORK=${IMAGES_WORK:-$ROOT/build/images}

die() {
    echo "$(basename "$0"): $*" >&2
    exit 1
}

usage_error() {
    echo "$(basename "$0"): $*" >&2
    echo "usage: $USAGE" >&2
    exit 2
}

require_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 \
            || die "$tool is not installed (Debian: apt-get install -y buildah debootstrap)"
    done
}

bah() {
    buildah --storage-driver "$IMAGES_STORAGE_DRIVER" "$@"
}

image_exists() {
    bah inspect --type image "$1" >/dev/null 2>&1
}
