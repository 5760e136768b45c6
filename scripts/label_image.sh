#!/usr/bin/env bash
# Labels images with a model that scripts/retrain.sh exported, in the container.
#
#   scripts/label_image.sh OUTPUT_DIR IMAGE_OR_FOLDER... [--label_image_flag=value...]
#
# OUTPUT_DIR (retrain's output folder) is mounted read-only at /out. Each image's folder is
# mounted read-only under /host at the same path, and the container works in /host/$PWD, so
# relative paths are printed as you typed them (absolute ones get a /host prefix). A folder
# argument is labelled with --image_dir. Arguments that start with - are passed on as flags:
# write them as --flag=value. Environment: RETRAIN_IMAGE, RETRAIN_GPUS as in retrain.sh.
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: scripts/label_image.sh OUTPUT_DIR IMAGE_OR_FOLDER... [--flag=value...]" >&2
    exit 2
fi
if [[ ! -d "$1/saved_model" ]]; then
    echo "scripts/label_image.sh: $1 has no saved_model folder; run scripts/retrain.sh first" >&2
    exit 2
fi
output_dir="$(cd -- "$1" && pwd)"
shift

mount_field() {
    local text="$1"
    printf '"%s"' "${text//\"/\"\"}"
}

mounts=(--mount "type=bind,$(mount_field "source=${output_dir}"),target=/out,readonly")
mounted_dirs=()
tool_args=()

# Mounts host folder $1 read-only at /host$1, once.
mount_dir() {
    local dir="$1" seen
    for seen in ${mounted_dirs[@]+"${mounted_dirs[@]}"}; do
        [[ "${seen}" == "${dir}" ]] && return 0
    done
    mounted_dirs+=("${dir}")
    mounts+=(--mount "type=bind,$(mount_field "source=${dir}"),$(mount_field "target=/host${dir}"),readonly")
}

for arg in "$@"; do
    if [[ "${arg}" == -* ]]; then
        tool_args+=("${arg}")
        continue
    fi
    if [[ -d "${arg}" ]]; then
        mount_dir "$(cd -- "${arg}" && pwd)"
        flag="--image_dir"
    elif [[ -f "${arg}" ]]; then
        mount_dir "$(cd -- "$(dirname -- "${arg}")" && pwd)"
        flag="--image"
    else
        echo "scripts/label_image.sh: no such file or folder: ${arg}" >&2
        exit 2
    fi
    if [[ "${arg}" == /* ]]; then
        tool_args+=("${flag}=/host${arg}")
    else
        tool_args+=("${flag}=${arg}")
    fi
done

gpu_options=()
default_image="retrain:latest"
if [[ -n "${RETRAIN_GPUS:-}" ]]; then
    gpu_options=(--gpus "${RETRAIN_GPUS}")
    default_image="retrain:gpu"
fi

exec docker run --rm \
    --user "$(id -u):$(id -g)" \
    ${gpu_options[@]+"${gpu_options[@]}"} \
    "${mounts[@]}" \
    --workdir "/host${PWD}" \
    "${RETRAIN_IMAGE:-${default_image}}" \
    label_image ${tool_args[@]+"${tool_args[@]}"}
