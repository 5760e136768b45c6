"""What --tfhub_module names, told apart without TensorFlow: a built-in backbone, a hub
handle or URL, or a local SavedModel folder. preflight checks a local path before the slow
imports; modules.resolve_module checks it again for library callers."""

import os

from retrain.errors import UserError
from retrain.features.backbones import specs

# How hub URLs begin; anything else that looks like a path must be a folder.
URL_PREFIXES = ("http://", "https://", "gs://")


def builtin_names():
    """The built-in backbones a user types most, for messages: "efficientnet_lite0, ..."."""
    return ", ".join(sorted(name for name in specs.BUILTIN_BACKBONES if "/" not in name))


def check_local_path(handle):
    """Raises UserError if handle looks like a local path (absolute, or starting with ".")
    and is not a folder. Built-in names and hub handles are checked when resolved."""
    looks_like_path = os.path.isabs(handle) or handle.startswith(".")
    if looks_like_path and not handle.startswith(URL_PREFIXES) and not os.path.isdir(handle):
        raise UserError(f"--tfhub_module {handle!r} is not a folder; pass a SavedModel folder, "
                        f"a TF Hub handle or URL, or a built-in backbone ({builtin_names()}).")
