"""Where the SavedModel lies in --saved_model_dir, without TensorFlow (label_image checks it
before the slow import).

retrain writes the SavedModel into a numbered version folder, <saved_model_dir>/1/, the layout
TF Serving loads (it serves the highest number in a model's base path); version 0 writes it
into <saved_model_dir> itself, as format-1 exports did. Readers accept either.
"""

import os

# TF Serving loads the highest numbered subfolder of a model's base path.
DEFAULT_VERSION = 1
SAVED_MODEL_FILE = "saved_model.pb"


def version_dir(saved_model_dir, version=DEFAULT_VERSION):
    """Where the SavedModel itself goes: <saved_model_dir>/<version>, or saved_model_dir itself
    for version 0 (no version folder)."""
    return os.path.join(saved_model_dir, str(version)) if version else saved_model_dir


def find_saved_model(saved_model_dir):
    """The folder holding saved_model.pb: saved_model_dir itself if it does, else its highest
    numbered subfolder that does (as TF Serving picks); None if neither."""
    if os.path.isfile(os.path.join(saved_model_dir, SAVED_MODEL_FILE)):
        return saved_model_dir
    try:
        entries = os.listdir(saved_model_dir)
    except OSError:
        return None
    versions = sorted((int(name) for name in entries if name.isdigit()
                       and os.path.isfile(os.path.join(saved_model_dir, name, SAVED_MODEL_FILE))),
                      reverse=True)
    return os.path.join(saved_model_dir, str(versions[0])) if versions else None
