"""--help, usage errors and the checks made before TensorFlow is imported, for every command.

Each command runs as a subprocess, as a user runs it. None of these should import
TensorFlow: the tests check that directly (sys.modules), not by timing.
"""

import subprocess
import sys

import pytest

from tests.conftest import run_reporting_tensorflow

pytestmark = pytest.mark.timeout(120)

COMMANDS = {
    "retrain": ["retrain"],
    "label_image": ["retrain.cli.label_image_command"],
    "retrain compare": ["retrain", "compare"],
    "retrain bottlenecks": ["retrain", "bottlenecks"],
}


def _run(module_args, *args, cwd=None):
    return subprocess.run([sys.executable, "-m", *module_args, *args], capture_output=True,
                          text=True, check=False, timeout=100, cwd=cwd)


@pytest.mark.parametrize("program", sorted(COMMANDS))
def test_help_exits_0_with_a_summary_an_example_and_the_first_flags(program):
    completed = run_reporting_tensorflow(COMMANDS[program], "--help")
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    assert out.startswith(f"usage: {program} ")
    assert "\nExamples:\n" in out and f"  {program.split()[0]} " in out
    assert "--helpfull' lists them all" in out
    # The flags a user needs first, in groups, not the whole alphabet.
    assert 5 <= out.count("\n  --") <= 16
    assert "tensorflow imported: False" in completed.stderr


def test_retrain_help_names_the_subcommands_and_the_required_flag():
    out = _run(COMMANDS["retrain"], "-h").stdout
    assert "retrain compare" in out and "retrain bottlenecks" in out
    assert "  --image_dir=FOLDER\n        Folder with one subfolder of images per label (required)." in out
    assert "(default: '')" not in out


def test_helpfull_lists_every_flag_and_exits_0():
    completed = _run(COMMANDS["retrain"], "--helpfull")
    assert completed.returncode == 0
    for flag in ("--how_many_training_steps=N", "--bottleneck_dir=FOLDER", "--[no]fine_tune",
                 "--tflite_quantization=none|dynamic|float16|int8", "--logical_cpu_devices=N"):
        assert f"\n  {flag}\n" in completed.stdout, flag


# Not `retrain bottlenecks`: the flags it does not know are Beam's pipeline options.
@pytest.mark.parametrize("program", ["retrain", "label_image", "retrain compare"])
def test_a_mistyped_flag_is_a_one_line_usage_error_with_status_2(program):
    completed = run_reporting_tensorflow(COMMANDS[program], "--image_dri=photos")
    assert completed.returncode == 2
    lines = [line for line in completed.stderr.splitlines() if not line.startswith("tensorflow")]
    assert len(lines) == 1
    assert lines[0].startswith(f"{program}: error: unknown flag --image_dri; did you mean "
                               "--image_dir")
    assert lines[0].endswith(f"? Run '{program} --help' for usage.")
    assert "tensorflow imported: False" in completed.stderr


@pytest.mark.parametrize("args, message", [
    (["--how_many_training_steps=-5"], "flag --how_many_training_steps=-5: -5 is not a "
                                       "non-negative integer"),
    (["--image_dir"], "Missing value for flag --image_dir"),
    (["--nooutput_dir"], "--nooutput_dir is for a boolean flag; --output_dir is not one"),
    (["photos"], "unexpected argument 'photos'; every setting is a --flag"),
    (["--tflite_quantization=int4"], "flag --tflite_quantization=int4: value should be one of"),
])
def test_bad_flag_values_are_usage_errors(args, message):
    completed = _run(COMMANDS["retrain"], *args)
    assert completed.returncode == 2
    assert completed.stderr.startswith(f"retrain: error: {message}")
    assert completed.stderr.count("\n") == 1


def _two_classes(tmp_path, images_per_class=1):
    """photos/a and photos/b, with tiny real PNGs (or none)."""
    from PIL import Image  # pylint: disable=import-outside-toplevel
    for label, colour in (("a", (255, 0, 0)), ("b", (0, 0, 255))):
        (tmp_path / "photos" / label).mkdir(parents=True)
        for index in range(images_per_class):
            Image.new("RGB", (8, 8), colour).save(tmp_path / "photos" / label / f"{index}.png")
    return tmp_path / "photos"


@pytest.mark.parametrize("make_args, message", [
    (lambda tmp: [], "Must set flag --image_dir"),
    (lambda tmp: [f"--image_dir={tmp / 'missing'}"], "does not exist or is not a folder"),
    (lambda tmp: [f"--image_dir={_two_classes(tmp, 0)}"], "has no usable images"),
    (lambda tmp: [f"--image_dir={_two_classes(tmp, 1)}"], "too few to give each of training, validation"),
    (lambda tmp: [f"--image_dir={_two_classes(tmp, 30)}", "--testing_percentage=95"],
     "--testing_percentage"),
    (lambda tmp: [f"--image_dir={_two_classes(tmp, 30)}", "--random_crop=300"],
     "--random_crop=300 is a percentage from 0 to 100"),
    (lambda tmp: [f"--image_dir={_two_classes(tmp, 30)}", "--tflite_quantization=int8"],
     "--tflite_quantization=int8 needs a file to write"),
    (lambda tmp: [f"--image_dir={_two_classes(tmp, 30)}", f"--tfhub_module={tmp / 'nowhere'}"],
     "is not a folder; pass a SavedModel folder"),
])
def test_retrain_reports_folder_and_setting_mistakes_before_importing_tensorflow(
        tmp_path, make_args, message):
    completed = run_reporting_tensorflow(COMMANDS["retrain"], *make_args(tmp_path),
                                         f"--output_dir={tmp_path / 'out'}", cwd=tmp_path)
    assert completed.returncode == 2, completed.stderr
    assert message in completed.stderr
    assert "tensorflow imported: False" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    ([], "No images given"),
    (["--image=x.jpg", "--saved_model_dir=missing"], "--saved_model_dir 'missing' does not exist"),
    (["--image=x.jpg", "--saved_model_dir=."], "is not a SavedModel (it has no saved_model.pb, nor "
                                               "a numbered version folder with one)"),
    (["--image=x.jpg", "--tflite_model=missing.tflite"], "--tflite_model 'missing.tflite' does not"),
    (["--image=x.jpg", "--labels=l.txt"], "--labels='l.txt' goes with --tflite_model"),
    (["--evaluate"], "--evaluate needs --image_dir"),
    (["--image_dir=missing"], "--image_dir 'missing' is not a folder"),
])
def test_label_image_reports_mistakes_before_importing_tensorflow(tmp_path, args, message):
    completed = run_reporting_tensorflow(COMMANDS["label_image"], *args, cwd=tmp_path)
    assert completed.returncode == 2, completed.stderr
    assert message in completed.stderr
    assert "tensorflow imported: False" in completed.stderr


def test_compare_reports_an_empty_modules_list_before_importing_tensorflow(tmp_path):
    completed = run_reporting_tensorflow(COMMANDS["retrain compare"],
                                         f"--image_dir={_two_classes(tmp_path, 2)}")
    assert completed.returncode == 2
    assert "--modules is empty" in completed.stderr
    assert "tensorflow imported: False" in completed.stderr


def test_the_command_line_modules_import_no_tensorflow():
    completed = subprocess.run(
        [sys.executable, "-c", "import sys; import retrain.cli.retrain_command, retrain.cli.label_image_command, "
         "retrain.cli.compare_command, retrain.cli.bottlenecks_command, retrain.preflight; "
         "print(sorted(m for m in ('tensorflow', 'tensorflow_hub', 'keras') if m in sys.modules))"],
        capture_output=True, text=True, check=True, timeout=60)
    assert completed.stdout.strip() == "[]"
