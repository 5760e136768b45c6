"""`retrain compare`: two tiny modules and the from-scratch baseline on one split."""

import csv
import dataclasses
import json
import os

import pytest
from absl import flags
from PIL import Image

from retrain.cli import compare_command
from retrain.compare import compare
from retrain.compare.baseline import BaselineSettings
from retrain.errors import UserError
from tests.conftest import build_tiny_module, fast_config, interrupt_while_tensorflow_loads


@pytest.fixture(scope="module")
def compared(tmp_path_factory, tiny_module, colour_images):
    root = tmp_path_factory.mktemp("compare")
    other_module = build_tiny_module(root / "other" / "module", image_size=24)
    output_dir = root / "out"
    base = fast_config(colour_images, "unused", "unused")
    rows = compare.compare(base, [tiny_module, other_module], ["frozen"], str(output_dir),
                           BaselineSettings(image_size=16, epochs=3, batch_size=8))
    return rows, output_dir, base, [tiny_module, other_module]


def test_one_row_per_module_and_method_plus_baseline(compared):
    rows, _, _, modules = compared
    assert [(row.module, row.method) for row in rows] == [
        (modules[0], "frozen"), (modules[1], "frozen"), (compare.BASELINE_MODULE, "from_scratch")]
    assert not any(row.error for row in rows)
    for row in rows[:2]:
        assert row.test_top1_accuracy >= 0.9 and 0 < row.test_macro_f1 <= 1
        assert row.bottlenecks_computed == 36 and row.bottleneck_seconds >= 0
        assert row.model_size_bytes > 1000 and row.training_seconds > 0
    assert 0 <= rows[2].test_top1_accuracy <= 1 and rows[2].model_size_bytes > 1000
    assert rows[2].bottleneck_seconds is None


def test_every_row_is_tested_on_the_same_images(compared):
    rows, _, _, _ = compared
    assert len({row.test_count for row in rows}) == 1 and rows[0].test_count >= 3
    first, second = (json.loads(open(os.path.join(row.output_dir, "metrics.json"),
                                     encoding="utf-8").read()) for row in rows[:2])
    assert first["confusion_matrix"]["labels"] == second["confusion_matrix"]["labels"]
    assert [row["support"] for row in first["per_class"]] == [
        row["support"] for row in second["per_class"]]


def test_modules_share_one_bottleneck_cache(compared):
    rows, output_dir, _, _ = compared
    assert len(os.listdir(output_dir / "bottlenecks")) == 2
    assert sorted(os.listdir(output_dir / "runs")) == sorted(
        os.path.basename(row.output_dir) for row in rows)


def test_table_files(compared):
    rows, output_dir, _, _ = compared
    assert {name for name in os.listdir(output_dir) if name.startswith("comparison")} == {
        "comparison.md", "comparison.csv", "comparison.json", "comparison.png"}
    with open(output_dir / "comparison.csv", encoding="utf-8") as table:
        records = list(csv.DictReader(table))
    assert [record["method"] for record in records] == ["frozen", "frozen", "from_scratch"]
    assert float(records[0]["test_top1_accuracy"]) == pytest.approx(rows[0].test_top1_accuracy)
    data = json.loads((output_dir / "comparison.json").read_text(encoding="utf-8"))
    assert data["rows"][1]["test_macro_f1"] == pytest.approx(rows[1].test_macro_f1)
    assert "frozen" in data["methods"]
    markdown = (output_dir / "comparison.md").read_text(encoding="utf-8").splitlines()
    assert markdown[0].startswith("| module | method | test accuracy | macro F1 |")
    assert len(markdown) == 2 + len(rows)
    with Image.open(output_dir / "comparison.png") as chart:
        assert chart.format == "PNG"


def test_rerun_reuses_the_cache(compared):
    _, output_dir, base, modules = compared
    base = dataclasses.replace(base, bottleneck_dir=str(output_dir / "bottlenecks"))
    rows = compare.compare(base, modules[:1], ["frozen"], str(output_dir / "again"), None)
    assert len(rows) == 1 and rows[0].bottlenecks_computed == 0


def test_a_failing_module_is_a_row_not_a_crash(tmp_path, colour_images):
    rows = compare.compare(fast_config(colour_images, "unused", "unused"), ["/nonexistent/module"],
                           ["frozen"], str(tmp_path), None)
    assert rows[0].error.startswith("--tfhub_module '/nonexistent/module' is not a folder")
    assert "failed" in (tmp_path / "comparison.md").read_text(encoding="utf-8")


def test_unknown_method_and_empty_modules_are_user_errors(tmp_path, colour_images):
    base = fast_config(colour_images, "unused", "unused")
    with pytest.raises(UserError, match=r"--methods has unknown method 'magic'; choose from frozen"):
        compare.compare(base, ["m"], ["magic"], str(tmp_path), None)
    with pytest.raises(UserError, match=r"--modules is empty"):
        compare.compare(base, [], ["frozen"], str(tmp_path), None)


@pytest.mark.parametrize("module", ["../../etc", "/abs/path/module", "https://x/a?b=c", ".."])
def test_run_folder_names_stay_inside(module):
    name = compare.safe_name(module)
    assert "/" not in name and not name.startswith(".") and name not in ("", "..")


def test_display_name_skips_version_and_kind():
    assert compare.display_name(
        "https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5") == (
            "mobilenet_v2_100_224")
    assert compare.display_name("/models/my_module/") == "my_module"


def test_markdown_cells_are_escaped():
    table = compare.format_markdown([compare.Row("a|b<i>", "frozen", error="x|y")])
    assert "a\\|b\\<i\\>" in table and "x\\|y" in table


def test_flags_reach_the_settings():
    flag_values = flags.FlagValues()
    compare_command.define_flags(flag_values)
    flag_values(["compare", "--image_dir=photos", "--modules=a, b", "--testing_percentage=20",
                 "--how_many_training_steps=7", "--nobaseline"])
    config, modules, methods, output_dir, baseline_settings = compare_command.settings_from_flags(
        flag_values)
    assert modules == ["a", "b"] and methods == ["frozen"] and output_dir == "compare_output"
    assert config.image_dir == "photos" and config.testing_percentage == 20
    assert config.how_many_training_steps == 7 and baseline_settings is None


def test_retrain_compare_command_reports_a_user_error_in_one_line(tmp_path):
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    completed = subprocess.run(
        [sys.executable, "-m", "retrain", "compare", f"--image_dir={tmp_path / 'missing'}",
         "--modules=a", f"--output_dir={tmp_path / 'out'}"], capture_output=True, text=True,
        check=False)
    assert completed.returncode == 2
    last = completed.stderr.strip().splitlines()[-1]
    assert last.startswith("retrain compare: error: --image_dir") and "does not exist" in last


def test_retrain_compare_ctrl_c_while_tensorflow_loads_is_a_one_line_message(tmp_path,
                                                                            colour_images):
    status, lines = interrupt_while_tensorflow_loads(
        "retrain", "compare", f"--image_dir={colour_images}", "--modules=a",
        f"--output_dir={tmp_path / 'out'}")
    assert status == 130
    assert lines[-1].startswith("retrain compare: error: Interrupted."), lines[-3:]


def test_rows_get_their_gain_over_their_modules_frozen_row():
    rows = [compare.Row("m", "frozen", test_top1_accuracy=0.9),
            compare.Row("m", "fine_tuned", test_top1_accuracy=0.935, minutes=3.25),
            compare.Row("n", "fine_tuned", test_top1_accuracy=0.5),
            compare.Row("m", "fine_tuned_augmented", error="boom")]
    compare.add_gains(rows)
    assert [row.gain_over_frozen for row in rows] == [0.0, 3.5, None, None]
    table = compare.format_markdown(rows)
    assert "| vs frozen | minutes |" in table and "| +3.5 | 3.2 |" in table


def test_fine_tuned_augmented_distorts_and_fine_tunes():
    from retrain.config import RetrainConfig  # pylint: disable=import-outside-toplevel
    config = compare.METHODS["fine_tuned_augmented"].configure(RetrainConfig(image_dir="p"))
    assert config.fine_tune and config.any_distortion()


def test_compare_shows_the_fine_tuned_rows_and_their_gains(tmp_path, tiny_module, colour_images):
    # The tiny module (the whole-network path: rows and gains do not depend on the path).
    base = fast_config(colour_images, tiny_module, tmp_path / "unused", learning_rate=0.0,
                       how_many_training_steps=10, eval_step_interval=5, augmentation_copies=1,
                       fine_tune_steps=10, fine_tune_eval_interval=5, fine_tune_learning_rate=0.05,
                       audit=False)
    rows = compare.compare(base, [tiny_module], ["frozen", "fine_tuned_augmented"],
                           str(tmp_path / "compare"))
    assert [row.method for row in rows] == ["frozen", "fine_tuned_augmented"]
    assert all(row.error == "" and row.minutes > 0 for row in rows)
    assert rows[0].gain_over_frozen == 0
    # The untrained head (learning_rate 0) leaves fine-tuning room to gain.
    assert rows[1].test_top1_accuracy > rows[0].test_top1_accuracy
    assert rows[1].gain_over_frozen == pytest.approx(
        (rows[1].test_top1_accuracy - rows[0].test_top1_accuracy) * 100, abs=0.01)
    table = (tmp_path / "compare" / "comparison.md").read_text()
    assert "vs frozen" in table and "fine_tuned_augmented" in table
