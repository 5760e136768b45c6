#!/bin/sh
# The container's entrypoint (run under dumb-init, see the Dockerfile).
#
#   retrain [flags]      retrain with the container's folders as defaults
#   retrain audit|compare|bottlenecks [flags]
#                        the subcommand, with the same defaults (bottlenecks: no /out)
#   label_image [flags]  label_image reading the model from /out
#   --flag ...           short for `retrain --flag ...`
#   anything else        runs as a command (sh, python3, tensorboard, ...)
#
# The defaults come before the user's arguments: absl lets a later --flag win, so every
# default can be overridden. Every branch ends in exec, so the tool receives the signals
# that `docker stop` and Ctrl-C send and its exit status is the container's.
set -eu

# `docker run --user UID` with a uid the image does not know leaves HOME=/, which only root
# can write, and so does a --read-only root filesystem. Libraries that keep files under ~
# (Keras, TensorFlow) then get a private one under /tmp.
if [ ! -w "${HOME:-/}" ]; then
    HOME="$(mktemp -d)"
    export HOME
fi

# matplotlib (the report's plots) builds its font list on first import in each fresh HOME and
# logs that it did; the image carries one built at build time (see the Dockerfile).
if [ -z "${MPLCONFIGDIR:-}" ] && [ -d /opt/retrain/matplotlib ]; then
    if mkdir -p "${HOME}/.config/matplotlib" 2>/dev/null \
        && cp /opt/retrain/matplotlib/fontlist-*.json "${HOME}/.config/matplotlib/" 2>/dev/null; then
        MPLCONFIGDIR="${HOME}/.config/matplotlib"
        export MPLCONFIGDIR
    fi
fi

case "${1:-}" in
    -*) set -- retrain "$@" ;;
esac

case "${1:-}" in
    retrain)
        shift
        # A subcommand must stay the first argument; the defaults go after it.
        subcommand=""
        output_dir="--output_dir=/out"
        case "${1:-}" in
            audit | compare | bottlenecks)
                subcommand="$1"
                shift
                ;;
        esac
        if [ "${subcommand}" = bottlenecks ]; then
            output_dir=""  # it writes only the cache, and takes no --output_dir
        fi
        exec retrain ${subcommand:+"${subcommand}"} \
            --image_dir=/images \
            ${output_dir:+"${output_dir}"} \
            --bottleneck_dir=/cache/bottlenecks \
            "$@"
        ;;
    label_image)
        shift
        exec label_image --saved_model_dir=/out/saved_model "$@"
        ;;
    "")
        echo "retrain-entrypoint: no command given; try: retrain --help" >&2
        exit 2
        ;;
    *)
        exec "$@"
        ;;
esac
