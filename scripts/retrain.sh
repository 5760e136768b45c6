#!/usr/bin/env bash
# Runs retrain in the container on a folder of images.
#
#   scripts/retrain.sh IMAGE_DIR OUTPUT_DIR [retrain flags...]
#
# IMAGE_DIR is mounted read-only at /images and OUTPUT_DIR (created if missing) at /out; the
# container runs with your uid and gid, so the outputs are yours. Environment:
#   RETRAIN_GPUS         passed to `docker run --gpus` (e.g. all); the image then defaults
#                        to retrain:gpu
#   RETRAIN_IMAGE        the image (default retrain:latest, or retrain:gpu with RETRAIN_GPUS)
#   RETRAIN_DOCKER_CACHE a host folder or volume name for /cache (default: the volume
#                        retrain-cache), where bottlenecks and downloads are kept between runs
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: scripts/retrain.sh IMAGE_DIR OUTPUT_DIR [retrain flags...]" >&2
    exit 2
fi
image_dir="$1"
output_dir="$2"
shift 2

# --mount takes comma-separated fields, so a path goes in a double-quoted field (CSV quoting:
# a " inside is doubled); unlike -v, a colon in a path is then harmless too.
mount_field() {
    local text="$1"
    printf '"%s"' "${text//\"/\"\"}"
}

if [[ ! -d "${image_dir}" ]]; then
    echo "scripts/retrain.sh: ${image_dir} is not a folder" >&2
    exit 2
fi
# Created here, so that it belongs to the user rather than to the Docker daemon's root.
mkdir -p -- "${output_dir}"
image_dir="$(cd -- "${image_dir}" && pwd)"
output_dir="$(cd -- "${output_dir}" && pwd)"

cache="${RETRAIN_DOCKER_CACHE:-retrain-cache}"
if [[ "${cache}" == */* ]]; then
    mkdir -p -- "${cache}"
    cache_mount="type=bind,$(mount_field "source=$(cd -- "${cache}" && pwd)"),target=/cache"
else
    cache_mount="type=volume,$(mount_field "source=${cache}"),target=/cache"
fi

gpu_options=()
default_image="retrain:latest"
if [[ -n "${RETRAIN_GPUS:-}" ]]; then
    gpu_options=(--gpus "${RETRAIN_GPUS}")
    default_image="retrain:gpu"
fi

exec docker run --rm \
    --user "$(id -u):$(id -g)" \
    ${gpu_options[@]+"${gpu_options[@]}"} \
    --mount "type=bind,$(mount_field "source=${image_dir}"),target=/images,readonly" \
    --mount "type=bind,$(mount_field "source=${output_dir}"),target=/out" \
    --mount "${cache_mount}" \
    "${RETRAIN_IMAGE:-${default_image}}" \
    retrain "$@"
