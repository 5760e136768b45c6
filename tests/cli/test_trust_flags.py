"""The calibration/unknown and version-folder flags: they reach the config, and a bad value
is a one-line error naming it, before TensorFlow is imported (flags, preflight, label_image)."""

import pytest

from retrain import preflight
from retrain.config import RetrainConfig
from retrain.errors import UserError
from tests.conftest import parse_retrain_flags
from tests.conftest import run_reporting_tensorflow

pytestmark = pytest.mark.timeout(120)

def _run(module, *args, cwd=None):
    return run_reporting_tensorflow([module], *args, cwd=cwd)


def test_trust_flags_reach_the_config_and_default_to_the_configs_values():
    assert parse_retrain_flags(["--image_dir=p"]) == RetrainConfig(image_dir="p")
    defaults = RetrainConfig(image_dir="p")
    assert (defaults.unknown_known_share, defaults.unknown_method, defaults.saved_model_version) \
        == (0.95, "max_logit", 1)
    config = parse_retrain_flags(["--image_dir=p", "--unknown_known_share=0.9",
                                  "--unknown_method=knn", "--unknown_neighbors=5",
                                  "--unknown_bank_size=200", "--saved_model_version=3"])
    assert (config.unknown_known_share, config.unknown_method, config.unknown_neighbors,
            config.unknown_bank_size, config.saved_model_version) == (0.9, "knn", 5, 200, 3)
    unversioned = parse_retrain_flags(["--image_dir=p", "--saved_model_version=0"])
    assert unversioned.saved_model_version == 0


@pytest.mark.parametrize("arg, message", [
    ("--unknown_known_share=1.5", "flag --unknown_known_share=1.5: 1.5 is not a number in the "
                                  "range [0.01, 1.0]"),
    ("--unknown_known_share=0", "flag --unknown_known_share=0: 0.0 is not a number in the range"),
    ("--unknown_known_share=most", "flag --unknown_known_share=most: could not convert"),
    ("--unknown_method=cosine", "flag --unknown_method=cosine: value should be one of "
                                "<max_logit|energy|msp|knn|mahalanobis>"),
    ("--unknown_neighbors=0", "flag --unknown_neighbors=0: 0 is not a positive integer"),
    ("--saved_model_version=-1", "flag --saved_model_version=-1: -1 is not a non-negative"),
])
def test_bad_trust_flag_values_are_one_line_usage_errors_before_tensorflow(arg, message):
    completed = _run("retrain", "--image_dir=photos", arg)
    assert completed.returncode == 2, completed.stderr
    lines = completed.stderr.splitlines()
    assert lines[0].startswith(f"retrain: error: {message}"), lines[0]
    assert lines[1:] == ["tensorflow imported: False"]


@pytest.mark.parametrize("settings, message", [
    ({"unknown_known_share": 1.5}, r"--unknown_known_share=1.5 is not in \(0, 1\]"),
    ({"unknown_known_share": 0.0}, r"--unknown_known_share=0.0 is not in \(0, 1\]"),
    ({"unknown_method": "cosine"}, r"--unknown_method='cosine' is not one of knn, mahalanobis"),
    ({"unknown_bank_size": 0}, r"--unknown_bank_size=0 must be at least 1"),
    ({"saved_model_version": -2}, r"--saved_model_version=-2 is negative; pass a version"),
])
def test_preflight_refuses_bad_trust_settings_from_the_api(settings, message):
    # retrain.train reaches the config without the flags' bounds: preflight must catch these
    # before any bottleneck is computed (trust.fit would only after training).
    config = RetrainConfig(image_dir="photos", **settings).resolved()
    with pytest.raises(UserError, match=message):
        preflight.check_settings(config)


def test_good_trust_settings_pass_preflight():
    preflight.check_settings(RetrainConfig(image_dir="photos", unknown_known_share=1.0,
                                           unknown_method="mahalanobis",
                                           saved_model_version=0).resolved())


@pytest.mark.parametrize("arg, message", [
    ("--unknown_threshold=nan", "label_image: error: --unknown_threshold=nan is not a number; "
                                "pass a value on the scale of the unknown_score"),
    ("--unknown_threshold=high", "label_image: error: flag --unknown_threshold=high: could not "
                                 "convert string to float"),
])
def test_label_image_refuses_a_bad_unknown_threshold_before_tensorflow(tmp_path, arg, message):
    completed = _run("retrain.cli.label_image_command", "--image=x.jpg", arg, cwd=tmp_path)
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr.startswith(message), completed.stderr
    assert completed.stderr.splitlines()[1:] == ["tensorflow imported: False"]
