"""The data audit (issue 25): label issues, duplicates and leaks, outliers (audit.py)."""
