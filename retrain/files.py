"""Writing files so that a killed run never leaves a half-written one at the final path."""

import os
import shutil
import uuid


def temporary_sibling(path, tag="tmp"):
    """A unique hidden name in the same folder as path (same filesystem, so rename is atomic)."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{tag}-{uuid.uuid4().hex[:12]}-{name}")


def write_file_atomically(path, data):
    """Writes bytes to path via a temporary file and a rename: readers see all or nothing.

    The folder is created if needed (a run checks its output folders without keeping them).
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = temporary_sibling(path)
    try:
        with open(temporary, "wb") as output:
            output.write(data)
            output.flush()
            os.fsync(output.fileno())
        os.replace(temporary, path)
    except BaseException:
        remove_quietly(temporary)
        raise


def replace_directory(temporary_dir, target_dir):
    """Moves a finished folder to target_dir, replacing any folder there.

    A reader of target_dir sees the old folder, then (after two renames a moment apart) the
    new one; never a partly written one.
    """
    old_dir = None
    if os.path.lexists(target_dir):
        old_dir = temporary_sibling(target_dir, tag="old")
        os.rename(target_dir, old_dir)
    os.rename(temporary_dir, target_dir)
    if old_dir:
        shutil.rmtree(old_dir, ignore_errors=True)


def check_writable_dir(directory):
    """Creates directory if needed and proves a file can be written in it. Raises OSError if not."""
    os.makedirs(directory, exist_ok=True)
    probe = temporary_sibling(os.path.join(directory, "write-probe"))
    with open(probe, "wb"):
        pass
    os.remove(probe)


def probe_writable_dir(directory):
    """Proves that directory can be created (if needed) and written, and leaves no trace.

    Folders that the probe had to create are removed again, so a run that stops at a later
    check (or at this one, for another folder) leaves the disk as it found it.

    Raises:
      OSError: the folder cannot be created or written.
    """
    missing = []
    parent = os.path.abspath(directory)
    while not os.path.lexists(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    try:
        check_writable_dir(directory)
    finally:
        for folder in missing:  # Deepest first.
            try:
                os.rmdir(folder)
            except OSError:
                pass  # Not created, or another run put something in it meanwhile.


def remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass
