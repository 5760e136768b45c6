"""Shared fixtures: a tiny feature-vector module and small image folders, built locally.

Nothing here touches the network. The tiny module stands in for a TF Hub image
feature-vector module: float32 [batch, 32, 32, 3] in [0, 1] -> float32 [batch, 6], whose
features are the mean colour and a fixed mix of it, so solid-colour classes are separable
and random-noise classes are not.
"""

import contextlib
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

TINY_IMAGE_SIZE = 32
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def build_tiny_module(path, image_size=TINY_IMAGE_SIZE, declare_size=True):
    """Saves a tiny TF Hub-style image feature-vector SavedModel at path."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tf_keras  # pylint: disable=import-outside-toplevel

    shape = [image_size, image_size, 3] if declare_size else [None, None, 3]
    inputs = tf_keras.Input(shape)
    pooled = tf_keras.layers.GlobalAveragePooling2D()(inputs)
    mixed = tf_keras.layers.Dense(3, kernel_initializer=tf_keras.initializers.Constant(
        [[1.0, -1.0, 0.5], [0.5, 1.0, -1.0], [-1.0, 0.5, 1.0]]), use_bias=False)(pooled)
    features = tf_keras.layers.Concatenate()([pooled, mixed])
    tf.saved_model.save(tf_keras.Model(inputs, features), str(path))
    return str(path)


def write_solid_colour_images(folder, colours=COLOURS, per_class=12, seed=0, size=(40, 30)):
    """Writes noisy solid-colour images, alternating JPEG and PNG, one folder per colour."""
    rng = np.random.default_rng(seed)
    for label, colour in colours.items():
        os.makedirs(os.path.join(folder, label), exist_ok=True)
        for index in range(per_class):
            pixels = np.array(colour)[None, None, :] + rng.normal(0, 12, (size[1], size[0], 3))
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
            extension = "png" if index % 2 else "jpg"
            image.save(os.path.join(folder, label, f"{label}_{index:03d}.{extension}"))
    return str(folder)


def write_noise_images(folder, labels=("a", "b", "c"), per_class=12, seed=0):
    """Writes images of uniform random noise: no class can be told apart from another."""
    rng = np.random.default_rng(seed)
    for label in labels:
        os.makedirs(os.path.join(folder, label), exist_ok=True)
        for index in range(per_class):
            pixels = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(folder, label, f"noise_{index:03d}.png"))
    return str(folder)


@pytest.fixture(scope="session")
def tiny_module(tmp_path_factory):
    """Path of the tiny feature-vector SavedModel (declares 32x32 input)."""
    return build_tiny_module(tmp_path_factory.mktemp("tiny_module") / "module")


@pytest.fixture(scope="session")
def colour_images(tmp_path_factory):
    """A read-only-by-convention folder of three solid-colour classes (12 images each)."""
    return write_solid_colour_images(tmp_path_factory.mktemp("colours") / "photos")


@pytest.fixture()
def fresh_colour_images(tmp_path):
    """A folder of solid-colour classes that a test may change."""
    return write_solid_colour_images(tmp_path / "photos")


class NullWriter:
    """Stands in for the bottleneck cache's writer: compute_and_store returns the vectors too."""

    def add(self, key, vector):
        pass

    def flush(self):
        pass


def tiny_classifier(module_path, saved_model_dir, labels=("blue", "green", "red")):
    """The tiny module with a random new layer, exported and loaded as label_image loads it."""
    # pylint: disable=import-outside-toplevel
    from retrain.export import saved_model
    from retrain.features import modules
    from retrain.predict import label_image
    from retrain.training import train

    module = modules.resolve_module(module_path)
    head = train.Head(np.random.default_rng(0).normal(0, 1, (6, len(labels))).astype(np.float32),
                      np.zeros(len(labels), np.float32))
    saved_model.export_saved_model(modules.load_feature_extractor(module), head, list(labels),
                              module.image_size, str(saved_model_dir))
    return label_image.load_classifier(str(saved_model_dir))


def assert_same_predictions(predictions, expected, paths):
    """Two label_image runs over `paths` predicted every file in order, failed on the same
    single broken file, and agree on the rest."""
    assert [p.path for p in predictions] == paths == [p.path for p in expected]
    assert [p.error is None for p in predictions] == [p.error is None for p in expected]
    assert sum(p.error is not None for p in predictions) == 1
    for a, b in zip(predictions, expected):
        if a.error is None:
            np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=0, atol=1e-6)


def fast_config(image_dir, module, output_dir, **overrides):
    """A RetrainConfig for tests: few steps with a large learning rate."""
    from retrain.config import RetrainConfig  # pylint: disable=import-outside-toplevel

    settings = dict(image_dir=str(image_dir), tfhub_module=str(module), output_dir=str(output_dir),
                    how_many_training_steps=150, learning_rate=0.1, eval_step_interval=50,
                    validation_batch_size=-1, bottleneck_batch_size=8)
    settings.update(overrides)
    return RetrainConfig(**settings)


# Runs a command's module in a fresh interpreter and reports on stderr, as it exits, whether it
# had imported TensorFlow: the "fail fast" promise is that usage errors and pre-checks had not.
_REPORT_TENSORFLOW = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
finally:
    sys.stderr.write("tensorflow imported: %s\\n" % ("tensorflow" in sys.modules))
"""


def run_reporting_tensorflow(module_args, *args, cwd=None):
    """subprocess.CompletedProcess (text) of `python -m MODULE ARGS...` (module_args: the module
    and any arguments before args); stderr ends with "tensorflow imported: True|False"."""
    module, *rest = module_args
    return subprocess.run([sys.executable, "-c", _REPORT_TENSORFLOW, module, *rest, *args],
                          capture_output=True, text=True, check=False, timeout=100, cwd=cwd)


def parse_retrain_flags(argv):
    """The RetrainConfig that `retrain <argv>` builds, parsed on a FlagValues of its own."""
    from absl import flags  # pylint: disable=import-outside-toplevel
    from retrain.cli import retrain_command  # pylint: disable=import-outside-toplevel

    flag_values = flags.FlagValues()
    retrain_command.define_flags(flag_values)
    flag_values(["retrain", *argv])
    return retrain_command.config_from_flags(flag_values)


@contextlib.contextmanager
def python_sigint_handler():
    """Python's own SIGINT handler (KeyboardInterrupt) inside the block, restored after.

    A process started with SIGINT ignored (`nohup bash scripts/test.sh &`, cron, many CI
    runners) keeps it ignored: Python installs no handler, a SIGINT does nothing, and the
    children it starts inherit it ignored. Tests that send or raise SIGINT set up here what a
    terminal's Ctrl-C finds: this process raises KeyboardInterrupt, and a child started in the
    block gets SIGINT at its default (exec resets a handled signal, not an ignored one), where
    Python installs its own handler. Main thread only, as signal.signal.
    """
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        # None: the handler was set outside Python, and cannot be put back from here.
        signal.signal(signal.SIGINT, signal.SIG_DFL if before is None else before)


@pytest.fixture
def sigint_handler():
    """Python's own SIGINT handler for the test (python_sigint_handler)."""
    with python_sigint_handler():
        yield


def interrupt_while_tensorflow_loads(*args):
    """Runs `python -m <args>`, sends SIGINT once TensorFlow's import has begun and again
    each second until it reports an error, and returns (exit status, stderr lines).

    The import has begun at the first `-X importtime` line that names a tensorflow module
    (a line is written as each module finishes: its submodules come first). The command
    prints nothing of its own then, so that is the only sign to wait for.
    """
    with python_sigint_handler():  # Else a child of a run that ignores SIGINT ignores it.
        process = subprocess.Popen([sys.executable, "-X", "importtime", "-m", *args],
                                   stderr=subprocess.PIPE, text=True)
    lines = []
    for line in process.stderr:
        if not line.startswith("import time:"):
            lines.append(line)
        if "| tensorflow" in line or not line.startswith("import time:"):
            break
    reader = threading.Thread(target=lambda: lines.extend(
        line for line in process.stderr if not line.startswith("import time:")), daemon=True)
    reader.start()
    # Python drops a Ctrl-C that lands while it runs a finalizer or a library's bare `except:`
    # (rarely, during the import: one full-suite run in many). A user presses it again; so do
    # we, every second until the process has said why it stops.
    for _ in range(30):
        process.send_signal(signal.SIGINT)
        try:
            status = process.wait(timeout=1.0)
            break
        except subprocess.TimeoutExpired:
            if any(": error:" in line for line in lines):
                status = process.wait(timeout=60)
                break
    else:
        status = process.wait(timeout=60)
    reader.join(timeout=10)
    return status, lines
