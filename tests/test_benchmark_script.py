"""scripts/benchmark.py runs end to end (on the tiny module, a few images) and reports every part.

Its numbers are not checked here: speed is measured by running the script, not in tests.
"""

import json
import os
import subprocess
import sys

_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def test_benchmark_reports_the_stage_and_label_image_against_the_ceiling(tmp_path, tiny_module):
    output = tmp_path / "results.json"
    completed = subprocess.run(
        [sys.executable, os.path.join(_ROOT, "scripts", "benchmark.py"), "--module", tiny_module,
         "--images", "24", "--photo_sizes", "64x48,80x60", "--repeats", "1",
         "--batch_sizes", "4", "--cached_images", "200", "--steps", "20",
         "--skip", "augmentation,growth,large_cache,cold_start", "--json_out", str(output)],
        capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(output.read_text())
    assert results["precision"] == "float32" and results["best_batch_size"] == 4
    for name in ("bottleneck_stage_64x48", "bottleneck_stage_80x60",
                 "bottleneck_stage_64x48_at_best_batch_size", "label_image_24"):
        assert results[f"{name}_images_per_second"] > 0
        assert results[f"{name}_vs_ceiling"] > 0
        # With one turn, the median of the paired ratios is that turn's, the best against the best.
        assert results[f"{name}_vs_ceiling_median_of_turns"] == results[f"{name}_vs_ceiling"]
    assert results["cache_size_vs_raw_float32"] < 1.1
    assert results["training_seconds_20_steps"] > 0
    # The table on stdout has a row per result.
    assert "| bottleneck_stage_64x48_vs_ceiling |" in completed.stdout
