"""The one error a data set that cannot be had raises."""

from __future__ import annotations


class DataError(ValueError):
    """A data set could not be loaded, verified or written.

    The message is one line that names the data set, the file and what is wrong with it
    (missing: which file is expected where; wrong checksum; truncated or corrupt), so a
    program can print it as is; the underlying tarfile/pickle/zip error is never shown
    as a traceback.
    """


def reason(error: BaseException) -> str:
    """``error`` as "Type: message" on one line, for the parentheses of a DataError."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"
