"""User journeys: every command README.md and docs/*.md show, run as a user runs it.

The commands come from the documents' fenced shell blocks (documented_commands.py). Each runs
through `bash -c`, as written, in one workspace per session that holds what the documents
assume (photos/<class>/*.jpg, the images label_image is shown on, a stand-in for the
checkout's scripts/ and .venv), in document order, so later commands find what earlier ones
wrote: the installed console scripts first on PATH, several forward passes at once even on a
one-core machine (RETRAIN_FORWARD_PASSES=2). Each run must exit 0, print no Traceback, write
its files and print what the documents say it prints.

A documented command that cannot run here is listed in NOT_RUNNABLE with the reason; one that
is neither there nor in JOURNEYS fails test_every_documented_command_is_accounted_for (it is
still run, with the generic checks). Where a command would take minutes, JOURNEYS appends a
few flags (absl keeps the last value of a repeated flag) and says why.
"""

import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional, Tuple

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

import documented_commands

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent  # The environment the suite runs in: its console scripts.
# `retrain bottlenecks` needs Apache Beam, which lives in an environment of its own that
# scripts/test.sh builds before it runs pytest.
BEAM_VENV = Path(os.environ.get("RETRAIN_E2E_BEAM_VENV") or REPO / ".venv-beam")
# Built-in backbones are built once (about 10 s) into a cache kept between sessions.
BACKBONE_CACHE = Path(tempfile.gettempdir()) / f"retrain-e2e-backbones-{os.getuid()}"
FORWARD_PASSES = 2

CLASSES = ("daisy", "roses", "tulips")
PHOTOS_PER_CLASS = 40  # 120 images: 30 or more batches of 4 in the bottleneck stage.
IMAGE_SUFFIXES = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP",
                  ".gif": "GIF", ".bmp": "BMP"}
PASSES_LINE = f"TensorFlow runs {FORWARD_PASSES} forward passes at once"
LABEL_LINE = r"^(daisy|roses|tulips) [01]\.\d+$"


@dataclasses.dataclass
class Journey:
    """What one documented command must do, and how it is run here."""
    extra_flags: str = ""      # appended to the command; absl keeps a repeated flag's last value
    why: str = ""              # why extra_flags (or anything else unusual) is needed
    files: Tuple[str, ...] = ()           # paths under the workspace it must leave behind
    stdout: Tuple[str, ...] = ()          # regexes (multiline) its stdout must match
    stderr: Tuple[str, ...] = ()          # regexes (multiline) its stderr must match
    check: Optional[Callable] = None      # check(workspace, completed_process)
    beam: bool = False                    # runs with the Beam environment's bin first on PATH
    needs_beam: bool = False              # relies on what a `beam` command wrote
    # Seconds; about 3 times what it took on 2 cores shared with other jobs (load 5 to 8).
    timeout: int = 180


def _labels_file(path):
    def check(workspace, _):
        assert (workspace / path).read_text().splitlines() == list(CLASSES)
    return check


def _metrics(path, *keys):
    def check(workspace, _):
        metrics = json.loads((workspace / path).read_text())
        for key in keys:
            assert key in metrics, f"{path} has no {key!r}: {sorted(metrics)}"
    return check


def _both(*checks):
    def check(workspace, result):
        for each in checks:
            each(workspace, result)
    return check


def _labels_per_image(count, top=len(CLASSES)):
    """stdout as label_image prints several images: a path line, `unknown <score>` if the
    image is unknown (any image may be: the threshold keeps 95% of known ones known), then
    `top` label lines."""
    def check(_, result):
        blocks = []
        for line in result.stdout.splitlines():
            if re.match(r"^\S+ -?\d+\.\d+$", line):
                assert blocks, f"a score line before any path line: {line}"
                blocks[-1].append(line)
            else:
                blocks.append([line])
        assert len(blocks) == count, result.stdout
        for _, *lines in blocks:
            assert len(lines) == top + _is_unknown_line(lines[:1]), lines
            for line in lines[_is_unknown_line(lines[:1]):]:
                assert re.match(r"^\S+ [01]\.\d+$", line), line
    return check


def _is_unknown_line(lines):
    """1 if the first of lines is label_image's `unknown <score>` line, else 0."""
    return int(bool(lines) and re.match(r"^unknown -?\d+\.\d+$", lines[0]) is not None)


def _json_lines(folder):
    """stdout of `--output_format json` on a folder: one object per image in it."""
    def check(workspace, result):
        images = sorted(str(path.relative_to(workspace))
                        for path in (workspace / folder).rglob("*") if path.is_file())
        records = [json.loads(line) for line in result.stdout.splitlines()]
        assert sorted(os.path.normpath(record["path"]) for record in records) == images
        for record in records:
            assert set(record["labels"]) == set(CLASSES), record
            assert isinstance(record["unknown"], bool), record
            assert isinstance(record["unknown_score"], float), record
            assert len(record["scores"]) == len(CLASSES), record
            assert record["scores"] == sorted(record["scores"], reverse=True), record
    return check


_RETRAIN_OUTPUTS = ("saved_model/1/saved_model.pb", "output_labels.txt", "metrics.json",
                    "report.html", "training_curves.png", "confusion_matrix.png",
                    "training_log.txt")

# The documented commands this suite runs, by their normalized text (`*`: any text), and what
# each must do beyond exit status 0 and no Traceback.
JOURNEYS = {
    "bash scripts/demo.sh": Journey(
        why="runs in the workspace's copy of scripts/, whose .venv is the suite's environment "
            "with pip stubbed out (offline: no reinstall), on example/digits made beforehand "
            "with --per_class 20 (200 digits; the full 4,950 take 1-2 minutes)",
        files=("example/output/saved_model/1/saved_model.pb", "example/output/metrics.json"),
        stderr=(PASSES_LINE, r"Final test accuracy = [\d.]+% \(N=\d+\)"),
        check=_labels_per_image(5, top=3), timeout=300),
    "retrain --image_dir photos --output_dir out": Journey(
        files=tuple(f"out/{name}" for name in _RETRAIN_OUTPUTS) + ("out/bottlenecks",),
        stderr=(PASSES_LINE, r"Final test accuracy = [\d.]+% \(N=\d+\)",
                r"Done\. 120 bottlenecks computed"),
        check=_both(_labels_file("out/output_labels.txt"),
                    _metrics("out/metrics.json", "skipped_images", "test_top1_accuracy"))),
    "retrain --image_dir photos --fine_tune": Journey(
        extra_flags="--bottleneck_dir out/bottlenecks --how_many_training_steps 100 "
                    "--fine_tune_epochs 2 --fine_tune_batch_size 4",
        why="8 epochs of the top blocks take minutes on a CPU: 2 epochs of batches of 4 here, "
            "on the bottlenecks the first retrain computed",
        files=tuple(f"retrain_output/{name}" for name in _RETRAIN_OUTPUTS),
        stderr=(r"Final test accuracy = [\d.]+% \(N=\d+\)",),
        check=_metrics("retrain_output/metrics.json", "fine_tune"), timeout=240),
    "retrain compare --image_dir photos --modules efficientnet_lite0,efficientnet_lite2,"
    "keras/resnet50": Journey(
        extra_flags="--modules efficientnet_lite0,efficientnet_lite2 --bottleneck_dir "
                    "out/bottlenecks --how_many_training_steps 200 --baseline_epochs 1",
        why="keras/resnet50's ImageNet weights come from the internet (Keras' weight store); "
            "lite0's bottlenecks from the first retrain, fewer steps and one baseline epoch "
            "keep it short",
        files=tuple(f"compare_output/comparison.{kind}" for kind in ("md", "csv", "json", "png")),
        stdout=(r"efficientnet_lite0", r"efficientnet_lite2"), timeout=240),
    "retrain bottlenecks --image_dir photos --bottleneck_dir cache --tfhub_module "
    "efficientnet_lite0": Journey(
        beam=True, why="runs in the Beam environment (.venv-beam), as scripts/test.sh builds it",
        check=lambda workspace, _: _has_files(workspace / "cache", "efficientnet_lite0*/*")),
    "retrain --image_dir photos --bottleneck_dir cache": Journey(
        extra_flags="--how_many_training_steps 200",
        why="what it shows is '0 bottlenecks computed'; the first retrain ran the 4000 steps",
        needs_beam=True, stderr=(r"Done\. 0 bottlenecks computed",),
        files=("retrain_output/saved_model/1/saved_model.pb",)),
    "retrain audit --image_dir photos --output_dir out": Journey(
        why="the bottlenecks of the first retrain (same --output_dir) are reused",
        files=("out/audit.json", "out/audit.html"), stderr=(r"Audit: \d+ possible label errors",),
        check=lambda workspace, _: _has_audit_lists(workspace / "out/audit.json")),
    "label_image --saved_model_dir out/saved_model --image some.jpg": Journey(
        stdout=(LABEL_LINE,),
        check=lambda _, result: _label_lines_only(result.stdout, len(CLASSES))),
    "label_image --saved_model_dir out/saved_model --image a.jpg b.png c.webp": Journey(
        check=_labels_per_image(3)),
    "label_image --saved_model_dir out/saved_model --image_dir new_photos --output_format json":
        Journey(stderr=(PASSES_LINE,), check=_json_lines("new_photos")),
    "label_image --saved_model_dir example/output/saved_model --num_top_predictions 3 --image "
    "example/digits_holdout/7/mnist_3995.png cat.jpg coffee.jpg": Journey(
        why="the demo's model; the three images are the workspace's stand-in photos (the "
            "README's cat and coffee cup are scikit-image's), so which is unknown is not checked",
        check=_labels_per_image(3, top=3)),
    "retrain --image_dir photos --output_dir out --tflite_output_file model.tflite "
    "--onnx_output_file model.onnx": Journey(
        extra_flags="--output_dir out_onnx --bottleneck_dir out/bottlenecks "
                    "--how_many_training_steps 300",
        why="out is the README's model, which later commands label with; the cached "
            "bottlenecks and fewer steps keep it short",
        files=("model.tflite", "model.onnx", "model_labels.txt"),
        check=_metrics("out_onnx/metrics.json", "tflite", "onnx")),
    "label_image --onnx_model model.onnx --image_dir new_photos": Journey(
        check=_labels_per_image(9)),
    "label_image --tflite_model model.tflite --image_dir new_photos": Journey(
        check=_labels_per_image(9)),
}


def _has_audit_lists(path):
    written = json.loads(path.read_text())
    assert {"label_issues", "duplicates", "outliers", "counts"} <= set(written), sorted(written)
    assert written["counts"]["images"] == len(CLASSES) * PHOTOS_PER_CLASS, written["counts"]


def _has_files(folder, pattern):
    assert any(path.is_file() for path in folder.glob(pattern)), f"no {pattern} in {folder}"


def _label_lines_only(stdout, count):
    lines = stdout.splitlines()
    lines = lines[_is_unknown_line(lines):]
    assert len(lines) == count and all(re.match(LABEL_LINE, line) for line in lines), stdout


_NEEDS_DOCKER = "needs a Docker engine (tests/docker/run_docker_e2e.sh has one, as root)"
_COVERED = "covered by tests/docker/run_docker_e2e.sh"
_GPU = "needs an NVIDIA GPU and its container toolkit; the GPU image is not built here"
# Documented commands that do not run here, and why. Keep it short and true.
NOT_RUNNABLE = {
    "bash scripts/test.sh": "the CI command itself (.ci/run): it runs this suite",
    "pip install *": "installs packages: CI's scripts/test.sh installs the test environment",
    "python -m pytest tests/test_docker_static.py tests/test_entrypoint.py "
    "tests/test_docker_light_static.py":
        "these test files are part of the pytest run CI makes (scripts/test.sh)",
    "python3.11 -m venv tfjs-env": "TensorFlow.js's environment (TensorFlow 2.19, 1.5 GB), "
                                   "checked by hand (docs/export-formats.md says how)",
    "tfjs-env/bin/pip install *": "installs TensorFlow 2.19 beside the project's 2.21; checked "
                                  "by hand",
    "tfjs-env/bin/tensorflowjs_converter *": "needs tfjs-env (TensorFlow 2.19); checked by hand "
                                             "with TensorFlow.js 4.22 in Node",
    "docker build -f docker/Dockerfile.light -t retrain:light .":
        f"{_COVERED} (the same build, on its stand-in base image)",
    "docker run --rm -v /data/out:/out:ro -v /data/new:/new:ro retrain:light label_image "
    "--tflite_model /out/model.tflite --image /new/x.jpg":
        f"{_COVERED} (the slim image's label_image --tflite_model, against the full image's)",
    "docker run --rm -p 8501:8501 -v \"$PWD/out/saved_model:/models/retrain\" -e "
    "MODEL_NAME=retrain tensorflow/serving":
        "TF Serving is not installable here (no server on PyPI or in Debian; the "
        "tensorflow/serving image needs Docker Hub); tests/export/test_serving_rest.py checks "
        "the documented requests against the signatures",
    "curl -s -d @request.json http://localhost:8501/v1/models/retrain:predict":
        "needs the TF Serving above (tests/export/test_serving_rest.py checks the request body)",
    "sudo bash tests/docker/run_docker_e2e.sh":
        "CI's .ci/run runs it (as root): it needs root and installs a Docker engine",
    "scripts/build.sh": f"{_COVERED} (scripts/build.sh cpu, a local stand-in BASE_IMAGE)",
    "docker build -t retrain .": f"{_NEEDS_DOCKER}; the same build as scripts/build.sh cpu, "
                                 f"which it runs",
    "docker run --rm --user \"$(id -u):$(id -g)\" -v /data/photos:/images:ro -v /data/out:/out "
    "-v retrain-cache:/cache retrain retrain --image_dir /images":
        f"{_COVERED} (--user, images :ro, /out and /cache mounted; /cache a folder)",
    "docker run --rm --user \"$(id -u):$(id -g)\" -v /data/photos:/images:ro -v /data/out:/out "
    "-v retrain-cache:/cache retrain retrain audit":
        f"{_COVERED} (retrain audit as uid 4242, images :ro, on a copy with a planted duplicate)",
    "docker run --rm -v /data/out:/out:ro -v /data/new:/new:ro retrain label_image --image "
    "/new/x.jpg": f"{_COVERED} (label_image --image with /out and /new read-only)",
    "docker run --rm -v /data/out:/out:ro -v /data/new:/new:ro retrain label_image --image_dir "
    "/new --output_format=json | jq *":
        f"{_NEEDS_DOCKER}; it runs --output_format=json in a pipeline, with --image, not "
        f"--image_dir and jq",
    "scripts/retrain.sh /data/photos /data/out --how_many_training_steps=500":
        f"{_COVERED} (scripts/retrain.sh IMAGES OUT --how_many_training_steps=40)",
    "scripts/label_image.sh /data/out new/x.jpg new/y.jpg --output_format=json":
        f"{_NEEDS_DOCKER}; it runs scripts/label_image.sh OUT with one relative image, "
        f"text output",
    "RETRAIN_DOCKER_CACHE=* scripts/retrain.sh ...":
        f"{_COVERED} (RETRAIN_DOCKER_CACHE set to a folder)",
    "scripts/build.sh gpu": _GPU,
    "docker build --build-arg VARIANT=gpu -t retrain:gpu .": _GPU,
    "RETRAIN_GPUS=all scripts/retrain.sh *": _GPU,
    "docker run --rm --gpus *": _GPU,
}

# Not in a fenced block, but documented in the text, and the way the first user's crash came:
# label_image on a folder with a .tflite model (then two forward passes at once on one
# interpreter). label_image now runs a .tflite without TensorFlow, one pass at a time
# (predict/predictions.py), so no "forward passes" line; retrain's TFLite evaluation still runs
# several (tests/export/test_tflite.py covers that). Run after the documented commands, in the
# same workspace.
EXTRA_JOURNEYS = {
    "python -m retrain --image_dir photos --output_dir out_tflite --bottleneck_dir "
    "out/bottlenecks --how_many_training_steps 300 --tflite_output_file model.tflite": Journey(
        files=("model.tflite", "model_labels.txt", "out_tflite/saved_model/1/saved_model.pb",
               "model_calibration.json"),
        stderr=(r"Done\. 0 bottlenecks computed",),
        check=_both(_labels_file("model_labels.txt"),
                    _metrics("out_tflite/metrics.json", "tflite"))),
    "label_image --tflite_model model.tflite --image_dir new_photos": Journey(
        check=_labels_per_image(9)),
}

DOCUMENTED = documented_commands.collect(REPO)


def entry_for(table, command):
    """The (pattern, value) of the table entries that match command (list)."""
    return [(pattern, value) for pattern, value in table.items()
            if documented_commands.pattern_matches(pattern, command)]


def _runnable():
    """Each documented command not in NOT_RUNNABLE (once, in document order), then the extras."""
    seen, runs = set(), []
    for command in DOCUMENTED:
        if command.text in seen or entry_for(NOT_RUNNABLE, command.text):
            continue
        seen.add(command.text)
        matches = entry_for(JOURNEYS, command.text)
        runs.append((command.text, matches[0][1] if matches else Journey()))
    return runs + list(EXTRA_JOURNEYS.items())


RUNS = _runnable()


# The workspace.

def photo(rng, label, size):
    """A photo-like RGB image (PIL) of the class: a shaded background and blurred shapes."""
    width, height = size
    base = {"daisy": (60, 120, 50), "roses": (70, 40, 40), "tulips": (90, 110, 160)}[label]
    shade = np.linspace(0.6, 1.2, height)[:, None, None] * np.array(base)[None, None, :]
    pixels = np.clip(shade + rng.normal(0, 18, (height, width, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    colour = {"daisy": (245, 245, 235), "roses": (200, 20, 40), "tulips": (250, 190, 20)}[label]
    for _ in range(rng.integers(3, 8)):
        x, y = rng.integers(0, width), rng.integers(0, height)
        radius = int(rng.integers(min(size) // 12, min(size) // 4))
        stretch = 2 if label == "tulips" else 1
        jitter = tuple(int(c + rng.integers(-20, 20)) for c in colour)
        draw.ellipse([x - radius, y - radius * stretch, x + radius, y + radius * stretch],
                     fill=jitter)
    return image.filter(ImageFilter.GaussianBlur(1.2))


def write_photos(folder, per_class, seed, suffix=".jpg"):
    """folder/<class>/<class>_NNN<suffix> for each class, photos of varied sizes."""
    rng = np.random.default_rng(seed)
    for label in CLASSES:
        (folder / label).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            size = (int(rng.integers(96, 480)), int(rng.integers(80, 360)))
            write_image(folder / label / f"{label}_{index:03d}{suffix}", photo(rng, label, size))


def write_image(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, IMAGE_SUFFIXES[path.suffix.lower()])


def provide_inputs(workspace, command):
    """Writes the images a command names that the workspace lacks: files with an image suffix
    (a photo of a class) and --image_dir folders (3 classes x 3 photos). Returns their paths."""
    try:
        words = shlex.split(command)
    except ValueError:
        return []
    made = []
    rng = np.random.default_rng(len(command))
    for index, word in enumerate(words):
        if word.startswith(("-", "/", "$")) or "=" in word:
            continue
        path = workspace / word
        if path.suffix.lower() in IMAGE_SUFFIXES and not path.exists():
            write_image(path, photo(rng, CLASSES[len(made) % len(CLASSES)], (220, 160)))
            made.append(word)
        elif index > 0 and words[index - 1] == "--image_dir" and not path.exists():
            write_photos(path, 3, seed=len(made), suffix=".jpg")
            made.append(word)
    return made


def make_checkout_stand_in(workspace):
    """The workspace as the top of a checkout, for `bash scripts/...`: a copy of scripts/, and a
    .venv whose python is the suite's (with `-m pip` a no-op: nothing to install, no network)
    and whose console scripts are the suite's."""
    shutil.copytree(REPO / "scripts", workspace / "scripts")
    shutil.copy(REPO / "requirements.txt", workspace / "requirements.txt")
    bin_dir = workspace / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.write_text(
        "#!/usr/bin/env bash\n"
        "# The e2e workspace's stand-in: the installed environment, nothing to install.\n"
        'if [ "${1:-}" = -m ] && [ "${2:-}" = pip ]; then\n'
        '    echo "e2e: skipped pip $*" >&2; exit 0\n'
        "fi\n"
        f"exec {shlex.quote(sys.executable)} \"$@\"\n")
    python.chmod(0o755)
    for name in ("retrain", "label_image"):
        (bin_dir / name).symlink_to(VENV_BIN / name)
    # demo.sh builds example/digits only if it is missing: a 200-digit subset, made here.
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_example_dataset.py"),
                    str(workspace / "example" / "digits"), "--per_class", "20", "--holdout", "5"],
                   check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("journeys")
    write_photos(root / "photos", PHOTOS_PER_CLASS, seed=0)
    make_checkout_stand_in(root)
    return root


def environment(beam=False):
    """The environment a user's shell has after activating the venv, plus this suite's two."""
    env = dict(os.environ)
    bins = [str(VENV_BIN)]
    if beam:
        bins.insert(0, str(BEAM_VENV / "bin"))
    env["PATH"] = os.pathsep.join(bins + [env.get("PATH", "/usr/bin:/bin")])
    env["VIRTUAL_ENV"] = str(Path(bins[0]).parent)
    env["RETRAIN_CACHE_DIR"] = str(BACKBONE_CACHE)
    env["RETRAIN_FORWARD_PASSES"] = str(FORWARD_PASSES)
    return env


_beam_skipped = []


def run_journey(workspace, command, journey):
    """Runs one command in the workspace through bash and checks it as its Journey says."""
    if journey.beam and not (BEAM_VENV / "bin" / "retrain").exists():
        _beam_skipped.append(command)
        pytest.skip(f"needs {BEAM_VENV} (bash scripts/test.sh builds it before running pytest)")
    if journey.needs_beam and _beam_skipped:
        pytest.skip(f"relies on {_beam_skipped[0]!r}, which was skipped")
    provide_inputs(workspace, command)
    full = f"{command} {journey.extra_flags}".strip()
    result = subprocess.run(["bash", "-c", full], cwd=workspace, env=environment(journey.beam),
                            capture_output=True, text=True, timeout=journey.timeout - 5)
    # Without the training steps' log lines, which would push the error out of sight.
    stderr = "\n".join(line for line in result.stderr.splitlines()
                       if not re.search(r"(Fine-tune step|Step) \d+: ", line))
    where = f"$ {full}\n--- stdout:\n{result.stdout[-3000:]}\n--- stderr:\n{stderr[-6000:]}"
    assert result.returncode == 0, f"exit status {result.returncode}\n{where}"
    assert "Traceback" not in result.stderr, where
    for path in journey.files:
        assert (workspace / path).exists(), f"{path} was not written\n{where}"
    for pattern in journey.stdout:
        assert re.search(pattern, result.stdout, re.MULTILINE), f"stdout lacks {pattern!r}\n{where}"
    for pattern in journey.stderr:
        assert re.search(pattern, result.stderr, re.MULTILINE), f"stderr lacks {pattern!r}\n{where}"
    if journey.check:
        try:
            journey.check(workspace, result)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{where}") from error


@pytest.mark.parametrize("command, journey", [
    pytest.param(command, journey, id=command[:70],
                 marks=[pytest.mark.timeout(journey.timeout), pytest.mark.e2e])
    for command, journey in RUNS])
def test_journey(workspace, command, journey):
    run_journey(workspace, command, journey)


# The tables against the documents.

@pytest.mark.timeout(30)
def test_the_documents_show_commands():
    """The collector still finds the main commands (a rewritten document's blocks included)."""
    programs = {command.text.split()[0] for command in DOCUMENTED}
    assert {"retrain", "label_image"} <= programs, DOCUMENTED


@pytest.mark.timeout(30)
def test_every_documented_command_is_accounted_for():
    """A newly documented command needs a Journey (its checks) or a reason it cannot run."""
    unaccounted = [f"{command.document}: {command.text}" for command in DOCUMENTED
                   if not entry_for(JOURNEYS, command.text)
                   and not entry_for(NOT_RUNNABLE, command.text)]
    assert not unaccounted, ("Documented commands with no entry in JOURNEYS (what it must do) "
                             "or NOT_RUNNABLE (why it cannot run here):\n" + "\n".join(unaccounted))


@pytest.mark.timeout(30)
def test_each_command_matches_one_entry():
    doubles = {command.text: [pattern for pattern, _ in
                              entry_for(JOURNEYS, command.text) + entry_for(NOT_RUNNABLE,
                                                                            command.text)]
               for command in DOCUMENTED}
    assert {text: patterns for text, patterns in doubles.items() if len(patterns) > 1} == {}


@pytest.mark.timeout(30)
def test_no_entry_outlives_its_command():
    """An entry whose command left the documents goes too (or was reworded: update it)."""
    texts = [command.text for command in DOCUMENTED]
    stale = [pattern for pattern in (*JOURNEYS, *NOT_RUNNABLE)
             if not any(documented_commands.pattern_matches(pattern, text) for text in texts)]
    assert stale == []


@pytest.mark.timeout(30)
def test_collector_reads_blocks_as_a_shell_would():
    markdown = "\n".join([
        "Text with `retrain --inline` code, not a block.",
        "```bash",
        "# a comment line",
        "retrain --image_dir photos \\",
        "    --output_dir   out      # trailing comment",
        "echo '# not a comment' \"#\" a#b",
        "```",
        "- In a list:",
        "  ```",
        "  INFO: 2026-11-23 12:24:51: Step 10: Train accuracy = 65.0%",
        "  ```",
        "  ```",
        "  label_image --image x.jpg",
        "  ```",
        "```console",
        "$ retrain --help",
        "usage: retrain ...",
        "```",
        "```python",
        "import retrain",
        "```",
        "````sh",
        "RETRAIN_GPUS=all scripts/retrain.sh a b",
        "```",
        "````",
    ])
    assert documented_commands.commands_in(markdown) == [
        "retrain --image_dir photos --output_dir out",
        "echo '# not a comment' \"#\" a#b",
        "label_image --image x.jpg",
        "retrain --help",
        "RETRAIN_GPUS=all scripts/retrain.sh a b",
        "```",
    ]
    assert documented_commands.pattern_matches("docker run --gpus * retrain",
                                               "docker run --gpus '\"device=0\"' ... retrain")
    assert not documented_commands.pattern_matches("pip install *", "pip3 install .")
