"""--class_balance, --checkpoint_path and --resume end to end: flags, pipeline.run and the CLI."""

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from absl import flags

from retrain import pipeline
from retrain.errors import UserError
from retrain.training import checkpoint
from retrain.training import sampling
from tests.conftest import fast_config, interrupt_while_tensorflow_loads, parse_retrain_flags


def test_flags_reach_the_config_and_checkpoints_default_under_output_dir():
    defaults = parse_retrain_flags(["--image_dir=p"])
    assert (defaults.class_balance, defaults.resume) == ("classes", False)
    assert defaults.resolved().checkpoint_path == os.path.join("retrain_output", "checkpoints")
    config = parse_retrain_flags(["--image_dir=p", "--class_balance=loss_weight", "--resume",
                     "--checkpoint_path=/state", "--checkpoint_every_seconds=2.5"])
    assert (config.class_balance, config.resume) == ("loss_weight", True)
    assert (config.checkpoint_path, config.checkpoint_every_seconds) == ("/state", 2.5)
    with pytest.raises(flags.IllegalFlagValueError):
        parse_retrain_flags(["--image_dir=p", "--class_balance=balanced"])


def _head_state(output_dir):
    return checkpoint.load_state(checkpoint.head_directory(os.path.join(output_dir, "checkpoints")))


def test_interrupted_run_resumes_to_the_straight_runs_model(tmp_path, tiny_module, colour_images,
                                                            monkeypatch, sigint_handler):
    def config(output, **overrides):
        return fast_config(colour_images, tiny_module, tmp_path / output,
                           bottleneck_dir=tmp_path / "cache", learning_rate=0.01, **overrides)

    straight = pipeline.run(config("straight"))
    original = sampling.generator_for_step

    def interrupt_at_step_51(seed, step, stream=sampling.TRAINING_STREAM):
        if step == 51 and stream == sampling.TRAINING_STREAM:
            signal.raise_signal(signal.SIGINT)
        # 150 steps end by themselves; a SIGINT that did not stop them fails below.
        return original(seed, step, stream)

    monkeypatch.setattr(sampling, "generator_for_step", interrupt_at_step_51)
    with pytest.raises(checkpoint.Interrupted) as interrupted:
        pipeline.run(config("resumed"))
    monkeypatch.undo()
    assert interrupted.value.step == 101
    assert not (tmp_path / "resumed" / "saved_model").exists()
    resumed = pipeline.run(config("resumed", resume=True))
    assert np.array_equal(_head_state(tmp_path / "resumed").weights,
                          _head_state(tmp_path / "straight").weights)
    assert resumed.history == straight.history
    assert resumed.test.top1_accuracy == straight.test.top1_accuracy
    metrics = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert metrics["history"]["steps"] == [0, 50, 100, 149]


def test_resume_with_other_labels_fails_before_the_bottlenecks(tmp_path, tiny_module,
                                                               fresh_colour_images):
    config = fast_config(fresh_colour_images, tiny_module, tmp_path / "out",
                         how_many_training_steps=20)
    pipeline.run(config)
    shutil.rmtree(os.path.join(fresh_colour_images, "red"))
    shutil.rmtree(tmp_path / "out" / "bottlenecks")
    with pytest.raises(UserError, match=r"trained with labels=\['blue', 'green', 'red'\], this run "
                                        r"has \['blue', 'green'\]; drop --resume"):
        pipeline.run(fast_config(fresh_colour_images, tiny_module, tmp_path / "out",
                                 how_many_training_steps=20, resume=True))
    assert not (tmp_path / "out" / "bottlenecks").exists()


@pytest.mark.timeout(240)
def test_ctrl_c_in_training_tells_the_user_to_resume(tmp_path, tiny_module, colour_images,
                                                     sigint_handler):
    # 100,000 steps: far more than it reaches before the SIGINT, and an end (a minute or two)
    # should the SIGINT not stop it.
    process = subprocess.Popen(
        [sys.executable, "-m", "retrain", f"--image_dir={colour_images}",
         f"--tfhub_module={tiny_module}", f"--output_dir={tmp_path / 'out'}",
         "--how_many_training_steps=100000", "--eval_step_interval=10", "--learning_rate=0.01",
         "--verbose"],
        stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in process.stderr:
            lines.append(line)
            if "Step 20: Train accuracy" in line:
                process.send_signal(signal.SIGINT)
                break
        lines.extend(process.stderr)
        assert process.wait(timeout=60) == 130, "".join(lines[-5:])
    finally:
        process.kill()
        process.wait()
        process.stderr.close()
    last = lines[-1].strip()
    assert last.startswith("retrain: error: Interrupted at training step ")
    assert last.endswith("Run the same command with --resume to continue."), last
    state = _head_state(tmp_path / "out")
    assert f"step {state.next_step};" in last and state.next_step > 20


def test_ctrl_c_while_tensorflow_loads_is_a_one_line_message(tmp_path, tiny_module,
                                                             colour_images):
    status, lines = interrupt_while_tensorflow_loads(
        "retrain", f"--image_dir={colour_images}", f"--tfhub_module={tiny_module}",
        f"--output_dir={tmp_path / 'out'}")
    assert status == 130
    assert lines[-1].startswith("retrain: error: Interrupted."), lines[-3:]
    assert not any(line.startswith("Traceback") for line in lines), "".join(lines)
