"""Built-in feature-extractor backbones that need no network (filled in by the backbone work)."""

BUILTIN_BACKBONES = {}
DEFAULT_BACKBONE = "efficientnet_lite0"


def is_builtin(name):
    return name in BUILTIN_BACKBONES
