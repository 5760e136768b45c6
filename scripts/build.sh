#!/usr/bin/env bash
# Builds the retrain image.
#
#   scripts/build.sh [cpu|gpu] [docker build options...]
#
# cpu (the default) is tagged retrain:latest, gpu retrain:gpu; RETRAIN_IMAGE changes the
# name. Options after the variant go to `docker build`, e.g. --build-arg BASE_IMAGE=...
set -euo pipefail

variant="${1:-cpu}"
case "${variant}" in
    cpu) tag="latest" ;;
    gpu) tag="gpu" ;;
    *)
        echo "usage: scripts/build.sh [cpu|gpu] [docker build options...]" >&2
        exit 2
        ;;
esac
shift $(( $# > 0 ? 1 : 0 ))

repo_dir="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
exec docker build \
    --build-arg "VARIANT=${variant}" \
    --tag "${RETRAIN_IMAGE:-retrain}:${tag}" \
    "$@" \
    "${repo_dir}"
