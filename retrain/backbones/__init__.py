"""Built-in feature-extractor backbones that need no network (filled in by the backbone work)."""
