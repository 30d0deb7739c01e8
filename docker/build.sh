#!/usr/bin/env bash
# Builds the images of the one Dockerfile with buildah (no Docker daemon needed):
#
#   docker/build.sh [--no-cache] train|serve ...
#
# tagged $IMAGE_REPO:train and $IMAGE_REPO:serve. The Python base is $BASE_IMAGE, made by
# docker/build_base.sh when it is missing (no registry to pull python:3.11-slim from). pip
# inside the build uses this machine's pip settings (docker/pip_mirror.py): the same index,
# local wheel folders and CA bundle as the pip that built .venv. Layers are cached between
# builds (--no-cache rebuilds every layer). Each build's seconds and size are printed and
# appended to $IMAGES_WORK/build-times.tsv. Needs root.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
USAGE="docker/build.sh [--no-cache] train|serve ..."
# shellcheck source=docker/common.sh
source "$ROOT/docker/common.sh"
# The interpreter whose pip settings the build copies: the project's venv when there is one.
PYTHON=${PYTHON:-$( [ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || command -v python3 )}

targets=()
cache=(--layers)
for arg in "$@"; do
    case "$arg" in
        train|serve) targets+=("$arg") ;;
        --no-cache) cache=(--layers --no-cache) ;;
        -h|--help) echo "usage: $USAGE"; exit 0 ;;
        *) usage_error "unknown target or option: $arg (targets: train, serve)" ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || usage_error "name at least one target"
[ "$(id -u)" = 0 ] || die "must run as root (buildah here stores images in /var/lib/containers)"
require_tools buildah

"$ROOT/docker/build_base.sh"

mapfile -t pip_volumes < <("$PYTHON" "$ROOT/docker/pip_mirror.py" "$IMAGES_WORK/pip")
[ ${#pip_volumes[@]} -gt 0 ] || die "docker/pip_mirror.py gave no pip settings"

commit=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
if [ "$commit" != unknown ] && [ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null)" ]; then
    commit="$commit-dirty"
fi

for target in "${targets[@]}"; do
    image="$IMAGE_REPO:$target"
    echo "== building $image (Dockerfile --target $target, base $BASE_IMAGE)"
    start=$(date +%s)
    bah bud --isolation chroot --network host "${cache[@]}" \
        --target "$target" \
        --build-arg PYTHON_IMAGE="$BASE_IMAGE" \
        --build-arg PIP_CONFIG_FILE=/tmp/pip-host/pip.conf \
        --build-arg GIT_COMMIT="$commit" \
        "${pip_volumes[@]}" \
        --tag "$image" --file "$ROOT/Dockerfile" "$ROOT"
    seconds=$(( $(date +%s) - start ))
    # A layer cache that ignored the commit would label the image with an older one.
    baked=$(bah inspect --type image --format '{{range .OCIv1.Config.Env}}{{println .}}{{end}}' "$image" \
        | sed -n 's/^CYCLEGAN_GIT_COMMIT=//p')
    [ "$baked" = "$commit" ] || die "$image says CYCLEGAN_GIT_COMMIT=$baked, but it was built from $commit"
    size=$(bah images --format '{{.Size}}' "$image" | head -1)
    echo "== built $image in ${seconds}s, $size"
    printf '%s\t%s\t%s\t%ss\t%s\t%s\n' "$(date -u +%FT%TZ)" "$image" "${cache[*]}" "$seconds" "$size" "$commit" \
        >>"$IMAGES_WORK/build-times.tsv"
done
