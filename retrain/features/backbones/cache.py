"""Where built backbones live on disk, and how a build lands there atomically.

A build writes into a temporary directory beside its target and then renames it into place, so
a target directory either does not exist or is complete. Two processes may build the same
backbone at once: the one that loses the rename race discards its copy and uses the winner's.
"""

import json
import os
import shutil
import tempfile

from retrain.errors import UserError

CACHE_DIR_ENVIRONMENT_VARIABLE = "RETRAIN_CACHE_DIR"

# Written last into a finished build; its presence marks a directory that retrain completed.
METADATA_FILE_NAME = "retrain_backbone.json"


def default_cache_dir():
    """Returns the cache directory (str): $RETRAIN_CACHE_DIR, else $XDG_CACHE_HOME/retrain,
    else ~/.cache/retrain. Empty variables count as unset."""
    configured = os.environ.get(CACHE_DIR_ENVIRONMENT_VARIABLE)
    if configured:
        return os.path.expanduser(configured)
    xdg_cache_home = os.environ.get("XDG_CACHE_HOME")
    if xdg_cache_home:
        return os.path.join(os.path.expanduser(xdg_cache_home), "retrain")
    return os.path.join(os.path.expanduser("~"), ".cache", "retrain")


def read_metadata(directory):
    """Returns the metadata dict of a completed build in `directory`, or None if there is none."""
    try:
        with open(os.path.join(directory, METADATA_FILE_NAME), encoding="utf-8") as file:
            return json.load(file)
    except FileNotFoundError:
        return None


def _write_metadata(directory, metadata):
    """Writes `metadata` (a JSON-serializable dict) into `directory`."""
    with open(os.path.join(directory, METADATA_FILE_NAME), "w", encoding="utf-8") as file:
        json.dump(metadata, file, indent=2, sort_keys=True)


def _make_temporary_directory(target_dir):
    """Creates and returns an empty directory beside `target_dir` (same filesystem, for rename)."""
    parent = os.path.dirname(os.path.abspath(target_dir))
    try:
        os.makedirs(parent, exist_ok=True)
        return tempfile.mkdtemp(prefix=f".{os.path.basename(target_dir)}.building-", dir=parent)
    except OSError as error:
        raise UserError(
            f"Cannot write the backbone cache in {parent} ({error}). Point "
            f"{CACHE_DIR_ENVIRONMENT_VARIABLE} (or the cache_dir flag) at a writable directory."
        ) from error


def _check_complete(target_dir, metadata):
    """Raises UserError unless `target_dir` holds a completed build with the same identity."""
    found = read_metadata(target_dir)
    if found is None or found.get("identity") != metadata["identity"]:
        raise UserError(
            f"{target_dir} exists but is not a complete retrain build of "
            f"{metadata['identity']}. Delete that directory and run again."
        )


def build_atomically(target_dir, metadata, build_into):
    """Returns `target_dir`, first building it there if no completed build exists yet.

    Args:
        target_dir: str, final directory of the build.
        metadata: dict with at least "identity" (str); stored in the build, compared on reuse.
        build_into: callable(empty_directory: str) that writes the build's files.

    Raises:
        UserError: if the cache is not writable, or `target_dir` holds something else.
    """
    if os.path.isdir(target_dir):
        _check_complete(target_dir, metadata)
        return target_dir
    temporary_dir = _make_temporary_directory(target_dir)
    try:
        build_into(temporary_dir)
        _write_metadata(temporary_dir, metadata)
        try:
            os.rename(temporary_dir, target_dir)
        except OSError:
            if not os.path.isdir(target_dir):
                raise
            # Another process renamed its finished build into place first: use that one.
            _check_complete(target_dir, metadata)
    finally:
        shutil.rmtree(temporary_dir, ignore_errors=True)
    return target_dir
