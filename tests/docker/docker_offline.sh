#!/bin/sh
# Stands in for `docker` on PATH during the end-to-end test (run_docker_e2e.sh links it as
# bin/docker): every build and run, including those of scripts/*.sh, gets --network none,
# because containers on these machines must stay off every network.
real_docker="${E2E_REAL_DOCKER:?E2E_REAL_DOCKER names the real docker client}"
case "${1:-}" in
    build | run)
        command="$1"
        shift
        exec "${real_docker}" "${command}" --network none "$@"
        ;;
esac
exec "${real_docker}" "$@"
