"""retrain compare: several modules and methods on one split, one table (compare), and the from-scratch CNN it is measured against (baseline)."""
