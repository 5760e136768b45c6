#!/usr/bin/env bash
# End-to-end test of the Docker image with a real engine, on a machine that has none.
#
#   bash tests/docker/run_docker_e2e.sh        (as root, from anywhere)
#
# 1. Installs Debian's docker.io and debootstrap if missing, and starts a private dockerd:
#    no bridge, no iptables, its own data root and socket, stopped by its pid on exit.
# 2. No registry can be reached, so it makes a stand-in for tensorflow/tensorflow:X.Y.Z: a
#    debootstrapped Debian with Python 3.11 (as in the official image) and a wheelhouse of
#    every pinned dependency, downloaded on the host because pip in a container cannot
#    verify TLS here. PIP_NO_INDEX and PIP_FIND_LINKS make pip in the project's build use it.
#    Unlike the official image, the stand-in has no TensorFlow installed yet: the build's
#    `pip install -r requirements.txt` installs it, which is faster here than importing an
#    image with TensorFlow in it.
# 3. Builds the project image with scripts/build.sh, then runs retrain and label_image in
#    containers with read-only image folders and a uid the image does not know, and checks
#    the outputs on the host. Every build and run has --network none (docker_offline.sh).
#
# The engine's data root is kept between runs in RETRAIN_E2E_CACHE, so that a rerun on the
# same machine reuses the stand-in (keyed by every input it is made from) and the image's
# dependency layers; a fresh machine builds everything.
#
# Environment:
#   RETRAIN_E2E_CACHE    the kept data root (default /var/cache/retrain-e2e)
#   RETRAIN_E2E_FRESH=1  empty that cache first
#   RETRAIN_E2E_WORKDIR  logs, test data, the engine's socket (default: a new folder under
#                        /var/tmp, removed at the end unless RETRAIN_E2E_KEEP=1)
#   RETRAIN_E2E_MIRROR   Debian mirror for debootstrap (default: the one apt uses)
#   RETRAIN_E2E_MODULE   tiny: bake no backbone and train on a tiny module made in a
#                        container instead (for working on the plumbing alone)
#   PYTHON               host Python with pip, for the wheelhouse (default: python3)
set -euo pipefail

repo_dir="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PYTHON:-python3}"
run_uid="4242:4242"  # a uid and gid that the image does not know
checks_passed=0

started_at="$(date +%s)"
phase_started_at="${started_at}"
phase_name=""
timings=()

log() { printf 'e2e: %s\n' "$*" >&2; }
fail() {
    printf 'e2e: FAIL: %s\n' "$*" >&2
    exit 1
}
passed() {
    checks_passed=$((checks_passed + 1))
    log "ok: $*"
}
phase() {
    local now
    now="$(date +%s)"
    if [[ -n "${phase_name}" ]]; then
        timings+=("$(printf '%-28s %4ss' "${phase_name}" $((now - phase_started_at)))")
    fi
    phase_name="$1"
    phase_started_at="${now}"
    [[ -z "${phase_name}" ]] || log "--- ${phase_name}"
}

if [[ "$(id -u)" != 0 ]]; then
    fail "run as root: it installs packages and starts dockerd"
fi

# Phase: engine.

phase "install docker.io"
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [[ ${#missing[@]} -gt 0 ]]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi
real_docker=/usr/bin/docker  # docker.io's client, the daemon's own version
[[ -x "${real_docker}" ]] || real_docker="$(command -v docker)"

workdir="${RETRAIN_E2E_WORKDIR:-$(mktemp -d /var/tmp/retrain-e2e.XXXXXX)}"
mkdir -p "${workdir}"
dockerd_pid=""

cleanup() {
    local status=$?
    if [[ -n "${dockerd_pid}" ]]; then
        "${real_docker}" rm -f retrain-e2e-stop >/dev/null 2>&1 || true
        if [[ ${status} != 0 ]]; then
            log "dockerd log (last lines):"
            tail -n 20 "${workdir}/dockerd.log" >&2 || true
        fi
        kill -TERM "${dockerd_pid}" 2>/dev/null || true
        wait "${dockerd_pid}" 2>/dev/null || true
    fi
    if [[ "${RETRAIN_E2E_KEEP:-0}" != 1 && -z "${RETRAIN_E2E_WORKDIR:-}" ]]; then
        rm -rf "${workdir}" || log "could not remove ${workdir}"
    fi
    exit "${status}"
}
trap cleanup EXIT

phase "start dockerd"
cache_dir="${RETRAIN_E2E_CACHE:-/var/cache/retrain-e2e}"
if [[ "${RETRAIN_E2E_FRESH:-0}" == 1 ]]; then
    rm -rf "${cache_dir}"
fi
mkdir -p "${cache_dir}/docker-data" "${workdir}/docker-exec" "${workdir}/bin"
exec 9>"${cache_dir}/lock"
flock --nonblock 9 || fail "another run holds ${cache_dir}/lock"
dockerd --bridge=none --iptables=false \
    --data-root "${cache_dir}/docker-data" --exec-root "${workdir}/docker-exec" \
    --pidfile "${workdir}/dockerd.pid" --host "unix://${workdir}/docker.sock" \
    >"${workdir}/dockerd.log" 2>&1 &
dockerd_pid=$!
export DOCKER_HOST="unix://${workdir}/docker.sock" DOCKER_BUILDKIT=0 E2E_REAL_DOCKER="${real_docker}"
ln -sf "${repo_dir}/tests/docker/docker_offline.sh" "${workdir}/bin/docker"
export PATH="${workdir}/bin:${PATH}"
for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && break
    kill -0 "${dockerd_pid}" 2>/dev/null || fail "dockerd exited"
    sleep 1
done
docker info >/dev/null 2>&1 || fail "dockerd did not answer within 60 s"

# Phase: the stand-in base image.

tf_version="$(sed -n 's/^tensorflow==//p' "${repo_dir}/requirements.txt")"
[[ -n "${tf_version}" ]] || fail "requirements.txt pins no tensorflow==X.Y.Z"
"${python}" -c 'import sys, tomllib
print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["build-system"]["requires"]))' \
    "${repo_dir}/pyproject.toml" >"${workdir}/build-requirements.txt"
standin_recipe=2  # bump when make_standin changes
standin_key="$( (echo "${standin_recipe}"; cat "${repo_dir}/requirements.txt" \
    "${repo_dir}/docker/requirements/common.txt" "${workdir}/build-requirements.txt" \
    "${repo_dir}/requirements-light.txt") \
    | sha256sum | cut -c 1-12)"
base_image="retrain-e2e/tensorflow:${tf_version}-${standin_key}"

debian_mirror() {
    if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
        awk '$1 == "URIs:" && $2 !~ /security/ { print $2; exit }' \
            /etc/apt/sources.list.d/debian.sources
    elif [[ -f /etc/apt/sources.list ]]; then
        awk '$1 == "deb" && !/security/ {
                 for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit }
             }' /etc/apt/sources.list
    fi
}

make_standin() {
    local wheelhouse="${workdir}/wheelhouse" rootfs="${workdir}/rootfs" download_pid mirror
    phase "stand-in: wheelhouse, debootstrap"
    # Wheels for the stand-in's Python (3.11), whatever the host's Python is.
    "${python}" -m pip download --quiet --disable-pip-version-check \
        --only-binary=:all: --python-version 3.11 --implementation cp --dest "${wheelhouse}" \
        -r "${repo_dir}/requirements.txt" \
        -r "${repo_dir}/docker/requirements/common.txt" \
        -r "${workdir}/build-requirements.txt" \
        -r "${repo_dir}/requirements-light.txt" \
        >"${workdir}/pip-download.log" 2>&1 &
    download_pid=$!
    mirror="${RETRAIN_E2E_MIRROR:-$(debian_mirror)}"
    debootstrap --variant=minbase --include=python3,python3-pip \
        bookworm "${rootfs}" "${mirror:-http://deb.debian.org/debian}" \
        >"${workdir}/debootstrap.log" 2>&1 \
        || { tail -n 20 "${workdir}/debootstrap.log" >&2; fail "debootstrap"; }
    wait "${download_pid}" || { tail -n 20 "${workdir}/pip-download.log" >&2; fail "pip download"; }

    # Like the official image, pip installs into the system Python (Debian forbids it by default).
    rm -f "${rootfs}"/usr/lib/python3*/EXTERNALLY-MANAGED
    rm -rf "${rootfs}"/var/cache/apt/archives/*.deb
    mkdir -p "${rootfs}/opt/wheelhouse"
    cp "${wheelhouse}"/*.whl "${rootfs}/opt/wheelhouse/"

    phase "stand-in: docker import"
    tar -C "${rootfs}" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PIP_NO_INDEX=1' \
        --change 'ENV PIP_FIND_LINKS=/opt/wheelhouse' \
        --change 'CMD ["python3"]' \
        - "${base_image}" >/dev/null
    rm -rf "${rootfs}" "${wheelhouse}"
}

if docker image inspect "${base_image}" >/dev/null 2>&1; then
    log "reusing the stand-in ${base_image}"
else
    # Stand-ins made from other inputs are of no further use.
    docker images --format '{{.Repository}}:{{.Tag}}' retrain-e2e/tensorflow \
        | xargs --no-run-if-empty docker rmi >/dev/null
    make_standin
fi

# Phase: the project image, built as users build it.

phase "build project image"
image_name="retrain-e2e"
image="${image_name}:latest"
build_args=(--build-arg "BASE_IMAGE=${base_image}")
if [[ "${RETRAIN_E2E_MODULE:-}" == tiny ]]; then
    build_args+=(--build-arg "BAKED_BACKBONES=")
fi
RETRAIN_IMAGE="${image_name}" "${repo_dir}/scripts/build.sh" cpu "${build_args[@]}" \
    >"${workdir}/build.log" 2>&1 || { tail -n 40 "${workdir}/build.log" >&2; fail "image build"; }
passed "image built from ${base_image} with --network none"

# Phase: runs.

data="${workdir}/data"
images="${data}/images"
out="${data}/out"
cache="${data}/cache"
"${python}" "${repo_dir}/tests/docker/make_images.py" "${images}"
mkdir -p "${out}" "${cache}"
chown "${run_uid}" "${out}" "${cache}"

# As the issue's users run it: their uid, images read-only, and (stricter still) a read-only
# root filesystem, so that the run can write nowhere but its volumes and /tmp.
in_container=(docker run --rm --user "${run_uid}" --read-only --tmpfs /tmp)
retrain_flags=(--how_many_training_steps=40 --learning_rate=0.5)
module_flags=()  # the module, for the subcommands that take no training flags

phase "container checks"
line="$("${in_container[@]}" "${image}" sh -c 'ls /sys/class/net | tr "\n" " "; id -u')"
[[ "${line}" == "lo 4242" ]] || fail "expected only loopback and uid 4242, got: ${line}"
passed "container has only loopback and runs as the given uid"
status=0
line="$(docker run --rm "${image}" sh -c 'id -u; exit 3')" || status=$?
[[ "${line}" == 10001 ]] || fail "the default user is ${line}, not the image's 10001"
passed "the default user is the image's non-root user"
[[ ${status} == 3 ]] || fail "exit status 3 came back as ${status}"
passed "a command's exit status is the container's"

if [[ "${RETRAIN_E2E_MODULE:-}" == tiny ]]; then
    "${in_container[@]}" -v "${cache}:/cache" "${image}" python3 -c '
import tensorflow as tf, tf_keras
inputs = tf_keras.Input([32, 32, 3])
features = tf_keras.layers.GlobalAveragePooling2D()(inputs)
tf.saved_model.save(tf_keras.Model(inputs, features), "/cache/tiny_module")' 2>/dev/null
    module_flags+=(--tfhub_module=/cache/tiny_module)
    retrain_flags+=("${module_flags[@]}")
fi

phase "retrain (uid 4242)"
"${in_container[@]}" -v "${images}:/images:ro" -v "${out}:/out" -v "${cache}:/cache" \
    "${image}" retrain "${retrain_flags[@]}" --tflite_output_file=/out/model.tflite \
    >"${workdir}/retrain.log" 2>&1 \
    || { tail -n 30 "${workdir}/retrain.log" >&2; fail "retrain in the container"; }
[[ "$(cat "${out}/output_labels.txt")" == $'blue\ngreen\nred' ]] || fail "output_labels.txt"
# saved_model/ holds the SavedModel itself or in a numbered version folder (TF Serving's layout).
[[ -f "${out}/saved_model/saved_model.pb" || -f "${out}/saved_model/1/saved_model.pb" ]] \
    || fail "no saved_model.pb in saved_model/ or saved_model/1/"
"${python}" -c 'import json, sys; json.load(open(sys.argv[1]))' "${out}/metrics.json" \
    || fail "metrics.json does not parse"
[[ -n "$(find "${out}/summaries" -type f)" ]] || fail "no TensorBoard summaries"
[[ -n "$(find "${cache}/bottlenecks" -type f)" ]] || fail "no bottlenecks under /cache"
[[ ! -e "${out}/bottlenecks" ]] || fail "bottlenecks went to /out, not /cache"
not_owned="$(find "${out}" "${cache}" ! -uid 4242 | head -n 3)"
[[ -z "${not_owned}" ]] || fail "files not owned by uid 4242: ${not_owned}"
passed "retrain wrote labels, saved_model, metrics and summaries to /out, bottlenecks to /cache, as uid 4242"
"${python}" -c '
import json, sys
metrics = json.load(open(sys.argv[1] + "/metrics.json"))
audit = json.load(open(sys.argv[1] + "/audit.json"))
assert metrics["calibration"]["temperature"] > 0, metrics.get("calibration")
assert "threshold" in json.dumps(metrics["unknown"]), metrics.get("unknown")
assert metrics["audit"]["seconds"] >= 0 and "label_issues" in audit, metrics.get("audit")
' "${out}" || fail "metrics.json lacks calibration, unknown or audit, or audit.json is wrong"
[[ -f "${out}/audit.html" ]] || fail "no audit.html"
passed "retrain calibrated, set an unknown threshold and audited (audit.json, audit.html)"
if (( $(nproc) >= 2 )); then
    # Without a GPU, one forward pass per core at once (retrain.runtime.devices.configure_threads).
    grep -q "TensorFlow runs $(nproc) forward passes at once, one per core" "${workdir}/retrain.log" \
        || fail "retrain in the container did not run a forward pass per core"
    passed "retrain in the container runs one forward pass per core"
fi

phase "label_image (pipeline)"
# Two images and a missing one: a JSON line each, and a failing exit status for the missing one.
# As the issue's third example, with the image's own user, which reads what uid 4242 wrote.
set +e
docker run --rm --read-only --tmpfs /tmp -v "${out}:/out:ro" -v "${images}:/new:ro" "${image}" \
    label_image --image /new/red/red_000.png --image /new/blue/blue_001.png \
    --image /new/missing.png --output_format=json 2>"${workdir}/label_image.log" \
    | "${python}" -c '
import json, sys
records = [json.loads(line) for line in sys.stdin]
assert [record["path"] for record in records] == [
    "/new/red/red_000.png", "/new/blue/blue_001.png", "/new/missing.png"], records
for record in records[:2]:
    assert record["labels"][0] == record["path"].split("/")[2], record
    assert len(record["labels"]) == len(record["scores"]) == 3, record
    assert record["unknown"] in (True, False) and isinstance(record["unknown_score"], float), record
assert "error" in records[2], records[2]
'
statuses=("${PIPESTATUS[@]}")
set -e
[[ ${statuses[1]} == 0 ]] || fail "label_image's JSON output (log: $(tail -n 5 "${workdir}/label_image.log"))"
passed "label_image in a pipeline: one JSON line per image, the right top label, unknown or not"
[[ ${statuses[0]} != 0 ]] || fail "label_image exited 0 although an image was missing"
passed "label_image's failure is the container's exit status (${statuses[0]})"
if grep -q "fontManager" "${workdir}/label_image.log" "${workdir}/retrain.log"; then
    fail "matplotlib built its font list at run time (the image carries one)"
fi
passed "no font list built at run time (quiet stderr)"

phase "retrain audit (uid 4242)"
# A copy of the images with one red picture planted under green/: an exact duplicate across
# labels, which the audit must report. Only the planted file's bottleneck is new.
planted="${data}/planted"
cp -r "${images}" "${planted}"
cp "${planted}/red/red_000.png" "${planted}/green/planted_copy.png"
mkdir -p "${out}/audit_only"
chown "${run_uid}" "${out}/audit_only"
"${in_container[@]}" -v "${planted}:/images:ro" -v "${out}:/out" -v "${cache}:/cache" \
    "${image}" retrain audit "${module_flags[@]}" --output_dir=/out/audit_only \
    >"${workdir}/audit.log" 2>&1 \
    || { tail -n 30 "${workdir}/audit.log" >&2; fail "retrain audit in the container"; }
"${python}" -c '
import json, sys
audit = json.load(open(sys.argv[1]))
groups = [sorted(group["paths"]) for group in audit["duplicates"] if group["kind"] == "exact"]
assert ["green/planted_copy.png", "red/red_000.png"] in groups, audit["duplicates"]
assert audit["counts"]["label_conflicts"] >= 1, audit["counts"]
' "${out}/audit_only/audit.json" || fail "retrain audit missed the planted copy"
passed "retrain audit in the container finds a copy planted under another label"

phase "slim image (label_image without TensorFlow)"
light_image="${image_name}-light:latest"
docker build -f "${repo_dir}/docker/Dockerfile.light" --build-arg "BASE_IMAGE=${base_image}" \
    --tag "${light_image}" "${repo_dir}" >"${workdir}/build-light.log" 2>&1 \
    || { tail -n 40 "${workdir}/build-light.log" >&2; fail "slim image build"; }
light_said="$(docker run --rm --user "${run_uid}" --read-only --tmpfs /tmp -v "${out}:/out:ro" \
    -v "${images}:/new:ro" "${light_image}" label_image --tflite_model /out/model.tflite \
    --image /new/red/red_000.png 2>"${workdir}/label_image-light.log")" \
    || fail "label_image in the slim image (log: $(tail -n 5 "${workdir}/label_image-light.log"))"
full_said="$(docker run --rm --read-only --tmpfs /tmp -v "${out}:/out:ro" -v "${images}:/new:ro" \
    "${image}" label_image --tflite_model /out/model.tflite --image /new/red/red_000.png \
    2>/dev/null)" || fail "label_image --tflite_model in the full image"
[[ "$(grep -v '^unknown ' <<<"${light_said}" | head -n 1)" == "red "* \
    && "${light_said}" == "${full_said}" ]] \
    || fail "the slim image said ${light_said}, the full one ${full_said}"
passed "the slim image labels with the .tflite as the full image does"
if docker run --rm "${light_image}" python3 -c 'import tensorflow' >/dev/null 2>&1; then
    fail "the slim image has TensorFlow"
fi
passed "the slim image has no TensorFlow"
log "image sizes: full $(docker image inspect --format '{{.Size}}' "${image}") bytes," \
    "slim $(docker image inspect --format '{{.Size}}' "${light_image}") bytes"

phase "docker run --cpus 1"
# A CPU quota leaves the cores TensorFlow sees as they are: retrain reads the quota instead.
if (( $(nproc) >= 2 )); then
    docker run --rm --cpus 1 --read-only --tmpfs /tmp -v "${out}:/out:ro" -v "${images}:/new:ro" \
        "${image}" label_image --image /new/red/red_000.png \
        >"${workdir}/quota.out" 2>"${workdir}/quota.log" \
        || fail "label_image under --cpus 1 (log: $(tail -n 5 "${workdir}/quota.log"))"
    grep -q "The CPU quota allows 1 of $(nproc) cores: TensorFlow runs on 1 thread\." \
        "${workdir}/quota.log" || fail "label_image under --cpus 1 did not read the quota"
    [[ "$(grep -v '^unknown ' "${workdir}/quota.out" | head -n 1)" == "red "* ]] \
        || fail "label_image under --cpus 1 said: $(cat "${workdir}/quota.out")"
    passed "label_image under docker run --cpus 1 runs TensorFlow on 1 thread"
fi

phase "scripts/*.sh, cached rerun"
# The wrappers with a folder name that shell code, -v and --mount would all get wrong.
# They run as the caller's uid (root here) and reuse the first run's bottlenecks.
awkward="${data}/my run \$(touch EVALUATED) \"q\",c:x"
mkdir -p "${awkward}"
RETRAIN_IMAGE="${image}" RETRAIN_DOCKER_CACHE="${cache}" \
    "${repo_dir}/scripts/retrain.sh" "${images}" "${awkward}/out" "${retrain_flags[@]}" \
    >"${workdir}/retrain-script.log" 2>&1 \
    || { tail -n 30 "${workdir}/retrain-script.log" >&2; fail "scripts/retrain.sh"; }
[[ -f "${awkward}/out/saved_model/saved_model.pb" \
    || -f "${awkward}/out/saved_model/1/saved_model.pb" ]] || fail "scripts/retrain.sh wrote no model"
labels="$(cd "${images}" && RETRAIN_IMAGE="${image}" \
    "${repo_dir}/scripts/label_image.sh" "${awkward}/out" green/green_002.png \
    2>"${workdir}/label_image-script.log")"
# An "unknown <score>" line may come first: the exported threshold calls 5% of known images
# unknown by design, and a 40-step model's scores are rough. The top label is the next line.
[[ "$(grep -v '^unknown ' <<<"${labels}" | head -n 1)" == "green "* ]] \
    || fail "scripts/label_image.sh said: ${labels}"
[[ -z "$(find "${data}" -name EVALUATED)" ]] || fail "a path was evaluated as shell code"
passed "scripts/retrain.sh and scripts/label_image.sh with an awkward path"

phase "docker stop, Ctrl-C"
# Starts a long retrain, signals it after a few seconds, and checks how fast and how it ends.
check_signal() {
    local signal="$1" expected_status="$2" started seconds status
    docker run -d --name retrain-e2e-stop --user "${run_uid}" -v "${images}:/images:ro" \
        -v "${cache}:/cache" "${image}" retrain "${retrain_flags[@]}" \
        --how_many_training_steps=100000000 --output_dir=/tmp/out >/dev/null
    sleep 5
    started="$(date +%s)"
    if [[ "${signal}" == TERM ]]; then
        docker stop --time 30 retrain-e2e-stop >/dev/null
    else
        docker kill --signal "${signal}" retrain-e2e-stop >/dev/null
    fi
    status="$(timeout 30 docker wait retrain-e2e-stop)" || true
    seconds=$(($(date +%s) - started))
    docker rm --force retrain-e2e-stop >/dev/null
    ((seconds < 10)) || fail "SIG${signal}: retrain took ${seconds} s to stop"
    [[ "${status}" == "${expected_status}" ]] \
        || fail "SIG${signal}: retrain exited ${status}, not ${expected_status}"
    passed "SIG${signal} stops retrain in ${seconds} s with status ${status}"
}
check_signal TERM 143  # docker stop
check_signal INT 130   # Ctrl-C, which `docker run` passes on as SIGINT

phase ""
# Rebuilt images leave untagged ones behind in the kept data root.
docker image prune --force >/dev/null
log "timings:"
printf '  %s\n' "${timings[@]}" >&2
log "total $(($(date +%s) - started_at)) s"
echo "docker-e2e: ${checks_passed} passed, 0 failed"
