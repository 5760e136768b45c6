"""Comparing backbones and methods on the same split of the same images.

Each (module, method) pair is one pipeline.run with its own output folder under
<output_dir>/runs/ and one shared bottleneck cache, so a module's bottlenecks are computed
once however many methods or comparisons use them. A small CNN trained from scratch is the
baseline row. The table goes to comparison.md, .csv and .json, with a bar chart.

Methods are rows of METHODS: a name, whether it applies to a module, and how it changes the
run's RetrainConfig.
"""

import csv
import dataclasses
import hashlib
import io
import json
import os
import re
from typing import Callable, Optional

from absl import logging

from retrain import pipeline
from retrain.compare import baseline
from retrain.config import DEFAULT_COMPARE_DISTORTIONS
from retrain.data import dataset
from retrain.errors import UserError
from retrain.evaluation import report
from retrain.runtime import files

BASELINE_MODULE = "small CNN (from scratch)"
BASELINE_METHOD = "from_scratch"
TABLE_BASENAME = "comparison"


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    description: str
    applies_to: Callable  # module handle -> bool
    configure: Callable  # RetrainConfig -> RetrainConfig for this method


def _without_augmentation(config):
    return dataclasses.replace(config, flip_left_right=False, random_crop=0, random_scale=0,
                               random_brightness=0, augmentation_copies=None)


def _with_augmentation(config):
    """The distortion flags given, or DEFAULT_COMPARE_DISTORTIONS if none is."""
    return config if config.any_distortion() else dataclasses.replace(
        config, **DEFAULT_COMPARE_DISTORTIONS)


METHODS = {
    "frozen": Method("frozen", "frozen backbone, cached bottlenecks, new softmax layer",
                     applies_to=lambda module: True, configure=_without_augmentation),
    "augmented": Method("augmented", "frozen, plus cached bottlenecks of distorted copies of "
                        "the training images (the distortion flags, or crop, scale and "
                        "brightness 10%)", applies_to=lambda module: True,
                        configure=_with_augmentation),
    # A module without trainable variables gives a row with its error, not a failed comparison.
    "fine_tuned": Method("fine_tuned", "the frozen method, then module and layer fine-tuned end "
                         "to end on the images (--fine_tune settings at their defaults)",
                         applies_to=lambda module: True,
                         configure=lambda config: dataclasses.replace(
                             _without_augmentation(config), fine_tune=True)),
    "fine_tuned_augmented": Method(
        "fine_tuned_augmented", "the augmented method, then fine-tuned: the cached blocks train "
        "on the distorted variants too (the whole-network path distorts at every step)",
        applies_to=lambda module: True,
        configure=lambda config: dataclasses.replace(_with_augmentation(config), fine_tune=True)),
}


@dataclasses.dataclass
class Row:
    """One line of the comparison table. Times in seconds, sizes in bytes; None: not applicable."""

    module: str
    method: str
    test_top1_accuracy: Optional[float] = None
    test_macro_f1: Optional[float] = None
    test_count: Optional[int] = None
    training_seconds: Optional[float] = None
    bottleneck_seconds: Optional[float] = None
    bottlenecks_computed: Optional[int] = None
    model_size_bytes: Optional[int] = None
    # The new layer's weight decay: chosen on the validation split unless --weight_decay is set.
    weight_decay: Optional[float] = None
    # Test accuracy minus the same module's frozen row's, in points (None without that row).
    gain_over_frozen: Optional[float] = None
    minutes: Optional[float] = None  # the whole run's wall-clock time, every stage
    output_dir: str = ""
    error: str = ""


def check_methods(names):
    """Returns the Methods named; raises UserError naming an unknown one."""
    if not names:
        raise UserError(f"--methods is empty; pass one or more of {', '.join(METHODS)}.")
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        raise UserError(f"--methods has unknown method {unknown[0]!r}; choose from "
                        f"{', '.join(METHODS)}.")
    return [METHODS[name] for name in names]


def compare(base_config, modules, method_names, output_dir, baseline_settings=None):
    """Trains every (module, method) pair and the baseline; writes and returns the table.

    Args:
      base_config: RetrainConfig with the shared image folder, split and training settings;
        its tfhub_module and output paths are replaced per row.
      modules: module handles, paths or built-in names.
      method_names: names in METHODS.
      output_dir: where runs/, the shared bottleneck cache (unless base_config.bottleneck_dir
        is set) and the comparison files go.
      baseline_settings: baseline.BaselineSettings, or None to leave the baseline out.

    Returns:
      [Row], in the order modules x methods, then the baseline.
    """
    methods = check_methods(method_names)
    for method in methods:
        # A bad distortion setting is every row's problem: report it before any work.
        pipeline.check_augmentation(method.configure(base_config).resolved())
    if not modules:
        raise UserError("--modules is empty; pass one or more modules separated by commas.")
    # A problem with the image folder is everyone's problem: report it once, before any work.
    dataset.find_images(base_config.image_dir)
    # The cache every row shares: where retrain would keep it for this output folder.
    bottleneck_dir = dataclasses.replace(base_config, output_dir=output_dir).resolved().bottleneck_dir
    rows = []
    for module in modules:
        for method in methods:
            if method.applies_to(module):
                rows.append(_run_pipeline_row(base_config, module, method, output_dir,
                                              bottleneck_dir))
    if baseline_settings is not None:
        rows.append(_run_baseline_row(base_config, output_dir, baseline_settings))
    add_gains(rows)
    write_tables(rows, output_dir)
    return rows


def _run_pipeline_row(base_config, module, method, output_dir, bottleneck_dir):
    run_dir = os.path.join(output_dir, "runs", f"{safe_name(module)}-{method.name}")
    config = dataclasses.replace(base_config, tfhub_module=module, output_dir=run_dir,
                                 bottleneck_dir=bottleneck_dir, saved_model_dir=None,
                                 output_labels=None, summaries_dir=None, metrics_file=None,
                                 audit=False)  # one audit of the folder is enough: not per row
    config = method.configure(config)
    logging.info("=== Comparing: %s, method %s ===", module, method.name)
    try:
        result = pipeline.run(config)
    except UserError as error:
        logging.error("%s (%s) failed: %s", module, method.name, error)
        return Row(module, method.name, output_dir=run_dir, error=str(error))
    resolved = config.resolved()
    return Row(module, method.name,
               test_top1_accuracy=result.classification.top1_accuracy,
               test_macro_f1=result.classification.macro_average.f1,
               test_count=result.classification.count,
               training_seconds=(result.stage_seconds.get("training")
                                 + result.stage_seconds.get("fine_tuning", 0.0)),
               # The augmented rows' variants are bottlenecks too.
               bottleneck_seconds=(result.stage_seconds.get("bottlenecks", 0)
                                   + result.stage_seconds.get("augmentation", 0)),
               bottlenecks_computed=result.bottlenecks_computed,
               model_size_bytes=folder_size(resolved.saved_model_dir),
               weight_decay=(result.history.regularization or {}).get("weight_decay"),
               minutes=round(sum(result.stage_seconds.values()) / 60, 2),
               output_dir=run_dir)


def add_gains(rows):
    """Sets each row's gain_over_frozen: its test accuracy minus its module's frozen row's."""
    frozen = {row.module: row.test_top1_accuracy for row in rows
              if row.method == "frozen" and row.test_top1_accuracy is not None}
    for row in rows:
        if row.module in frozen and row.test_top1_accuracy is not None:
            row.gain_over_frozen = round((row.test_top1_accuracy - frozen[row.module]) * 100, 2)


def _run_baseline_row(base_config, output_dir, settings):
    run_dir = os.path.join(output_dir, "runs", BASELINE_METHOD)
    logging.info("=== Comparing: %s ===", BASELINE_MODULE)
    try:
        result = baseline.train_baseline(base_config.image_dir, run_dir,
                                         base_config.validation_percentage,
                                         base_config.testing_percentage, settings,
                                         base_config.max_image_pixels)
    except UserError as error:
        logging.error("The from-scratch baseline failed: %s", error)
        return Row(BASELINE_MODULE, BASELINE_METHOD, output_dir=run_dir, error=str(error))
    return Row(BASELINE_MODULE, BASELINE_METHOD,
               test_top1_accuracy=result.classification.top1_accuracy,
               test_macro_f1=result.classification.macro_average.f1,
               test_count=result.classification.count, training_seconds=result.training_seconds,
               model_size_bytes=result.model_size_bytes, output_dir=run_dir)


def safe_name(module):
    """A folder name for a module handle, URL or path: never "..", a separator or hidden.

    A short hash of the full handle keeps two modules with similar names apart.
    """
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", module).strip("._-")[-60:] or "module"
    digest = hashlib.sha1(module.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{readable.lstrip('.')}-{digest}"


def folder_size(folder):
    """Total bytes of the files under folder (0 if it does not exist)."""
    total = 0
    for root, _, names in os.walk(folder):
        total += sum(os.path.getsize(os.path.join(root, name)) for name in names)
    return total


def write_tables(rows, output_dir):
    """Writes comparison.md, .csv, .json and .png into output_dir."""
    os.makedirs(output_dir, exist_ok=True)
    base = os.path.join(output_dir, TABLE_BASENAME)
    records = [dataclasses.asdict(row) for row in rows]
    files.write_file_atomically(base + ".json", json.dumps(
        {"methods": {name: method.description for name, method in METHODS.items()},
         "rows": records}, indent=2, allow_nan=True).encode("utf-8", "surrogateescape"))
    files.write_file_atomically(base + ".csv", format_csv(records).encode("utf-8", "surrogateescape"))
    files.write_file_atomically(base + ".md", format_markdown(rows).encode("utf-8", "surrogateescape"))
    files.write_file_atomically(base + ".png", report.render_comparison_chart(
        [display_name(row.module) + f"\n{row.method}" for row in rows],
        [row.test_top1_accuracy for row in rows], [row.test_macro_f1 for row in rows]))
    logging.info("Wrote the comparison to %s.{md,csv,json,png}", base)


def format_csv(records):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[field.name for field in dataclasses.fields(Row)],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


_MARKDOWN_COLUMNS = [("module", "module"), ("method", "method"),
                     ("test accuracy", "test_top1_accuracy"), ("macro F1", "test_macro_f1"),
                     ("test images", "test_count"), ("vs frozen", "gain_over_frozen"),
                     ("minutes", "minutes"), ("training s", "training_seconds"),
                     ("bottlenecks s", "bottleneck_seconds"), ("model MB", "model_size_bytes"),
                     ("weight decay", "weight_decay")]


def format_markdown(rows):
    """A GitHub-flavoured markdown table; failed rows show their error."""
    lines = ["| " + " | ".join(title for title, _ in _MARKDOWN_COLUMNS) + " |",
             "|" + "|".join(["---"] * 2 + ["---:"] * (len(_MARKDOWN_COLUMNS) - 2)) + "|"]
    for row in rows:
        cells = [_markdown_cell(row, field) for _, field in _MARKDOWN_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    errors = [row for row in rows if row.error]
    for row in errors:
        lines.append(f"\n{_escape_markdown(row.module)} ({row.method}) failed: "
                     f"{_escape_markdown(row.error)}")
    return "\n".join(lines) + "\n"


def _markdown_cell(row, field):
    value = getattr(row, field)
    if field in ("module", "method"):
        return _escape_markdown(value)
    if value is None:
        return "failed" if row.error and field == "test_top1_accuracy" else "–"
    if field in ("test_top1_accuracy", "test_macro_f1"):
        return f"{value * 100:.1f}%" if field == "test_top1_accuracy" else f"{value:.3f}"
    if field == "model_size_bytes":
        return f"{value / 1e6:.1f}"
    if field == "weight_decay":
        return f"{value:g}"
    if field == "gain_over_frozen":
        return f"{value:+.1f}"
    if field == "minutes":
        return f"{value:.1f}"
    if field.endswith("_seconds"):
        return f"{value:.1f}"
    return str(value)


def _escape_markdown(text):
    text = " ".join(str(text).split())
    return re.sub(r"([\\|*`<>\[\]])", r"\\\1", text)


def display_name(module):
    """A short name for chart labels: the last informative part of a path or URL.

    ".../imagenet/mobilenet_v2_100_224/feature_vector/5" -> "mobilenet_v2_100_224".
    """
    parts = [part for part in re.split(r"[/\\]", module)
             if part and not part.isdigit() and part not in ("feature_vector", "classification")]
    return parts[-1] if parts else module
