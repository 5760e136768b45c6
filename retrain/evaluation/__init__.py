"""Stage 6, evaluation: scores on the test split (evaluate), per-class metrics (metrics), and the report files beside metrics.json (report)."""
