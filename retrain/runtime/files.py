"""Writing files so that a killed run never leaves a half-written one at the final path."""

import errno
import os
import shutil
import time
import uuid

from retrain.errors import UserError

# Write errors that mean "the disk (or the quota, or the file-size limit) is full".
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def temporary_sibling(path, tag="tmp"):
    """A unique hidden name in the same folder as path (same filesystem, so rename is atomic)."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{tag}-{uuid.uuid4().hex[:12]}-{name}")


# A temporary file or folder older than this is debris of a killed run (live writers rename
# theirs within minutes).
STALE_TEMPORARY_SECONDS = 3600


def remove_stale_temporaries(path, max_age=STALE_TEMPORARY_SECONDS):
    """Removes temporary siblings of path (from temporary_sibling) left by killed runs."""
    directory, name = os.path.split(os.path.abspath(path))
    remove_stale_entries(
        directory, lambda entry: entry.startswith((".tmp-", ".old-")) and entry.endswith("-" + name),
        max_age)


def remove_stale_entries(directory, is_temporary, max_age=STALE_TEMPORARY_SECONDS):
    """Removes the files and folders in directory whose name is_temporary and that are older
    than max_age seconds: the debris of killed runs."""
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    now = time.time()
    for entry in filter(is_temporary, entries):
        stale = os.path.join(directory, entry)
        try:
            if now - os.lstat(stale).st_mtime <= max_age:
                continue
            if os.path.isdir(stale):
                shutil.rmtree(stale)
            else:
                os.remove(stale)
        except OSError:
            pass  # Another run removed it first.


def write_file_atomically(path, data, flag=None):
    """Writes bytes to path via a temporary file and a rename: readers see all or nothing.

    The folder is created if needed (a run checks its output folders without keeping them).

    Args:
      path: the file to write.
      data: bytes.
      flag: the command-line flag that set path; if given, a failed write (a full disk, say)
        raises a UserError naming the folder, the reason and the fix instead of OSError.
    """
    temporary = temporary_sibling(path)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(temporary, "wb") as output:
            output.write(data)
            output.flush()
            os.fsync(output.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        remove_quietly(temporary)
        if flag and isinstance(error, OSError):
            raise write_error(os.path.dirname(os.path.abspath(path)), flag, error) from error
        raise


def disk_full_reason(error):
    """"No space left on device" (or the quota or file-size message) if that is why a write
    failed, else None. TensorFlow's file errors carry no errno, only the system's message."""
    if getattr(error, "errno", None) in _DISK_FULL_ERRNOS:
        return os.strerror(error.errno)
    return next((os.strerror(number) for number in sorted(_DISK_FULL_ERRNOS)
                 if os.strerror(number) in str(error)), None)


def write_error(folder, flag, error, what="files"):
    """A UserError for a failed write into folder: names the folder, the reason and the fix."""
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    if disk_full_reason(error):
        reason = disk_full_reason(error)
        fix = (f"free some space there, or pass {flag} on a disk with more room, and run the "
               "same command again")
    else:
        fix = f"make it writable, or pass another {flag}"
    return UserError(f"Cannot write {what} to {folder!r} ({reason}); {fix}.")


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
