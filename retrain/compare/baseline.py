"""A small CNN trained from scratch on the same split: the "no transfer learning" row.

The first question about transfer learning is how much it buys on one's own images; this
answers it with a model that learns everything from those images alone. The images go
through the same finding, decoding and split as a retrain run (so the test images are the
same), shrunk to a small square so that training on a CPU takes seconds to minutes.
"""

import dataclasses
import os
import time

from absl import logging
import numpy as np

from retrain.data import dataset
from retrain.data import images
from retrain.data import split
from retrain.errors import UserError
from retrain.evaluation import metrics

MODEL_FILE = "model.keras"


@dataclasses.dataclass
class BaselineSettings:
    image_size: int = 64  # pixels per side: small enough to train on a CPU
    epochs: int = 30  # the weights of the epoch with the best validation accuracy are kept
    batch_size: int = 32
    learning_rate: float = 0.001  # Adam
    seed: int = 0


@dataclasses.dataclass
class BaselineResult:
    classification: metrics.ClassificationMetrics  # on the test split
    training_seconds: float
    loading_seconds: float  # finding, decoding and resizing the images
    model_size_bytes: int  # of the saved Keras model
    skipped: list  # [dataset.SkippedFile]


def train_baseline(image_dir, output_dir, validation_percentage, testing_percentage, settings,
                   max_pixels=images.DEFAULT_MAX_PIXELS):
    """Trains and tests the small CNN; saves it to output_dir/model.keras.

    Args:
      image_dir: folder with one subfolder of images per label (as for retrain).
      output_dir: folder for the model (created if needed).
      validation_percentage, testing_percentage: as for retrain, giving the same split.
      settings: BaselineSettings.
      max_pixels: larger images are skipped (see images.decode_image).

    Returns:
      BaselineResult.
    """
    start = time.monotonic()
    collection = dataset.find_images(image_dir)
    pixels, usable, failed = load_images(collection.images, settings.image_size, max_pixels)
    collection = dataclasses.replace(collection, images=usable)
    dataset.check_every_class_has_images(collection)
    # The same call, on the same usable images, as pipeline.run: so the same test images.
    splits = split.split_images(usable, collection.labels, validation_percentage, testing_percentage)
    row_of = {image.content_key: row for row, image in enumerate(usable)}
    data = {name: (pixels[[row_of[image.content_key] for image in splits[name]]],
                   np.array([image.label_index for image in splits[name]], np.int32))
            for name in split.SPLITS}
    loading_seconds = time.monotonic() - start
    start = time.monotonic()
    model = fit_model(data, len(collection.labels), settings)
    training_seconds = time.monotonic() - start
    test_images, test_labels = data["testing"]
    probabilities = (model.predict(test_images, verbose=0) if len(test_labels)
                     else np.zeros([0, len(collection.labels)], np.float32))
    classification = metrics.classification_metrics(test_labels, probabilities, collection.labels)
    logging.info("From-scratch CNN: test accuracy = %.1f%% (N=%d)",
                 classification.top1_accuracy * 100, classification.count)
    os.makedirs(output_dir, exist_ok=True)
    model_path = os.path.join(output_dir, MODEL_FILE)
    model.save(model_path)
    return BaselineResult(classification, round(training_seconds, 3), round(loading_seconds, 3),
                          os.path.getsize(model_path), collection.skipped + failed)


def load_images(image_files, image_size, max_pixels):
    """Decodes and resizes images as training does, keeping them small in memory.

    Returns:
      (uint8 [num_usable, image_size, image_size, 3], [usable ImageFile], [dataset.SkippedFile]).
    """
    # Imported here so that compare's --help, which reads BaselineSettings, does not wait
    # for TensorFlow.
    from retrain.data import preprocess  # pylint: disable=import-outside-toplevel
    batches = preprocess.pixel_batches([image.path for image in image_files],
                                       (image_size, image_size), 64, max_pixels)
    pixels, usable, failed = [], [], []
    for batch in batches:
        # Kept as uint8, a quarter of float32's memory; the model rescales it.
        for index, image, error in zip(batch.indices, batch.pixels, batch.errors):
            if error is None:
                pixels.append(image)
                usable.append(image_files[index])
            else:
                failed.append(dataset.SkippedFile(image_files[index].path, error))
    stacked = (np.stack(pixels) if pixels
               else np.zeros([0, image_size, image_size, 3], np.uint8))
    return stacked, usable, failed


def build_model(num_classes, image_size):
    """Three conv blocks, global average pooling and a softmax layer.

    Input: uint8-valued float [batch, image_size, image_size, 3] in [0, 255].
    Output: float32 probabilities [batch, num_classes].
    """
    import tf_keras as keras  # pylint: disable=import-outside-toplevel
    layers = keras.layers
    inputs = keras.Input([image_size, image_size, 3])
    x = layers.Rescaling(1.0 / 255)(inputs)
    x = layers.RandomFlip("horizontal")(x)  # Only active in training: cheap extra images.
    for filters in (16, 32, 64):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.2)(x)
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="from_scratch_cnn")


def fit_model(data, num_classes, settings):
    """Trains build_model's CNN on data["training"], choosing the epoch by data["validation"]."""
    import tf_keras as keras  # pylint: disable=import-outside-toplevel
    if settings.epochs < 1:
        raise UserError(f"--baseline_epochs={settings.epochs} must be at least 1.")
    # Fixed seeds: the same images and flags give the same baseline.
    keras.utils.set_random_seed(settings.seed)
    model = build_model(num_classes, settings.image_size)
    model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    validation = data["validation"] if len(data["validation"][1]) else None
    callbacks = []
    if validation is not None:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_accuracy", patience=max(5, settings.epochs // 4), restore_best_weights=True))
    model.fit(*data["training"], batch_size=settings.batch_size, epochs=settings.epochs,
              validation_data=validation, callbacks=callbacks, shuffle=True, verbose=0)
    return model
