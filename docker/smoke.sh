#!/usr/bin/env bash
# Smoke-tests the built images by running them, as the image's own user (10001) and through
# its own entrypoint:
#
#   docker/smoke.sh train [--out DIR]    # in $IMAGE_REPO:train
#       `cyclegan --help`; `cyclegan prepare --source synthetic`, `cyclegan train` and
#       `cyclegan export` on the tests profile (profiles/tests.yaml) into DIR (default
#       $IMAGES_WORK/smoke-train, emptied first), which must end up owned by uid 10001 and
#       hold a checkpoint and both ONNX generators (DIR/export: serve smoke's --model).
#   docker/smoke.sh serve --model DIR    # in $IMAGE_REPO:serve
#       checks that every library ONNX Runtime's CUDA provider and cuDNN link against resolves
#       inside the image (all but the driver's libcuda.so.1, which the NVIDIA container toolkit
#       mounts on a GPU node) and that torch, kfp and dvc are absent; then `cyclegan serve` of
#       the export folder DIR mounted read-only at /models, on 127.0.0.1, until
#       /v2/health/ready answers 200 and /v1/translate answers 200 with a PNG
#       (docker/http_check.py).
#
# Containers run with `buildah run --isolation chroot`: podman and the OCI runtimes cannot
# start a container on this machine (see docker/common.sh). Chroot isolation shares the host's
# network, so the server is reached on 127.0.0.1. `buildah run` applies the image's user,
# working directory and environment but not its entrypoint, so the entrypoint is read from the
# image and put in front of each command. Needs root.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
USAGE="docker/smoke.sh train [--out DIR] | docker/smoke.sh serve --model DIR"
# shellcheck source=docker/common.sh
source "$ROOT/docker/common.sh"
PYTHON=${PYTHON:-python3}
USER_ID=10001

[ $# -ge 1 ] || usage_error "name the image to test: train or serve"
kind=$1
shift
out="" model=""
while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ $# -ge 2 ] || usage_error "--out needs a folder"; out=$2; shift 2 ;;
        --model) [ $# -ge 2 ] || usage_error "--model needs a folder"; model=$2; shift 2 ;;
        -h|--help) echo "usage: $USAGE"; exit 0 ;;
        *) usage_error "unknown argument: $1" ;;
    esac
done
case "$kind" in
    train) [ -z "$model" ] || usage_error "--model is for the serve image" ;;
    serve)
        [ -z "$out" ] || usage_error "--out is for the train image"
        [ -n "$model" ] || usage_error "serve needs --model DIR (an export folder: G_AtoB.onnx, G_BtoA.onnx)"
        for f in G_AtoB.onnx G_BtoA.onnx; do
            [ -f "$model/$f" ] || die "--model $model: $f is missing (make one with cyclegan export)"
        done
        model=$(cd "$model" && pwd) ;;
    -h|--help) echo "usage: $USAGE"; exit 0 ;;
    *) usage_error "unknown image: $kind (train or serve)" ;;
esac
[ "$(id -u)" = 0 ] || die "must run as root (buildah here stores images in /var/lib/containers)"
require_tools buildah

image="$IMAGE_REPO:$kind"
image_exists "$image" || die "$image does not exist; build it with docker/build.sh $kind"
user=$(bah inspect --type image --format '{{.OCIv1.Config.User}}' "$image")
[ "$user" = "$USER_ID" ] || die "$image runs as user '$user', not $USER_ID"
read -r -a entrypoint <<<"$(bah inspect --type image --format '{{range .OCIv1.Config.Entrypoint}}{{.}} {{end}}' "$image")"
[ ${#entrypoint[@]} -gt 0 ] || die "$image has no entrypoint"

container=$(bah from --pull-never "$image")
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then
        kill -TERM -- "-$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    bah rm "$container" >/dev/null 2>&1 || true
}
trap cleanup EXIT
# Two shared cores: one OpenMP thread each avoids threads spinning against each other.
bah config --env OMP_NUM_THREADS=1 "$container"

# run [buildah run options --] command...: the command in the container, as the image's user
run() {
    bah run --isolation chroot "$@"
}

if [ "$kind" = train ]; then
    if [ -z "$out" ]; then
        out="$IMAGES_WORK/smoke-train"
        rm -rf "$out"
    elif [ -e "$out" ] && [ -n "$(ls -A "$out")" ]; then
        die "--out $out is not empty; name a new folder"
    fi
    mkdir -p "$out"
    chown "$USER_ID:$USER_ID" "$out"
    out=$(cd "$out" && pwd)
    mount=(--volume "$out:/smoke")
    profile=(--params profiles/tests.yaml)

    uid=$(run "$container" -- id -u)
    [ "$uid" = "$USER_ID" ] || die "commands in $image run as uid $uid, not $USER_ID"
    echo "== $image runs as uid $uid"
    help=$(run "$container" -- "${entrypoint[@]}" --help)
    for command in prepare train evaluate export register serve pipeline; do
        grep -q "$command" <<<"$help" || die "\`${entrypoint[*]} --help\` does not list $command"
    done
    echo "== ${entrypoint[*]} --help lists every step"
    run "${mount[@]}" "$container" -- "${entrypoint[@]}" prepare --source synthetic --out /smoke/data "${profile[@]}"
    run "${mount[@]}" "$container" -- "${entrypoint[@]}" train --data /smoke/data --out /smoke/run "${profile[@]}" \
        --no-progress
    run "${mount[@]}" "$container" -- "${entrypoint[@]}" export --checkpoint /smoke/run/checkpoints/latest.pt \
        --out /smoke/export "${profile[@]}" --no-progress
    for f in run/checkpoints/latest.pt export/G_AtoB.onnx export/G_BtoA.onnx; do
        [ -s "$out/$f" ] || die "$out/$f was not written"
        owner=$(stat -c %u "$out/$f")
        [ "$owner" = "$USER_ID" ] || die "$out/$f is owned by uid $owner, not $USER_ID"
    done
    echo "== train smoke passed: $out/export holds G_AtoB.onnx and G_BtoA.onnx, written by uid $USER_ID"
    exit 0
fi

# serve: what the CUDA provider needs is there, and what the serve image must not carry is not.
site=/opt/venv/lib/python3.11/site-packages
missing=$(run "$container" -- sh -c "cd $site && for lib in onnxruntime/capi/libonnxruntime_providers_cuda.so \
    nvidia/cudnn/lib/libcudnn*.so.9; do ldd \"\$lib\" | sed \"s|^|\$lib: |\"; done" \
    | grep 'not found' | grep -v 'libcuda\.so\.1 ' || true)
[ -z "$missing" ] || die "libraries the CUDA provider needs are missing from $image:"$'\n'"$missing"
echo "== every library of ONNX Runtime's CUDA provider and cuDNN resolves (libcuda.so.1 comes from the driver)"
present=$(run "$container" -- python -c "import importlib.util as u; \
print(' '.join(m for m in ('torch', 'torchvision', 'kfp', 'dvc') if u.find_spec(m)))")
[ -z "$present" ] || die "$image carries what serving never imports: $present"
echo "== no torch, torchvision, kfp or dvc in $image"

port=$("$PYTHON" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
log="$IMAGES_WORK/smoke-serve.log"
mkdir -p "$IMAGES_WORK"
setsid buildah --storage-driver "$IMAGES_STORAGE_DRIVER" run --isolation chroot --volume "$model:/models:ro" \
    "$container" -- "${entrypoint[@]}" serve --host 127.0.0.1 --port "$port" --model /models >"$log" 2>&1 &
server_pid=$!
if ! "$PYTHON" "$ROOT/docker/http_check.py" "http://127.0.0.1:$port" --pid "$server_pid" --timeout 180; then
    echo "--- server log ($log):" >&2
    tail -40 "$log" >&2
    die "serve smoke failed"
fi
echo "== serve smoke passed: $image served $model"
