"""The audit inside a retrain run: audit.json, metrics.json's counts, --exclude_flagged."""

import json
import logging
import shutil

import pytest

from conftest import fast_config
from conftest import write_solid_colour_images

pytestmark = pytest.mark.timeout(240)


@pytest.fixture()
def mislabelled_images(tmp_path):
    folder = write_solid_colour_images(tmp_path / "images", per_class=8)
    # A red picture in the blue folder, under a name that data/split.py puts in training.
    shutil.copyfile(f"{folder}/red/red_000.jpg", f"{folder}/blue/blue_misfiled_7.jpg")
    return folder


def test_run_audits_and_excludes_flagged(mislabelled_images, tiny_module, tmp_path, caplog):
    from retrain import pipeline  # pylint: disable=import-outside-toplevel
    caplog.set_level(logging.INFO, logger="absl")
    from retrain.data import split  # pylint: disable=import-outside-toplevel
    assert split.split_name("blue/blue_misfiled_7.jpg", 10, 10) == "training"
    # Few steps: solid colours are learnt at once; the audit and the exclusion are under test.
    config = fast_config(mislabelled_images, tiny_module, tmp_path / "out", exclude_flagged=True,
                         how_many_training_steps=20, eval_step_interval=20)
    result = pipeline.run(config)
    written = json.loads((tmp_path / "out" / "audit.json").read_text())
    issues = [issue for issue in written["label_issues"] if issue["confident"]]
    assert issues[0]["path"] == "blue/blue_misfiled_7.jpg" and issues[0]["suggested"] == "red"
    # The exact copy spans labels: a label conflict.
    assert written["counts"]["label_conflicts"] == 1
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["audit"]["label_issues"] == len(written["label_issues"])
    assert "audit" in metrics["stage_seconds"]
    assert (tmp_path / "out" / "audit.html").exists()
    assert 'href="audit.html"' in (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    # Left out of training, and still on disk.
    assert result.audit is not None
    assert "blue/blue_misfiled_7.jpg" in result.audit.flagged_training_paths()
    assert (tmp_path / "images" / "blue" / "blue_misfiled_7.jpg").exists()
    assert any("flagged image(s) out of training" in record.getMessage()
               for record in caplog.records)

