"""The `label_image` command: top predictions for images, from a model retrain exported.

The only module that defines label_image's flags.
"""

import json
import re
import sys

from absl import app
from absl import flags

from retrain import console
from retrain.errors import UserError

flags.DEFINE_string("saved_model_dir", "retrain_output/saved_model",
                    "The SavedModel that retrain exported.")
flags.DEFINE_multi_string("image", [], "Image file to label; repeat the flag or list several files.")
flags.DEFINE_string("image_dir", None, "Label every image in this folder (recursively), in batches.")
flags.DEFINE_integer("num_top_predictions", 5, "Predictions to print per image.", lower_bound=1)
flags.DEFINE_enum("output_format", "text", ["text", "json"],
                  "text: 'label score' lines (with the path first when there are several images); "
                  "json: one JSON object per image and line.")
flags.DEFINE_integer("batch_size", 32, "Images per forward pass.", lower_bound=1)

FLAGS = flags.FLAGS


def image_paths(images, image_dir, extra_args):
    """The files to label: --image values, positional arguments, then --image_dir's files."""
    from retrain import label_image  # pylint: disable=import-outside-toplevel
    paths = list(images) + list(extra_args)
    if image_dir:
        paths += label_image.find_image_files(image_dir)
    if not paths:
        raise UserError("No images given; pass --image FILE [FILE ...] or --image_dir FOLDER.")
    return paths


def format_text(prediction, labels, count, with_path):
    from retrain import dataset  # pylint: disable=import-outside-toplevel
    from retrain import label_image  # pylint: disable=import-outside-toplevel
    lines = [dataset.display_path(prediction.path)] if with_path else []
    lines += [f"{label} {score:.5f}"
              for label, score in label_image.top_predictions(prediction, labels, count)]
    return "\n".join(lines)


def format_json(prediction, labels, count):
    from retrain import dataset  # pylint: disable=import-outside-toplevel
    from retrain import label_image  # pylint: disable=import-outside-toplevel
    record = {"path": dataset.display_path(prediction.path)}
    if prediction.error:
        record["error"] = prediction.error
    else:
        top = label_image.top_predictions(prediction, labels, count)
        record["labels"] = [label for label, _ in top]
        record["scores"] = [round(score, 6) for _, score in top]
    # A label from a folder name that is not valid UTF-8 holds lone surrogates; written as
    # \udcXX escapes they keep the JSON valid UTF-8, and json.loads gives the label back exactly.
    return re.sub("[\ud800-\udfff]", lambda match: f"\\u{ord(match.group()):04x}",
                  json.dumps(record, ensure_ascii=False))


def main(argv):
    console.configure_logging()
    from retrain import dataset  # pylint: disable=import-outside-toplevel
    from retrain import label_image  # pylint: disable=import-outside-toplevel
    try:
        paths = image_paths(FLAGS.image, FLAGS.image_dir, argv[1:])
        classifier = label_image.load_classifier(FLAGS.saved_model_dir)
        failures = 0
        for prediction in label_image.classify_files(classifier, paths, FLAGS.batch_size):
            if prediction.error:
                failures += 1
                print(f"label_image: cannot label {dataset.display_path(prediction.path)}: "
                      f"{prediction.error}", file=sys.stderr)
            if FLAGS.output_format == "json":
                print(format_json(prediction, classifier.labels, FLAGS.num_top_predictions))
            elif not prediction.error:
                print(format_text(prediction, classifier.labels, FLAGS.num_top_predictions,
                                  with_path=len(paths) > 1))
            sys.stdout.flush()
    except UserError as error:
        console.print_error("label_image", error)
        return 2
    return 1 if failures else 0


def run_main():
    app.run(main)


if __name__ == "__main__":
    run_main()
