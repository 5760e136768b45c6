"""Pictures and a self-contained HTML report of a run's metrics.

Everything here works from the metrics dict that metrics.json holds, so a report can be
rebuilt from that file alone. Plots use matplotlib's object-oriented API with the Agg
canvas: no display, no pyplot global state.

Labels are data (folder names): every piece of text goes through html.escape, matplotlib's
"$...$" maths markup is escaped, and file names here are fixed, never built from labels.
"""

import base64
import html
import io
import json
import math
import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from retrain.evaluation import metrics as metrics_lib
from retrain.runtime import files

TRAINING_CURVES_FILE = "training_curves.png"
CONFUSION_MATRIX_FILE = "confusion_matrix.png"
REPORT_FILE = "report.html"
RELIABILITY_FILE = "reliability.png"

# Longer tables make the page slow without helping anyone; metrics.json has every row.
MAX_TABLE_ROWS = 500
# Beyond this many classes the numbers in the confusion-matrix cells are unreadable.
MAX_ANNOTATED_CLASSES = 30
_MAX_TICK_LABEL_CHARACTERS = 24


def write_metrics_and_report(metrics_file, metrics, flag=None):
    """Writes metrics.json (pretty JSON, atomically) and, beside it, the PNGs and report.html:
    the one writer of both, for retrain's runs and for label_image --evaluate.

    Args:
      metrics_file: path of the JSON file; flag: the flag that named it, for error messages.
      metrics: the metrics dict (non-JSON values are written as text; labels from folder names
        that are not valid UTF-8 keep their bytes).

    Returns:
      dict file name -> PNG bytes of the pictures written (for TensorBoard).
    """
    text = json.dumps(metrics, indent=2, default=str, allow_nan=True)
    files.write_file_atomically(metrics_file, text.encode("utf-8", "surrogateescape"), flag=flag)
    return write_report(os.path.dirname(os.path.abspath(metrics_file)), metrics)


def write_report(folder, metrics):
    """Writes the PNGs and report.html for `metrics` into folder.

    Args:
      folder: an existing folder (the one holding metrics.json).
      metrics: the metrics.json dict (see pipeline.write_metrics).

    Returns:
      dict file name -> PNG bytes of the pictures written (for TensorBoard).
    """
    pictures = {}
    history = metrics.get("history") or {}
    if history.get("steps"):
        pictures[TRAINING_CURVES_FILE] = render_training_curves(history)
    confusion = metrics.get("confusion_matrix")
    if confusion and confusion["labels"]:
        pictures[CONFUSION_MATRIX_FILE] = render_confusion_matrix(confusion["matrix"],
                                                                  confusion["labels"])
    calibration = metrics.get("calibration")
    if calibration and calibration.get("reliability_before"):
        pictures[RELIABILITY_FILE] = render_reliability(calibration)
    for name, png in pictures.items():
        files.write_file_atomically(os.path.join(folder, name), png)
    files.write_file_atomically(os.path.join(folder, REPORT_FILE),
                                build_html(metrics, pictures).encode("utf-8"))
    return pictures


def render_training_curves(history):
    """PNG bytes: accuracy and cross-entropy (train and validation) against step.

    Args:
      history: dict with lists "steps", "train_accuracy", "cross_entropy",
        "validation_accuracy" and optionally "validation_cross_entropy" (None where missing).
    """
    figure = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    accuracy_axes, loss_axes = figure.subplots(1, 2)
    steps = history["steps"]
    _plot_series(accuracy_axes, steps, history.get("train_accuracy"), "train")
    _plot_series(accuracy_axes, steps, history.get("validation_accuracy"), "validation")
    accuracy_axes.set(title="Accuracy", xlabel="step", ylabel="accuracy", ylim=(-0.02, 1.02))
    _plot_series(loss_axes, steps, history.get("cross_entropy"), "train")
    _plot_series(loss_axes, steps, history.get("validation_cross_entropy"), "validation")
    loss_axes.set(title="Cross-entropy", xlabel="step", ylabel="cross-entropy")
    for axes in (accuracy_axes, loss_axes):
        axes.grid(alpha=0.3)
        axes.legend()
    return _png_bytes(figure)


def render_confusion_matrix(matrix, labels):
    """PNG bytes: the confusion matrix, coloured by row share (recall), with counts.

    Args:
      matrix: int [num_classes, num_classes] counts, rows true, columns predicted.
      labels: class names.
    """
    counts = [[int(value) for value in row] for row in matrix]
    size = len(labels)
    shares = [[value / max(sum(row), 1) for value in row] for row in counts]
    side = min(max(3 + 0.45 * size, 5), 30)
    figure = Figure(figsize=(side + 1.5, side), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, shrink=0.8, label="share of the true class")
    names = [_plot_text(label) for label in labels]
    font_size = 10 if size <= 15 else max(4, 10 - size // 10)
    # Slanted, so long labels do not run into each other.
    axes.set_xticks(range(size), names, rotation=45, ha="right", rotation_mode="anchor",
                    fontsize=font_size)
    axes.set_yticks(range(size), names, fontsize=font_size)
    axes.set(xlabel="predicted label", ylabel="true label",
             title=f"Confusion matrix (N={sum(map(sum, counts))})")
    if size <= MAX_ANNOTATED_CLASSES:
        for row, (count_row, share_row) in enumerate(zip(counts, shares)):
            for column, (count, share) in enumerate(zip(count_row, share_row)):
                axes.text(column, row, str(count), ha="center", va="center", fontsize=font_size,
                          color="white" if share > 0.5 else "black")
    return _png_bytes(figure)


def render_reliability(calibration):
    """PNG bytes: the reliability diagram of the test split before and after the temperature
    (accuracy against mean confidence per bin; the diagonal is perfect calibration).

    Args:
      calibration: metrics.json's "calibration" dict (metrics.calibration_metrics).
    """
    figure = Figure(figsize=(6, 5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfectly calibrated")
    for key, name in (("before", "before"), ("after", f"after (T={calibration['temperature']:.3g})")):
        points = [(row["confidence"], row["accuracy"]) for row in calibration[f"reliability_{key}"]
                  if row["count"]]
        if points:
            axes.plot(*zip(*points), marker="o",
                      label=f"{name}: ECE {calibration[f'ece_{key}']:.3f}")
    axes.set(title="Reliability on the test split", xlabel="confidence (top probability)",
             ylabel="accuracy", xlim=(0, 1.02), ylim=(0, 1.02))
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left")
    return _png_bytes(figure)


def render_comparison_chart(names, accuracies, macro_f1s):
    """PNG bytes: grouped bars of test accuracy and macro F1, one group per row.

    Args:
      names: row names (may contain a newline).
      accuracies, macro_f1s: floats in [0, 1], or None for a row that failed.
    """
    count = len(names)
    figure = Figure(figsize=(max(6, 1.3 * count + 2), 5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    width = 0.38
    for offset, values, name in ((-width / 2, accuracies, "test accuracy"),
                                 (width / 2, macro_f1s, "macro F1")):
        heights = [0.0 if _missing(value) else value for value in values]
        bars = axes.bar([index + offset for index in range(count)], heights, width, label=name)
        axes.bar_label(bars, labels=["failed" if _missing(value) else f"{value:.2f}"
                                     for value in values], fontsize=8, padding=2)
    axes.set_xticks(range(count), [_plot_text(name) for name in names], fontsize=8)
    # Headroom above 1.0 keeps the legend clear of the bars and their numbers.
    axes.set(ylim=(0, 1.28), ylabel="on the test split", title="Test accuracy and macro F1")
    axes.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    axes.grid(axis="y", alpha=0.3)
    axes.legend(loc="upper left", ncol=2)
    return _png_bytes(figure)


def _missing(value):
    return value is None or (isinstance(value, float) and math.isnan(value))


def build_html(metrics, pictures):
    """The report page: one HTML document with the pictures embedded as data: URLs.

    Args:
      metrics: the metrics.json dict.
      pictures: dict file name -> PNG bytes (TRAINING_CURVES_FILE, CONFUSION_MATRIX_FILE).
    """
    title = "retrain report"
    if metrics.get("module"):
        title += f": {_text(metrics['module'])}"
    sections = [f"<h1>{title}</h1>", _summary_section(metrics)]
    if TRAINING_CURVES_FILE in pictures:
        sections.append("<h2>Training curves</h2>"
                        + _image(pictures[TRAINING_CURVES_FILE], "Accuracy and cross-entropy "
                                 "of training and validation against step"))
    sections.append(_trust_section(metrics, pictures.get(RELIABILITY_FILE)))
    sections.append(_per_class_section(metrics))
    sections.append(_confusion_section(metrics, pictures.get(CONFUSION_MATRIX_FILE)))
    sections.append(_misclassified_section(metrics.get("misclassified") or []))
    sections.append(_skipped_section(metrics.get("skipped_images") or []))
    return _PAGE.format(title=title, body="\n".join(sections))


# A strict policy: the page needs no script and no network, so none is allowed even if
# some text escaped the escaping.
_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th {{ background: #f2f2f2; }}
td.text, th.text {{ text-align: left; word-break: break-all; }}
td.hit {{ background: #dbe9f6; font-weight: bold; }}
img {{ max-width: 100%; height: auto; border: 1px solid #eee; }}
.note {{ color: #666; }}
</style>
</head>
<body>
{body}
</body>
</html>
"""


def _summary_section(metrics):
    macro = metrics.get("macro_average") or {}
    weighted = metrics.get("weighted_average") or {}
    rows = [
        ("Module", _text(metrics.get("module", ""))),
        ("Test images", _text(metrics.get("test_count", 0))),
        ("Top-1 accuracy", _percent(metrics.get("test_top1_accuracy"))),
        ("Top-5 accuracy", _percent(metrics.get("test_top5_accuracy"))),
        ("Macro-average F1", _number(macro.get("f1"))),
        ("Weighted-average F1", _number(weighted.get("f1"))),
        ("Images skipped as unusable", _text(metrics.get("skipped_image_count",
                                                         len(metrics.get("skipped_images") or [])))),
    ]
    if "bottlenecks_computed" in metrics:
        rows.append(("Bottlenecks computed", _text(metrics["bottlenecks_computed"])))
    regularization = metrics.get("regularization")
    if regularization:
        rows.append(("Weight decay", _text(f"{regularization['weight_decay']:g} "
                                           f"({regularization['chosen_by']})")))
        rows.append(("Label smoothing", _text(f"{regularization['label_smoothing']:g}")))
    audited = metrics.get("audit")
    if audited:
        # audit.html sits next to audit.json, in the output folder (where metrics.json defaults to).
        rows.append(("Data audit", _text(
            f"{audited.get('label_issues', 0)} possible label errors, "
            f"{audited.get('exact_groups', 0) + audited.get('near_groups', 0)} duplicate groups "
            f"({audited.get('leaks', 0)} across splits), {audited.get('outliers', 0)} outliers")
            + ' (<a href="audit.html">audit.html</a>)'))
    for stage, seconds in (metrics.get("stage_seconds") or {}).items():
        rows.append((f"Time: {_text(stage)}", f"{float(seconds):.1f} s"))
    body = "".join(f'<tr><th class="text">{name}</th><td>{value}</td></tr>' for name, value in rows)
    return f"<h2>Summary</h2><table>{body}</table>"


def _trust_section(metrics, png):
    """Calibration (ECE before and after the temperature) and the unknown threshold."""
    calibration, unknown = metrics.get("calibration"), metrics.get("unknown")
    if not calibration and not unknown:
        return ""
    rows = []
    if calibration:
        rows += [("Temperature", _number(calibration["temperature"])),
                 ("ECE before (15 bins)", _number(calibration["ece_before"])),
                 ("ECE after", _number(calibration["ece_after"]))]
    if unknown:
        rows += [("Unknown score", _text(unknown["method"])),
                 ("Unknown threshold", _number(unknown["threshold"])),
                 ("Validation kept known", _percent(unknown["known_share"])),
                 ("Test images called unknown", _percent(unknown.get("test_unknown_share")))]
    body = "".join(f'<tr><th class="text">{name}</th><td>{value}</td></tr>' for name, value in rows)
    picture = _image(png, "Reliability diagram before and after the temperature") if png else ""
    return f"<h2>Calibration and unknown</h2><table>{body}</table>{picture}"


def _per_class_section(metrics):
    header = ('<tr><th class="text">label</th><th>precision</th><th>recall</th><th>F1</th>'
              "<th>support</th></tr>")
    rows = list(metrics.get("per_class") or [])
    averages = [metrics[key] for key in ("macro_average", "weighted_average") if key in metrics]
    body = "".join(
        f'<tr><td class="text">{_text(row["label"])}</td><td>{_number(row["precision"])}</td>'
        f'<td>{_number(row["recall"])}</td><td>{_number(row["f1"])}</td>'
        f'<td>{_text(row["support"])}</td></tr>' for row in rows + averages)
    return f"<h2>Per-class results</h2><table>{header}{body}</table>"


def _confusion_section(metrics, png):
    confusion = metrics.get("confusion_matrix")
    if not confusion:
        return ""
    parts = ["<h2>Confusion matrix</h2>"]
    if png:
        parts.append(_image(png, "Confusion matrix: rows are true labels, columns predicted labels"))
    labels = confusion["labels"]
    header = '<tr><th class="text">true \\ predicted</th>' + "".join(
        f'<th class="text">{_text(label)}</th>' for label in labels) + "</tr>"
    body = "".join(
        f'<tr><th class="text">{_text(label)}</th>' + "".join(
            f'<td class="hit">{int(value)}</td>' if row_index == column else f"<td>{int(value)}</td>"
            for column, value in enumerate(row)) + "</tr>"
        for row_index, (label, row) in enumerate(zip(labels, confusion["matrix"])))
    parts.append(f"<table>{header}{body}</table>")
    return "".join(parts)


def _misclassified_section(rows):
    heading = f"<h2>Misclassified test images ({len(rows)})</h2>"
    if not rows:
        return heading + '<p class="note">None.</p>'
    header = ('<tr><th class="text">image</th><th class="text">true label</th>'
              '<th class="text">predicted label</th><th>score</th></tr>')
    body = "".join(
        f'<tr><td class="text">{_text(row["image"])}</td><td class="text">{_text(row["true"])}</td>'
        f'<td class="text">{_text(row["predicted"])}</td><td>{_number(row["score"])}</td></tr>'
        for row in rows[:MAX_TABLE_ROWS])
    return heading + f"<table>{header}{body}</table>" + _more_rows_note(len(rows))


def _skipped_section(rows):
    heading = f"<h2>Files skipped as unusable ({len(rows)})</h2>"
    if not rows:
        return heading + '<p class="note">None.</p>'
    header = '<tr><th class="text">file</th><th class="text">reason</th></tr>'
    body = "".join(f'<tr><td class="text">{_text(row["path"])}</td>'
                   f'<td class="text">{_text(row["reason"])}</td></tr>' for row in rows[:MAX_TABLE_ROWS])
    return heading + f"<table>{header}{body}</table>" + _more_rows_note(len(rows))


def _more_rows_note(count):
    if count <= MAX_TABLE_ROWS:
        return ""
    return f'<p class="note">The first {MAX_TABLE_ROWS} of {count} rows; metrics.json lists all.</p>'


def _image(png, alt):
    data = base64.b64encode(png).decode("ascii")
    return f'<p><img src="data:image/png;base64,{data}" alt="{_text(alt)}"></p>'


def _text(value):
    """Any value as escaped HTML text (quotes too, so it is safe inside attributes)."""
    return html.escape(metrics_lib.printable(str(value)), quote=True)


def _number(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "&ndash;"
    return f"{float(value):.3f}"


def _percent(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "&ndash;"
    return f"{float(value) * 100:.1f}%"


def _plot_text(label):
    """A label as matplotlib shows it literally: short, with "$" escaped (no maths mode)."""
    lines = metrics_lib.printable(str(label)).split("\n")
    lines = [line if len(line) <= _MAX_TICK_LABEL_CHARACTERS
             else line[:_MAX_TICK_LABEL_CHARACTERS - 1] + "\u2026" for line in lines]
    return "\n".join(lines).replace("$", r"\$")


def _plot_series(axes, steps, values, name):
    points = [(step, value) for step, value in zip(steps, values or []) if value is not None]
    if points:
        axes.plot(*zip(*points), marker="." if len(points) < 30 else None, label=name)


def _png_bytes(figure):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
