"""The `label_image` command: top predictions for images, from a model retrain exported.

The only module that defines label_image's flags.
"""

import functools
import json
import math
import os
import re
import sys

from absl import flags

from retrain.cli import command
from retrain.cli import console
from retrain.cli import shared_flags
# Light (Pillow, no TensorFlow): --help and flag errors stay fast.
from retrain.data import dataset
from retrain.errors import UserError
from retrain.predict import model_files
from retrain.runtime import precision

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    """Defines label_image's flags (run_main does; tests may use their own FlagValues)."""
    string = functools.partial(flags.DEFINE_string, flag_values=flag_values)
    integer = functools.partial(flags.DEFINE_integer, flag_values=flag_values)
    string("saved_model_dir", "retrain_output/saved_model", "The SavedModel that retrain exported.")
    string("tflite_model", None, "A .tflite file that retrain wrote (--tflite_output_file), used "
           "instead of --saved_model_dir.")
    string("onnx_model", None, "An .onnx file that retrain wrote (--onnx_output_file), used "
           "instead of --saved_model_dir; needs onnxruntime (pip install 'retrain[onnx]').")
    string("labels", None, "Labels file of --tflite_model or --onnx_model. Default: "
           "<name>_labels.txt beside it.")
    flags.DEFINE_multi_string("image", [], "Image file to label; repeat the flag, or list files "
                              "after it.", flag_values=flag_values)
    string("image_dir", None, "Label every image in this folder (recursively), in batches.")
    integer("num_top_predictions", 5, "Predictions to print per image.", lower_bound=1)
    flags.DEFINE_enum("output_format", "text", ["text", "json"],
                      "text: 'label score' lines, after the image's path when there are several "
                      "images; json: one JSON object per image and line.", flag_values=flag_values)
    integer("batch_size", None, "Images per forward pass. Default: 64 per GPU; on a CPU, chosen "
            f"by timing the first batches (the rule: {shared_flags.BATCH_SIZE_RULE}).",
            lower_bound=1)
    flags.DEFINE_boolean("evaluate", False, "Treat each subfolder of --image_dir as the true label "
                         "of its images and print accuracy, per-class results and the confusion "
                         "matrix instead of predictions.", flag_values=flag_values)
    string("report_dir", None, "With --evaluate: also write metrics.json, PNG pictures and "
           "report.html to this folder.")
    flags.DEFINE_float("unknown_threshold", None, "Call an image unknown when its unknown score "
                       "is above this. Default: the threshold retrain exported (keeps 95% of the "
                       "validation images known), from the SavedModel or the .tflite file's "
                       "<name>_calibration.json.", flag_values=flag_values)
    flags.DEFINE_enum("precision", precision.FLOAT32, list(precision.PRECISIONS),
                      "Number format of the SavedModel's forward pass. bfloat16 needs a CPU with "
                      "AVX512_BF16 or AMX and runs about 1.7x as fast there, with scores a little "
                      "off; it matches a model retrained with --bottleneck_precision=bfloat16.",
                      flag_values=flag_values)


def image_paths(images, image_dir, extra_args):
    """The files to label: --image values, positional arguments, then --image_dir's files."""
    paths = list(images) + list(extra_args)
    if image_dir:
        # label_image.find_image_files's walk, without importing label_image (TensorFlow).
        if not os.path.isdir(image_dir):
            raise UserError(f"--image_dir {image_dir!r} is not a folder; pass a folder of images.")
        paths += dataset.list_files(image_dir)
    if not paths:
        raise UserError("No images given; pass --image FILE [FILE ...] or --image_dir FOLDER.")
    return paths


def format_text(prediction, top, with_path):
    """retrain.py's "label score" lines, highest first; the path line first if asked, then
    "unknown <score>" if the image is unknown."""
    lines = [dataset.display_path(prediction.path)] if with_path else []
    if prediction.unknown:
        lines.append(f"unknown {prediction.unknown_score:.5f}")
    lines += [f"{label} {score:.5f}" for label, score in top]
    return "\n".join(lines)


def format_json(prediction, top):
    """One JSON object: {"path", "labels", "scores", "unknown", "unknown_score"} (the last
    two null for a model without an unknown score), or {"path", "error"}."""
    record = {"path": dataset.display_path(prediction.path)}
    if prediction.error:
        record["error"] = prediction.error
    else:
        record["labels"] = [label for label, _ in top]
        record["scores"] = [round(score, 6) for _, score in top]
        record["unknown"] = prediction.unknown
        record["unknown_score"] = (None if prediction.unknown_score is None
                                   else round(prediction.unknown_score, 6))
    # A label from a folder name that is not valid UTF-8 holds lone surrogates; written as
    # \udcXX escapes they keep the JSON valid UTF-8, and json.loads gives the label back exactly.
    return re.sub("[\ud800-\udfff]", lambda match: f"\\u{ord(match.group()):04x}",
                  json.dumps(record, ensure_ascii=False))


def load_model(saved_model_dir, tflite_model=None, labels=None, onnx_model=None):
    """The classifier to label with: the .tflite or .onnx file if one is given, else the
    SavedModel."""
    if tflite_model:
        from retrain.predict import tflite_runtime  # pylint: disable=import-outside-toplevel
        return tflite_runtime.load_classifier(tflite_model, labels)
    if onnx_model:
        from retrain.predict import onnx_runtime  # pylint: disable=import-outside-toplevel
        return onnx_runtime.load_classifier(onnx_model, labels)
    if labels:
        raise UserError(f"--labels={labels!r} goes with --tflite_model (a SavedModel carries its "
                        "labels); pass --tflite_model too, or drop --labels.")
    from retrain.predict import label_image  # pylint: disable=import-outside-toplevel
    return label_image.load_classifier(saved_model_dir)


def label_files(paths, saved_model_dir, output_format, count, batch_size, tflite_model=None,
                labels=None, unknown_threshold=None, onnx_model=None):
    """Prints predictions for every path; returns how many images could not be labelled.

    A .tflite or .onnx model is run by predict/predictions.py, which imports no TensorFlow
    (the same reader and the same numbers as label_image's); a SavedModel by label_image.
    """
    # pylint: disable=import-outside-toplevel
    if tflite_model or onnx_model:
        from retrain.predict import predictions as label_image
    else:
        from retrain.predict import label_image
    classifier = load_model(saved_model_dir, tflite_model, labels, onnx_model)
    failures = 0
    for prediction in label_image.classify_files(classifier, paths, batch_size,
                                                 unknown_threshold=unknown_threshold):
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


def evaluate_folder(saved_model_dir, image_dir, batch_size, report_dir=None):
    """--evaluate: prints the metrics of the model on a folder of labelled subfolders.

    Returns:
      exit status 0 (images that could not be read are reported on stderr, not counted).
    """
    # pylint: disable=import-outside-toplevel
    from retrain.evaluation import folder
    from retrain.evaluation import metrics
    from retrain.evaluation import report
    from retrain.predict import label_image
    from retrain.runtime import files
    classifier = label_image.load_classifier(saved_model_dir)
    evaluation = folder.evaluate_folder(classifier, image_dir, batch_size)
    for failure in evaluation.failed:
        print(f"label_image: cannot label {dataset.display_path(failure.path)}: {failure.error}",
              file=sys.stderr)
    if evaluation.unlabelled:
        print(f"label_image: ignored {len(evaluation.unlabelled)} file(s) directly in --image_dir; "
              "only files in a label subfolder are evaluated.", file=sys.stderr)
    if not evaluation.paths:
        raise UserError(f"No readable images in the subfolders of --image_dir "
                        f"{dataset.display_path(image_dir)!r}; put images in them.")
    result, data = folder.evaluation_metrics(evaluation, classifier.labels, image_dir,
                                             saved_model_dir)
    print("\n".join(metrics.format_report(result)))
    print(f"Images skipped as unreadable: {len(evaluation.failed)}")
    if report_dir:
        try:
            files.check_writable_dir(report_dir)
        except OSError as error:
            raise UserError(f"Cannot write to --report_dir {report_dir!r} ({error.strerror or error}); "
                            "pass a writable folder.") from error
        report.write_metrics_and_report(os.path.join(report_dir, "metrics.json"), data)
        print(f"Wrote metrics.json and {report.REPORT_FILE} to {report_dir}")
    return 0


def check_precision(precision_name, tflite_model):
    """Fails with UserError unless --precision can run here, on this kind of model."""
    precision.check(precision_name, "--precision")
    if tflite_model and precision_name != precision.FLOAT32:
        raise UserError(f"--precision={precision_name} applies to the SavedModel; a .tflite "
                        "model runs in the precision it was converted to. Drop --precision, or "
                        "--tflite_model.")


HELP = command.HelpPage(
    program="label_image",
    usage="[--saved_model_dir FOLDER | --tflite_model FILE | --onnx_model FILE] "
          "(--image FILE ... | --image_dir FOLDER)",
    summary=(
        "Prints the top predictions of a classifier that retrain exported, for one image or "
        "many: 'label score' lines (after each image's path when there are several), or one "
        "JSON object per image and line with --output_format json, for shell pipelines. "
        "Images that cannot be read are named on stderr and the exit status is 1. With "
        "--evaluate, scores a folder of labelled subfolders instead."),
    examples=[
        "label_image --saved_model_dir out/saved_model --image photo.jpg",
        "label_image --saved_model_dir out/saved_model --image_dir new_photos --output_format json",
        "label_image --tflite_model out/model.tflite --image photo.jpg",
        "label_image --onnx_model out/model.onnx --image photo.jpg",
        "label_image --saved_model_dir out/saved_model --image_dir test_photos --evaluate",
    ],
    groups=[
        ("Model", ["saved_model_dir", "tflite_model", "onnx_model", "labels"]),
        ("Images", ["image", "image_dir"]),
        ("Output", ["num_top_predictions", "output_format", "unknown_threshold", "evaluate",
                    "report_dir"]),
    ],
)


def main(argv):
    try:
        check_before_tensorflow(argv[1:])
        if uses_tensorflow():
            console.configure_logging()  # Imports TensorFlow: the seconds a Ctrl-C most often hits.
            from retrain.runtime import devices  # pylint: disable=import-outside-toplevel
            devices.configure_threads()  # Before TensorFlow runs anything.
        else:
            console.configure_log_format()
        with precision.forward_in(FLAGS.precision):
            if FLAGS.evaluate:
                return evaluate_folder(FLAGS.saved_model_dir, FLAGS.image_dir, FLAGS.batch_size,
                                       FLAGS.report_dir)
            paths = image_paths(FLAGS.image, FLAGS.image_dir, argv[1:])
            failures = label_files(paths, FLAGS.saved_model_dir, FLAGS.output_format,
                                   FLAGS.num_top_predictions, FLAGS.batch_size,
                                   FLAGS.tflite_model, FLAGS.labels,
                                   FLAGS.unknown_threshold, FLAGS.onnx_model)
    except UserError as error:
        console.print_error("label_image", error)
        return 2
    except KeyboardInterrupt:
        console.print_error("label_image", "Interrupted.")
        return 130  # What a shell reports for a command stopped by SIGINT.
    return 1 if failures else 0


def uses_tensorflow():
    """False when labelling with a .tflite or .onnx model: predictions.py runs those without
    importing TensorFlow (a .tflite needs ai_edge_litert for that, else tf.lite is used)."""
    return FLAGS.evaluate or not (FLAGS.tflite_model or FLAGS.onnx_model)


def check_before_tensorflow(file_args):
    """Raises UserError for flags, files and folders that cannot work, before the slow
    TensorFlow import: which model, which images, and the precision."""
    check_precision(FLAGS.precision, FLAGS.tflite_model or FLAGS.onnx_model)
    check_unknown_threshold(FLAGS.unknown_threshold)
    if FLAGS.evaluate:
        if FLAGS.image or file_args:
            raise UserError("--evaluate reads the labels from --image_dir's subfolders; "
                            "pass --image_dir instead of --image or file arguments.")
        if not FLAGS.image_dir:
            raise UserError("--evaluate needs --image_dir: a folder with one subfolder per "
                            "true label.")
    elif not (FLAGS.image or file_args or FLAGS.image_dir):
        raise UserError("No images given; pass --image FILE [FILE ...] or --image_dir FOLDER.")
    if FLAGS.image_dir and not os.path.isdir(FLAGS.image_dir):
        raise UserError(f"--image_dir {dataset.display_path(FLAGS.image_dir)!r} is not a folder; "
                        "pass a folder of images.")
    check_model_path(FLAGS.saved_model_dir, FLAGS.tflite_model, FLAGS.labels, FLAGS.onnx_model)


def check_unknown_threshold(threshold):
    """Raises UserError for --unknown_threshold=nan: no score is above nan, so every image
    would silently be called known."""
    if threshold is not None and math.isnan(threshold):
        raise UserError(f"--unknown_threshold={threshold} is not a number; pass a value on the "
                        "scale of the unknown_score that --output_format json prints (inf: never "
                        "unknown), or leave it out to use the threshold retrain exported.")


def check_model_path(saved_model_dir, tflite_model, labels, onnx_model=None):
    """Raises UserError unless the model to label with is there (its contents are checked
    when it is loaded)."""
    if tflite_model and onnx_model:
        raise UserError(f"--tflite_model={tflite_model!r} and --onnx_model={onnx_model!r} both "
                        "name a model; pass one of them.")
    if onnx_model:
        from retrain.predict import onnx_runtime  # pylint: disable=import-outside-toplevel
        onnx_runtime.check_onnx_files(onnx_model, labels)
        onnx_runtime.check_onnxruntime()
        return
    if tflite_model:
        model_files.check_tflite_files(tflite_model, labels)
        return
    if labels:
        raise UserError(f"--labels={labels!r} goes with --tflite_model or --onnx_model (a "
                        "SavedModel carries its labels); pass one of them too, or drop --labels.")
    model_files.check_saved_model_dir(saved_model_dir)


def run_main():
    define_flags()
    command.run(HELP, FLAGS, main)


if __name__ == "__main__":
    run_main()
