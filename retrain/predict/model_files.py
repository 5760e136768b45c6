"""Whether the files of an exported model are there, without TensorFlow: label_image checks
them before the slow imports, and the loaders check them again for library callers."""

import os

from retrain.errors import UserError
from retrain.export import layout
from retrain.export.tflite_settings import labels_path_for


def check_saved_model_dir(saved_model_dir):
    """The folder holding the SavedModel: saved_model_dir or its highest version folder
    (export.layout). Raises UserError if neither holds one (its contents are checked when it
    is loaded)."""
    if not os.path.isdir(saved_model_dir):
        raise UserError(f"--saved_model_dir {saved_model_dir!r} does not exist; pass the "
                        "saved_model folder that retrain wrote (by default "
                        "retrain_output/saved_model).")
    found = layout.find_saved_model(saved_model_dir)
    if found is None:
        raise UserError(f"--saved_model_dir {saved_model_dir!r} is not a SavedModel (it has no "
                        "saved_model.pb, nor a numbered version folder with one); pass the "
                        "saved_model folder that retrain wrote.")
    return found


def check_tflite_files(tflite_file, labels_file=None):
    """The labels file of tflite_file (labels_file, or the one written beside it); raises
    UserError if either file is missing."""
    labels_file = labels_file or labels_path_for(tflite_file)
    if not os.path.isfile(tflite_file):
        raise UserError(f"--tflite_model {tflite_file!r} does not exist; pass the .tflite file "
                        "that retrain wrote with --tflite_output_file.")
    if not os.path.isfile(labels_file):
        raise UserError(f"Labels file {labels_file!r} does not exist; pass --labels with the "
                        "labels file retrain wrote beside the .tflite file.")
    return labels_file
