"""The `label_image` command: top predictions for images, from a model retrain exported.

The only module that defines label_image's flags.
"""

import functools
import json
import sys

from absl import app
from absl import flags

from retrain import console
from retrain.errors import UserError

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    """Defines label_image's flags (run_main does; tests may use their own FlagValues)."""
    string = functools.partial(flags.DEFINE_string, flag_values=flag_values)
    integer = functools.partial(flags.DEFINE_integer, flag_values=flag_values)
    string("saved_model_dir", "retrain_output/saved_model", "The SavedModel that retrain exported.")
    flags.DEFINE_multi_string("image", [], "Image file to label; repeat the flag, or list files "
                              "after it.", flag_values=flag_values)
    string("image_dir", None, "Label every image in this folder (recursively), in batches.")
    integer("num_top_predictions", 5, "Predictions to print per image.", lower_bound=1)
    flags.DEFINE_enum("output_format", "text", ["text", "json"],
                      "text: 'label score' lines, after the image's path when there are several "
                      "images; json: one JSON object per image and line.", flag_values=flag_values)
    integer("batch_size", 32, "Images per forward pass.", lower_bound=1)


def image_paths(images, image_dir, extra_args):
    """The files to label: --image values, positional arguments, then --image_dir's files."""
    from retrain import label_image  # pylint: disable=import-outside-toplevel
    paths = list(images) + list(extra_args)
    if image_dir:
        paths += label_image.find_image_files(image_dir)
    if not paths:
        raise UserError("No images given; pass --image FILE [FILE ...] or --image_dir FOLDER.")
    return paths


def format_text(prediction, top, with_path):
    """retrain.py's "label score" lines, highest first; the path line first if asked."""
    from retrain import dataset  # pylint: disable=import-outside-toplevel
    lines = [dataset.display_path(prediction.path)] if with_path else []
    lines += [f"{label} {score:.5f}" for label, score in top]
    return "\n".join(lines)


def format_json(prediction, top):
    """One JSON object: {"path", "labels", "scores"}, or {"path", "error"}."""
    from retrain import dataset  # pylint: disable=import-outside-toplevel
    record = {"path": dataset.display_path(prediction.path)}
    if prediction.error:
        record["error"] = prediction.error
    else:
        record["labels"] = [label for label, _ in top]
        record["scores"] = [round(score, 6) for _, score in top]
    return json.dumps(record, ensure_ascii=False)


def label_files(paths, saved_model_dir, output_format, count, batch_size):
    """Prints predictions for every path; returns how many images could not be labelled."""
    from retrain import dataset  # pylint: disable=import-outside-toplevel
    from retrain import label_image  # pylint: disable=import-outside-toplevel
    classifier = label_image.load_classifier(saved_model_dir)
    failures = 0
    for prediction in label_image.classify_files(classifier, paths, batch_size):
        top = [] if prediction.error else label_image.top_predictions(
            prediction, classifier.labels, count)
        if prediction.error:
            failures += 1
            print(f"label_image: cannot label {dataset.display_path(prediction.path)}: "
                  f"{prediction.error}", file=sys.stderr)
        if output_format == "json":
            print(format_json(prediction, top), flush=True)
        elif not prediction.error:
            print(format_text(prediction, top, with_path=len(paths) > 1), flush=True)
    return failures


def main(argv):
    console.configure_logging()
    try:
        paths = image_paths(FLAGS.image, FLAGS.image_dir, argv[1:])
        failures = label_files(paths, FLAGS.saved_model_dir, FLAGS.output_format,
                               FLAGS.num_top_predictions, FLAGS.batch_size)
    except UserError as error:
        console.print_error("label_image", error)
        return 2
    return 1 if failures else 0


def run_main():
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run_main()
