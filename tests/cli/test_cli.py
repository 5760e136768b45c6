"""The retrain command line: flags become the right config; user errors are one line."""

import subprocess
import sys

import pytest

from retrain.cli import shared_flags
from retrain.config import RetrainConfig
from retrain.errors import UserError
from tests.conftest import parse_retrain_flags


def test_defaults_match_retrain_py():
    config = parse_retrain_flags(["--image_dir=photos"])
    assert config == RetrainConfig(image_dir="photos")
    assert (config.how_many_training_steps, config.learning_rate, config.train_batch_size) == (4000, 0.01, 100)
    assert (config.testing_percentage, config.validation_percentage, config.eval_step_interval) == (10, 10, 10)
    resolved = config.resolved()
    assert resolved.bottleneck_dir == "retrain_output/bottlenecks"
    assert resolved.saved_model_dir == "retrain_output/saved_model"
    assert resolved.output_labels == "retrain_output/output_labels.txt"


def test_flags_reach_the_config():
    config = parse_retrain_flags(["--image_dir=p", "--how_many_training_steps=7",
                                  "--tfhub_module=/m", "--image_size=224x200",
                                  "--bottleneck_dir=/cache", "--print_misclassified_test_images"])
    assert config.how_many_training_steps == 7 and config.tfhub_module == "/m"
    assert config.image_size == (224, 200) and config.bottleneck_dir == "/cache"
    assert config.print_misclassified_test_images


@pytest.mark.parametrize("text, expected", [("224", (224, 224)), ("240x320", (240, 320)),
                                            ("96,128", (96, 128)), (None, None)])
def test_parse_image_size(text, expected):
    assert shared_flags.parse_image_size(text) == expected


def test_parse_image_size_rejects_nonsense():
    with pytest.raises(UserError, match=r"--image_size='big' is not a size"):
        shared_flags.parse_image_size("big")


def test_user_error_is_one_line_without_traceback(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "retrain", f"--image_dir={tmp_path / 'missing'}",
         f"--output_dir={tmp_path / 'out'}"], capture_output=True, text=True, check=False)
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    last = completed.stderr.strip().splitlines()[-1]
    assert last.startswith("retrain: error: --image_dir") and "does not exist" in last
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command, expected", [
    (["retrain"], ["--image_dir", "--how_many_training_steps", "--fine_tune", "--resume"]),
    (["retrain", "compare"], ["--modules", "--methods", "--random_crop"]),
    (["retrain.cli.label_image_command"], ["--saved_model_dir", "--image"]),
    (["retrain", "bottlenecks"], ["--image_dir", "--bottleneck_dir", "--runner", "--image_size"]),
])
def test_help_lists_the_commands_own_flags(command, expected):
    # --helpfull lists every flag the command's modules define (not absl's own).
    completed = subprocess.run([sys.executable, "-m", *command, "--helpfull"], capture_output=True,
                               text=True, check=False, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr
    for flag in expected:
        name = flag.removeprefix("--")
        assert f"  --{name}=" in completed.stdout or f"  --[no]{name}\n" in completed.stdout, flag
    assert "--logtostderr" not in completed.stdout
