"""Errors that dqaudit raises for problems a user can fix, and the one reading of an expected
failure as a line for the user (the CLI's and the App's error boundary)."""

import errno


class DqauditError(Exception):
    """A problem with the user's input or environment, with a one-line message naming the fix.

    The CLI turns it into exit code 2 and the FiftyOne plugin into an App message.
    """


class InputError(DqauditError):
    """The dataset, manifest or an option does not describe a usable labeled image dataset."""


def expected_failure(exc: BaseException) -> str | None:
    """The one line a user sees for an expected failure (a ``DqauditError``: its message; an
    ``OSError``: ``describe_os_error``), or None for anything else, which is a bug and keeps its
    traceback. Both doors (the CLI's ``library_errors``, the plugin's operators) ask this."""
    if isinstance(exc, DqauditError):
        return str(exc)
    if isinstance(exc, OSError):
        return describe_os_error(exc)
    return None


def describe_os_error(exc: OSError) -> str:
    """One line for a failure of the file system: which file, what happened, the fix."""
    name = exc.filename or "a file"
    fixes = {
        errno.ENOSPC: ("no space left on the device", "free space, or write --out (or "
                       "--dest, --cache-dir) on another disk; the earlier audit is intact"),
        errno.EDQUOT: ("disk quota exceeded", "free space or write to another disk"),
        errno.ENAMETOOLONG: ("file name too long", "use a shorter --out / --dest path or "
                             "shorter labels and file names"),
        errno.EACCES: ("permission denied", "give yourself access, or use another folder"),
        errno.EPERM: ("operation not permitted", "use a folder you own"),
        errno.EROFS: ("read-only file system", "write to another folder"),
        errno.ENOENT: ("no such file or folder", "it was moved or deleted (since the scan?): "
                       "put it back, or scan the dataset again"),
        errno.EISDIR: ("a folder where a file was expected", "check the path"),
        errno.ENOTDIR: ("a file where a folder was expected", "check the path"),
        errno.EIO: ("input/output error", "the disk or network share failed; check it and "
                    "run the command again"),
    }
    what, fix = fixes.get(exc.errno, (exc.strerror or type(exc).__name__,
                                      "check the file and run the command again"))
    return f"{name}: {what}; {fix}"
