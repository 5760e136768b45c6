"""The data audit: label issues, duplicates and leaks, and outliers, from the bottlenecks.

audit_images runs the three checks on the vectors a run already holds; write_audit writes
<output_dir>/audit.json and audit.html. `retrain audit` and every `retrain` run call them
(retrain.api.audit, retrain.pipeline). docs/audit.md says what each list means.
"""

import contextlib
import dataclasses
import json
import os
import time

from absl import logging
import numpy as np

from retrain.audit import duplicates as duplicates_lib
from retrain.audit import label_issues as label_issues_lib
from retrain.audit import outliers as outliers_lib
from retrain.audit import page
from retrain.runtime import files

AUDIT_FILE = "audit.json"
AUDIT_PAGE = "audit.html"


@dataclasses.dataclass
class AuditResult:
    """What the audit found. Paths are relative to the image folder, with "/" separators."""

    # [{"path", "given", "suggested", "score", "confident"}], most suspect first
    label_issues: list
    duplicates: list  # [{"paths", "kind", "similarity", "labels", "splits"}]
    outliers: list  # [{"path", "label", "score", "distance"}], most outlying first
    counts: dict  # name -> int
    thresholds: dict  # name -> number: the settings the lists were made with
    seconds: float
    image_dir: str = ""
    audit_file: str = ""  # where write_audit wrote audit.json ("" before)

    def as_dict(self):
        return {"image_dir": self.image_dir, "counts": self.counts, "thresholds": self.thresholds,
                "seconds": self.seconds, "label_issues": self.label_issues,
                "duplicates": self.duplicates, "outliers": self.outliers}

    def leaks(self):
        """The duplicate groups whose images lie in more than one split."""
        return [group for group in self.duplicates if len(set(group["splits"])) > 1]

    def flagged_training_paths(self):
        """Relative paths that --exclude_flagged leaves out of training: confident label
        issues (off the confident joint's diagonal), outliers, and each leak's copies in the
        training split (so that its test or validation copy is scored on a picture training
        never saw)."""
        flagged = {issue["path"] for issue in self.label_issues if issue["confident"]}
        flagged.update(outlier["path"] for outlier in self.outliers)
        for group in self.leaks():
            flagged.update(path for path, split_name in zip(group["paths"], group["splits"])
                           if split_name == "training")
        return flagged

    def summary(self):
        """The one log line: counts, leaks, seconds."""
        counts = self.counts
        return (f"Audit: {counts['label_issues']} possible label errors "
                f"({counts['confident_label_issues']} confident), "
                f"{counts['exact_groups']} groups of identical files and {counts['near_groups']} "
                f"of near duplicates ({counts['leaks']} across splits, "
                f"{counts['label_conflicts']} across labels), {counts['outliers']} outliers, in "
                f"{self.seconds:.1f}s.")


def audit_images(image_files, features, labels, split_of, image_dir="", seed=0):
    """Runs the three checks, with numpy's BLAS on one thread (see _one_blas_thread).

    Args:
      image_files: [dataset.ImageFile], row i of features is image i.
      features: float32 [n, D] bottlenecks (an array, or anything np.asarray reads).
      labels: class names; ImageFile.label_index indexes it.
      split_of: {relative_path: "training" | "validation" | "testing"}.
      image_dir: recorded in the result.
      seed: for the folds of the out-of-fold scores.

    Returns:
      AuditResult.
    """
    with _one_blas_thread():
        return _audit_images(image_files, features, labels, split_of, image_dir, seed)


def _one_blas_thread():
    """A context in which numpy's BLAS uses one thread. The audit's matrices are small:
    OpenBLAS's threads gain nothing on them, and on a busy machine they wait for each other
    (measured 15-20 times slower on the shared 2-core VM: BENCHMARKS.md, "Data audit").
    threadpoolctl is a dependency; an install without it keeps BLAS's threads."""
    try:
        import threadpoolctl  # pylint: disable=import-outside-toplevel
    except ImportError:
        return contextlib.nullcontext()
    return threadpoolctl.threadpool_limits(limits=1, user_api="blas")


def _audit_images(image_files, features, labels, split_of, image_dir, seed):
    start = time.monotonic()
    features = np.asarray(features, np.float32)
    label_index = np.array([image.label_index for image in image_files], np.int64)
    keys = [image.content_key for image in image_files]
    relative = [image.relative_path for image in image_files]
    issues = label_issues_lib.find_label_issues(features, label_index, len(labels), seed=seed)
    groups = duplicates_lib.find_duplicates(keys, features, [image.path for image in image_files])
    outliers = outliers_lib.find_outliers(features, label_index, keys)
    issue_rows = [{"path": relative[row], "given": labels[label_index[row]],
                   "suggested": labels[suggested], "score": round(float(score), 4),
                   "confident": bool(confident)}
                  for row, suggested, score, confident in zip(issues.rows, issues.suggested,
                                                              issues.scores, issues.confident)]
    group_rows = [{"paths": [relative[row] for row in group.rows], "kind": group.kind,
                   "similarity": round(float(group.similarity), 4),
                   "labels": [labels[label_index[row]] for row in group.rows],
                   "splits": [split_of.get(relative[row], "") for row in group.rows]}
                  for group in groups]
    outlier_rows = [{"path": relative[row], "label": labels[label_index[row]],
                     "score": round(float(score), 2), "distance": round(float(distance), 4)}
                    for row, score, distance in zip(outliers.rows, outliers.scores,
                                                    outliers.distances)]
    counts = {
        "images": len(image_files),
        "label_issues": len(issue_rows),
        "confident_label_issues": int(issues.confident.sum()),
        "exact_groups": sum(group["kind"] == duplicates_lib.EXACT for group in group_rows),
        "near_groups": sum(group["kind"] == duplicates_lib.NEAR for group in group_rows),
        "leaks": sum(len(set(group["splits"])) > 1 for group in group_rows),
        "label_conflicts": sum(len(set(group["labels"])) > 1 for group in group_rows),
        "outliers": len(outlier_rows),
    }
    thresholds = {
        "folds": issues.folds,
        "label_issue_class_thresholds": {
            labels[index]: (None if np.isnan(value) else round(float(value), 4))
            for index, value in enumerate(issues.thresholds)},
        "near_duplicate_same_pixels": duplicates_lib.SAME_PIXELS,
        "near_duplicate_neighbour_rank": duplicates_lib.NEIGHBOUR_RANK,
        "near_duplicate_distance_ratio": duplicates_lib.DISTANCE_RATIO,
        "near_duplicate_aligned_correlation": duplicates_lib.ALIGNED_CORRELATION,
        "near_duplicate_matched_correlation": duplicates_lib.MATCHED_CORRELATION,
        "outlier_neighbours": outliers_lib.NEIGHBOURS,
        "outlier_z": outliers_lib.OUTLIER_Z,
    }
    return AuditResult(issue_rows, group_rows, outlier_rows, counts, thresholds,
                       seconds=round(time.monotonic() - start, 3), image_dir=str(image_dir))


def write_audit(result, output_dir):
    """Writes output_dir/audit.json and audit.html (thumbnails of the top cases); logs the
    summary line (a warning when a duplicate spans splits). Returns the audit.json path."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, AUDIT_FILE)
    text = json.dumps(result.as_dict(), indent=1, ensure_ascii=False)
    files.write_file_atomically(path, text.encode("utf-8", "surrogateescape"),
                                flag="--output_dir")
    files.write_file_atomically(os.path.join(output_dir, AUDIT_PAGE),
                                page.build_page(result).encode("utf-8", "surrogateescape"),
                                flag="--output_dir")
    result.audit_file = path
    log = logging.warning if result.counts["leaks"] else logging.info
    log("%s%s See %s", result.summary(),
        " Images in both training and validation/test inflate the test score." if
        result.counts["leaks"] else "", os.path.join(output_dir, AUDIT_PAGE))
    return path


def metrics_entry(result):
    """metrics.json's "audit": the counts, the seconds and where the lists are."""
    return {**result.counts, "seconds": result.seconds, "file": result.audit_file}
