"""Exceptions for mistakes the user can fix."""


class UserError(ValueError):
    """A bad flag value, folder or module. The message names the value and the fix.

    The command-line tools print it as one line and exit non-zero, without a traceback.
    """
