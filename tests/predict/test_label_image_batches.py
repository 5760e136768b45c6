"""label_image over many files: batched and pipelined, yet the same answers as one at a time."""

import os

import numpy as np
import pytest
import tensorflow as tf

from retrain import pipeline
from retrain.data import preprocess
from retrain.predict import label_image
from tests.conftest import fast_config


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, tiny_module, colour_images):
    output_dir = tmp_path_factory.mktemp("speed_export") / "out"
    pipeline.run(fast_config(colour_images, tiny_module, output_dir, how_many_training_steps=20))
    return label_image.load_classifier(str(output_dir / "saved_model"))


def _paths_with_broken_files(colour_images, tmp_path):
    paths = label_image.find_image_files(colour_images)
    for position in (0, 17, len(paths)):
        broken = tmp_path / f"broken_{position}.jpg"
        broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
        paths.insert(position, str(broken))
    return paths


def test_batched_predictions_equal_one_image_at_a_time(classifier, colour_images, tmp_path):
    paths = _paths_with_broken_files(colour_images, tmp_path)
    predictions = list(label_image.classify_files(classifier, paths))  # default batch size
    assert [prediction.path for prediction in predictions] == paths
    assert [prediction.error is not None for prediction in predictions] == [
        "broken_" in path for path in paths]
    for prediction in predictions:
        if prediction.error:
            continue
        pixels = preprocess.read_for_module(prediction.path, classifier.image_size, 10**8)
        alone = classifier.predict(tf.image.convert_image_dtype(pixels[None], tf.float32))[0]
        np.testing.assert_allclose(prediction.probabilities, alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_any_batch_size_gives_the_same_predictions(classifier, colour_images, batch_size):
    paths = label_image.find_image_files(colour_images)
    reference = np.stack([prediction.probabilities
                          for prediction in label_image.classify_files(classifier, paths)])
    batched = np.stack([prediction.probabilities for prediction in
                        label_image.classify_files(classifier, paths, batch_size)])
    np.testing.assert_allclose(batched, reference, rtol=1e-5, atol=1e-6)
    assert len(batched) == len(paths) == 36
    assert os.path.basename(paths[0]).startswith("blue")
