"""The retrain run, stage by stage: find -> split -> bottlenecks -> train -> evaluate -> export."""

import contextlib
import dataclasses
import hashlib
import os
import time

from absl import logging
import numpy as np

from retrain import preflight
from retrain.audit import audit
from retrain.config import FINE_TUNE_DROPOUT
from retrain.config import FINE_TUNE_HEAD_RATE_MULTIPLIER
from retrain.config import FINE_TUNE_MIXUP_ALPHA
from retrain.config import FINE_TUNE_TOP_BATCH_SIZE
from retrain.config import FINE_TUNE_TOP_LEARNING_RATE
from retrain.config import FINE_TUNE_WHOLE_BATCH_SIZE
from retrain.config import FINE_TUNE_WHOLE_LEARNING_RATE
from retrain.data import dataset
from retrain.data import distortion_settings
from retrain.data import split
from retrain.evaluation import evaluate
from retrain.evaluation import metrics as metrics_lib
from retrain.evaluation import report
from retrain.export import saved_model
from retrain.export import tflite_export
from retrain.export.tflite_settings import calibration_path_for
from retrain.evaluation import export_check
from retrain.features import backbones
from retrain.features import bottlenecks
from retrain.features import distorted_variants
from retrain.features import modules
from retrain.runtime import devices
from retrain.runtime import precision
from retrain.training import checkpoint
from retrain.training import finetune
from retrain.training import finetune_top
from retrain.training import train
from retrain.training import trust as trust_lib


@dataclasses.dataclass
class RunResult:
    labels: list
    test: evaluate.TestResult
    history: train.History
    skipped: list  # [dataset.SkippedFile]
    bottlenecks_computed: int
    stage_seconds: dict
    classification: metrics_lib.ClassificationMetrics = None  # per-class test metrics
    tflite: export_check.TFLiteReport = None  # None without --tflite_output_file
    onnx: export_check.ONNXReport = None  # None without --onnx_output_file
    fine_tune: finetune.FineTuneResult = None  # None without --fine_tune
    # The distorted training variants (augmentation.AugmentationResult; copies 0 when off).
    augmentation: object = None
    audit: object = None  # audit.AuditResult; None with --audit=false
    trust: trust_lib.Trust = None  # the temperature and the unknown detector exported
    calibration: dict = None  # metrics.json's "calibration": ECE before/after on the test split
    test_unknown_share: float = None  # known test images the exported model calls unknown


def run(config, checked=None):
    """Retrains a classifier as `config` says. Raises UserError for problems the user can fix.

    checked: what preflight.check_run(config.resolved()) returned, if the caller ran it
    already (the command line does, before importing TensorFlow); None runs it here.
    """
    config = config.resolved()
    timer = _StageTimer()
    with timer("find_images"):
        checked = checked or preflight.check_run(config)
    collection, splits = checked.collection, checked.splits
    check_training_settings(config, collection.labels)
    with timer("resolve_module"):
        module = resolve(config)
    if config.fine_tune:
        finetune.check_fine_tunable(module, config.fine_tune_layers)
        finetune_top.check_blocks(module, config.fine_tune_top_blocks)
    with timer("bottlenecks"):
        vectors = bottlenecks.get_bottlenecks(in_split_order(splits), module, config.bottleneck_dir,
                                              config.bottleneck_batch_size, config.max_image_pixels,
                                              memory_budget(config),
                                              precision=config.bottleneck_precision)
    skipped = collection.skipped + vectors.failed
    if vectors.failed:
        # Images that could not be decoded drop out, which can change how classes split.
        collection = dataclasses.replace(collection, images=vectors.image_files)
        dataset.check_every_class_has_images(collection)
        splits = split.split_images(collection.images, collection.labels,
                                    config.validation_percentage, config.testing_percentage)
    audited = None
    if config.audit or config.exclude_flagged:
        with timer("audit"):
            audited = audit_data(config, vectors, splits, collection.labels)
        if audited and config.exclude_flagged:
            splits = exclude_flagged(splits, audited, len(collection.labels))
    data = split_arrays(vectors, splits)
    _log_split_sizes(collection.labels, splits)
    with timer("augmentation"):
        augmented_training, augmented = add_training_variants(config, module, data["training"])
    with timer("training"):
        head, history = train.train_head(
            *augmented_training[:2], *data["validation"][:2], len(collection.labels),
            training_settings(config), config.summaries_dir,
            checkpoint_settings(config, module, collection.labels, augmented_training[2]))
    fine_tuned = None
    if config.fine_tune:
        with timer("fine_tuning"):
            # On the training images themselves: fine-tuning distorts them afresh at each step.
            fine_tuned = fine_tune(config, module, head, data, history.regularization)
        head, data["testing"] = fine_tuned.head, fine_tuned.testing
    with timer("calibration"):
        trust = fit_trust(config, module, head, data, fine_tuned, len(collection.labels))
    with timer("evaluation"):
        test = evaluate.evaluate_head(head, *data["testing"], collection.labels,
                                      config.test_batch_size, config.random_seed)
        if config.print_misclassified_test_images:
            evaluate.log_misclassified(test)
        classification = metrics_lib.classification_metrics(test.true_labels, test.probabilities,
                                                             collection.labels)
        for line in metrics_lib.format_report(classification):
            logging.info("%s", line)
        calibration = metrics_lib.calibration_metrics(test.probabilities, test.true_labels,
                                                      trust.temperature)
    with timer("export"):
        feature_extractor = (fine_tuned.feature_extractor if fine_tuned
                             else modules.load_feature_extractor(module))
        saved_model.export_saved_model(feature_extractor, head, collection.labels, module.image_size,
                                  config.saved_model_dir, trust.temperature, trust.detector,
                                  config.saved_model_version)
        saved_model.write_labels(collection.labels, config.output_labels)
    tflite = None
    if config.tflite_output_file:
        with timer("tflite"):
            tflite = export_tflite(config, module, collection.labels, splits, head, data["testing"])
            saved_model.write_calibration(calibration_path_for(config.tflite_output_file),
                                          trust.temperature, trust.detector)
    onnx = None
    if config.onnx_output_file:
        with timer("onnx"):
            features, _, test_images = data["testing"]
            onnx = export_check.export_and_evaluate_onnx(
                config.onnx_output_file, config.saved_model_dir, collection.labels, test_images,
                head.probabilities(features), max_pixels=config.max_image_pixels)
            saved_model.write_calibration(calibration_path_for(config.onnx_output_file),
                                          trust.temperature, trust.detector)
    result = RunResult(collection.labels, test, history, skipped,
                       vectors.computed + augmented.computed, timer.seconds,
                       classification=classification, tflite=tflite, fine_tune=fine_tuned,
                       augmentation=augmented, audit=audited, trust=trust, calibration=calibration,
                       test_unknown_share=unknown_share(trust, head, data["testing"]), onnx=onnx)
    write_metrics(config, module, result)
    _log_summary(result)
    return result


def resolve(config):
    """Resolves the module and, unless it is a built-in backbone, loads it to check it fits."""
    module = modules.resolve_module(config.tfhub_module, config.image_size,
                                    config.backbone_cache_dir, config.keras_weights)
    if not backbones.is_builtin(config.tfhub_module):
        modules.load_feature_extractor(module)
    return module


def check_augmentation(config):
    """Raises UserError for distortion settings that make no sense (config resolved)."""
    distortion_settings.check_settings(preflight.distortions(config), config.augmentation_copies)


def add_training_variants(config, module, training):
    """The training split with the distorted variants config asks for appended (if any)."""
    return distorted_variants.add_training_variants(
        training, module, config.bottleneck_dir, config.bottleneck_batch_size,
        config.max_image_pixels, preflight.distortions(config), config.augmentation_copies,
        config.bottleneck_precision)


def export_tflite(config, module, labels, splits, head, test_data):
    """Converts the exported SavedModel to TFLite and evaluates it on the test split.

    The SavedModel's predictions to compare with are the head's on the cached test
    bottlenecks: the same network on the same decoded images, without running it again.
    """
    settings = tflite_export.TFLiteSettings(
        output_file=config.tflite_output_file, quantization=config.tflite_quantization,
        int8_input=config.tflite_int8_input,
        representative_images=config.tflite_representative_images, seed=config.random_seed,
        max_image_pixels=config.max_image_pixels)
    features, _, test_images = test_data
    return export_check.export_and_evaluate(
        settings, config.saved_model_dir, labels, module.image_size,
        [image.path for image in splits["training"]], test_images, head.probabilities(features))


def training_settings(config):
    return train.TrainingSettings(
        steps=config.how_many_training_steps, batch_size=config.train_batch_size,
        learning_rate=config.learning_rate, eval_step_interval=config.eval_step_interval,
        validation_batch_size=config.validation_batch_size, seed=config.random_seed,
        momentum=config.momentum, class_balance=config.class_balance,
        weight_decay=config.weight_decay, label_smoothing=config.label_smoothing,
        log_file=training_log_file(config), verbose=config.verbose)


def training_log_file(config):
    """Where training and fine-tuning write every evaluation's Step lines."""
    return os.path.join(config.output_dir, train.TRAINING_LOG_FILE)


def checkpoint_settings(config, module, labels, training_images):
    """Where the head checkpoints, and what a resumed run must match beyond the arrays: the
    label names, the module, and the training images in row order (their content keys)."""
    # Content keys are fixed-length digests (bytes), so joined they stay unambiguous.
    keys = b"".join(image.content_key for image in training_images)
    return checkpoint.CheckpointSettings(
        directory=checkpoint.head_directory(config.checkpoint_path), resume=config.resume,
        every_seconds=config.checkpoint_every_seconds,
        description={"labels": list(labels), "module": module.identity,
                     "training_images_sha1": hashlib.sha1(keys).hexdigest(),
                     # Other vectors, so another head; float32 keeps older checkpoints valid.
                     **({} if config.bottleneck_precision == precision.FLOAT32
                        else {"bottleneck_precision": config.bottleneck_precision})})


def check_training_settings(config, labels):
    """Fails before the bottlenecks on a bad --class_balance or, with --resume, a checkpoint
    whose labels or training settings differ from this run's (the rest of its fingerprint
    is checked when training starts)."""
    if not config.resume:
        return
    directory = checkpoint.head_directory(config.checkpoint_path)
    state = checkpoint.load_state(directory)
    if state is not None:
        checkpoint.check_fingerprint(
            state.fingerprint,
            {"labels": list(labels), **train.settings_fingerprint(training_settings(config))},
            directory)


def fine_tune(config, module, head, data, regularization=None):
    """Fine-tunes module + head on the training images (retrain.training.finetune), with the head's
    weight decay and label smoothing (regularization: train.History.regularization).

    A built-in EfficientNet-Lite backbone trains its top blocks on cached activations
    (finetune_top); other modules, or --fine_tune_top_blocks=0, the whole network (finetune).
    Either way the result's feature_extractor is the fine-tuned module, to export."""
    checkpoint_dir = os.path.join(config.checkpoint_path, finetune.CHECKPOINT_FOLDER)
    if config.fine_tune_top_blocks and finetune_top.splittable(module):
        return finetune_top.fine_tune_top(module, head, data, fine_tune_top_settings(
            config, regularization), checkpoint_dir, resume=config.resume)
    settings = finetune.FineTuneSettings(
        steps=config.fine_tune_steps,
        batch_size=config.fine_tune_batch_size or FINE_TUNE_WHOLE_BATCH_SIZE,
        learning_rate=config.fine_tune_learning_rate or FINE_TUNE_WHOLE_LEARNING_RATE,
        momentum=config.fine_tune_momentum,
        eval_interval=config.fine_tune_eval_interval,
        validation_batch_size=config.validation_batch_size, layers=config.fine_tune_layers,
        seed=config.random_seed, max_image_pixels=config.max_image_pixels,
        inference_batch_size=config.bottleneck_batch_size or devices.default_batch_size(),
        distortions=preflight.distortions(config) if config.any_distortion() else None,
        log_file=training_log_file(config), verbose=config.verbose,
        weight_decay=(regularization or {}).get("weight_decay") or 0.0,
        label_smoothing=config.label_smoothing)
    return finetune.fine_tune(module, head, data, settings, checkpoint_dir,
                              devices.distribution_strategy(), resume=config.resume)


def fine_tune_top_settings(config, regularization=None):
    """finetune_top's settings from config: its distortions and copies are the run's."""
    distortions = preflight.distortions(config) if config.any_distortion() else None
    return finetune_top.TopFineTuneSettings(
        blocks=config.fine_tune_top_blocks, epochs=config.fine_tune_epochs,
        batch_size=config.fine_tune_batch_size or FINE_TUNE_TOP_BATCH_SIZE,
        learning_rate=config.fine_tune_learning_rate or FINE_TUNE_TOP_LEARNING_RATE,
        head_learning_rate_multiplier=FINE_TUNE_HEAD_RATE_MULTIPLIER,
        seed=config.random_seed,
        max_image_pixels=config.max_image_pixels,
        inference_batch_size=config.bottleneck_batch_size or devices.default_batch_size(),
        distortions=distortions, copies=config.augmentation_copies or 0 if distortions else 0,
        weight_decay=(regularization or {}).get("weight_decay") or 0.0,
        label_smoothing=config.label_smoothing, dropout=FINE_TUNE_DROPOUT,
        mixup_alpha=FINE_TUNE_MIXUP_ALPHA,
        log_file=training_log_file(config), verbose=config.verbose)


def fit_trust(config, module, head, data, fine_tuned, num_classes):
    """The temperature and unknown detector of the exported network (trust.fit): after
    fine-tuning, on features recomputed through the fine-tuned extractor."""
    settings = trust_lib.TrustSettings(
        known_share=config.unknown_known_share, method=config.unknown_method,
        neighbors=config.unknown_neighbors, bank_size=config.unknown_bank_size,
        seed=config.random_seed)
    if not fine_tuned:
        return trust_lib.fit(head, data, num_classes, settings)
    extractor = fine_tuned.feature_extractor
    return trust_lib.fit(
        head, data, num_classes, settings,
        features_of=lambda images: extractor(images, training=False),
        image_size=module.image_size,
        batch_size=config.bottleneck_batch_size or devices.default_batch_size(),
        max_pixels=config.max_image_pixels)


def unknown_share(trust, head, testing):
    """The share of (known) test images the exported model calls unknown; None without any."""
    features = np.asarray(testing[0])
    if not len(features):
        return None
    scores = trust.detector.score(features, features @ head.weights + head.biases)
    return float(np.mean(scores > trust.detector.threshold))


def audit_data(config, vectors, splits, labels):
    """The data audit (retrain.audit) of the bottlenecks, written to <output_dir>/audit.json
    and audit.html; None when the bottlenecks are too large for memory (read from disk)."""
    if not isinstance(vectors.features, np.ndarray):
        logging.info("Audit: skipped, the bottlenecks do not fit in memory (--bottleneck_memory_mb).")
        return None
    split_of = {image.relative_path: name for name, images in splits.items() for image in images}
    result = audit.audit_images(vectors.image_files, vectors.features, labels, split_of,
                                config.image_dir, config.random_seed)
    audit.write_audit(result, config.output_dir)
    return result


def exclude_flagged(splits, audited, num_classes):
    """splits with the images the audit flags left out of training (no file is touched); a
    class that would have no training image left keeps its flagged ones."""
    flagged = audited.flagged_training_paths()
    kept = [image for image in splits["training"] if image.relative_path not in flagged]
    emptied = set(range(num_classes)) - {image.label_index for image in kept}
    kept = [image for image in splits["training"]
            if image.relative_path not in flagged or image.label_index in emptied]
    logging.info("Left %d flagged image(s) out of training (--exclude_flagged).",
                 len(splits["training"]) - len(kept))
    return {**splits, "training": kept}


def audit_folder(config, checked=None):
    """`retrain audit`: the bottlenecks (from the cache, or computed into it), then the audit.

    Returns:
      audit.AuditResult, or None when the bottlenecks do not fit in memory.
    """
    config = config.resolved()
    checked = checked or preflight.check_run(config)
    module = resolve(config)
    vectors = bottlenecks.get_bottlenecks(in_split_order(checked.splits), module,
                                          config.bottleneck_dir, config.bottleneck_batch_size,
                                          config.max_image_pixels, memory_budget(config),
                                          precision=config.bottleneck_precision)
    return audit_data(config, vectors, checked.splits, checked.collection.labels)


def memory_budget(config):
    """Bytes the bottlenecks may take in memory; None: bottlenecks.default_memory_budget()."""
    return None if config.bottleneck_memory_mb is None else config.bottleneck_memory_mb << 20


def in_split_order(splits):
    """The images of splits, training first, then validation, then testing.

    Bottlenecks come back in this order, so each split is a run of consecutive rows and
    split_arrays hands out views of one array instead of a copy per split.
    """
    return [image for name in split.SPLITS for image in splits[name]]


def split_arrays(vectors, splits):
    """Per split name: (features float32 [n, D], labels int32 [n], [dataset.ImageFile]).

    The features of a split are a view of vectors.features where the split's rows lie
    together in it (see in_split_order), else a copy; a row_store.RowStore stays one,
    restricted to the split's rows, without reading any.
    """
    row_of = {image.relative_path: row for row, image in enumerate(vectors.image_files)}
    arrays = {}
    for name, image_files in splits.items():
        rows = np.array([row_of[image.relative_path] for image in image_files], dtype=np.int64)
        labels = np.array([image.label_index for image in image_files], dtype=np.int32)
        arrays[name] = (_rows_of(vectors.features, rows), labels, image_files)
    return arrays


def _rows_of(features, rows):
    """features[rows], as a view when rows is a run of consecutive rows."""
    if not isinstance(features, np.ndarray):
        return features.subset(rows)
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows) and np.all(np.diff(rows) == 1):
        return features[rows[0]:rows[-1] + 1]
    return features[rows]


def _log_split_sizes(labels, splits):
    """One line, however many classes: each split's images, and the fewest and most a class
    has in it (a class short of images shows as a low minimum)."""
    parts = []
    for name in split.SPLITS:
        counts = np.bincount([image.label_index for image in splits[name]],
                             minlength=len(labels))
        parts.append(f"{counts.sum()} {name} ({counts.min()}-{counts.max()} per class)")
    logging.info("Images: %s, in %d classes.", ", ".join(parts), len(labels))


def write_metrics(config, module, result):
    """metrics.json: the run's numbers, for people and for scripts."""
    metrics = {
        "module": module.handle,
        "image_size": list(module.image_size),
        "bottleneck_precision": config.bottleneck_precision,
        "labels": result.labels,
        "test_top1_accuracy": result.test.top1_accuracy,
        "test_top5_accuracy": result.test.top5_accuracy,
        "test_count": result.test.count,
        "misclassified": [dict(zip(("image", "true", "predicted", "score"), row))
                          for row in result.test.misclassified],
        "skipped_images": [{"path": dataset.display_path(skip.path), "reason": skip.reason}
                           for skip in result.skipped],
        "bottlenecks_computed": result.bottlenecks_computed,
        "stage_seconds": result.stage_seconds,
        "history": dataclasses.asdict(result.history),
        "skipped_image_count": len(result.skipped),
    }
    if result.classification:
        for key, value in result.classification.as_dict().items():
            metrics.setdefault(key, value)
    if result.history.regularization:
        # The new layer's weight decay (chosen on validation unless --weight_decay fixed it).
        metrics["regularization"] = result.history.regularization
    if result.augmentation:
        metrics["augmentation"] = result.augmentation.as_dict()
    if result.audit:
        metrics["audit"] = audit.metrics_entry(result.audit)
    if result.tflite:
        metrics["tflite"] = dataclasses.asdict(result.tflite)
    if result.onnx:
        metrics["onnx"] = dataclasses.asdict(result.onnx)
    if result.fine_tune:
        metrics["fine_tune"] = finetune_metrics(result)
    if result.calibration:
        metrics["calibration"] = result.calibration
    if result.trust:
        metrics["unknown"] = {**result.trust.describe(),
                              "test_unknown_share": result.test_unknown_share}
    pictures = report.write_metrics_and_report(config.metrics_file, metrics, flag="--metrics_file")
    logging.info("Wrote the report to %s", os.path.join(os.path.dirname(config.metrics_file),
                                                         report.REPORT_FILE))
    write_confusion_summary(config, metrics, pictures)


def finetune_metrics(result):
    """metrics.json's "fine_tune" entry: test accuracy before and after, and how it went.

    The top-level test accuracy is the fine-tuned network's: the one exported.
    """
    fine_tuned = result.fine_tune
    return {
        "frozen_test_top1_accuracy": fine_tuned.frozen_test_accuracy,
        "fine_tuned_test_top1_accuracy": result.test.top1_accuracy,
        "start_validation_accuracy": fine_tuned.start_validation_accuracy,
        "best_validation_accuracy": fine_tuned.best_validation_accuracy,
        "best_steps_done": fine_tuned.best_steps_done,
        "trained_module_variables": fine_tuned.trained_variables,
        "images_per_second": fine_tuned.images_per_second,
        "seconds": result.stage_seconds.get("fine_tuning"),
        "history": dataclasses.asdict(fine_tuned.history),
    }


def write_confusion_summary(config, metrics, pictures):
    """The confusion matrix picture of the report, as a TensorBoard image."""
    if report.CONFUSION_MATRIX_FILE in pictures and config.summaries_dir:
        last_step = metrics["history"]["steps"][-1] if metrics["history"]["steps"] else 0
        train.write_image_summaries(config.summaries_dir, "test", last_step,
                                    {"confusion_matrix": pictures[report.CONFUSION_MATRIX_FILE]})


def _log_summary(result):
    if result.skipped:
        logging.warning("Skipped %d file(s) that are not usable images (listed above and in "
                        "metrics.json).", len(result.skipped))
    times = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in result.stage_seconds.items())
    logging.info("Done. %d bottlenecks computed; time per stage: %s.", result.bottlenecks_computed,
                 times)


class _StageTimer:
    """Records wall-clock seconds per named stage: `with timer("training"): ...`."""

    def __init__(self):
        self.seconds = {}

    @contextlib.contextmanager
    def __call__(self, name):
        start = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = round(time.monotonic() - start, 3)
