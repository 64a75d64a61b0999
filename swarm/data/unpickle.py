"""Reading the CIFAR pickles without letting a data file run code.

The CIFAR "python version" files are pickles, and a pickle can name any importable
callable (``os.system``, say) and have it called while loading. Data files may come
from a URL given in a job, so ``load_pickle`` uses an Unpickler whose ``find_class``
only hands out what these files need: numpy's array and dtype reconstruction (the
``data`` entry is a numpy array) and the latin-1 ``_codecs.encode`` Python 3 uses to
spell bytes in protocol-2 pickles. dict, list, bytes, str and int are built by pickle
opcodes that import nothing, so they need no entry. Everything else is refused.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path

import numpy as np
from numpy._core.multiarray import _reconstruct
from numpy._core.numeric import _frombuffer

from .errors import DataError, reason


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` restricted to the latin-1 that protocol-2 pickles spell bytes with."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with codec {encoding!r} is not allowed")
    return codecs.encode(text, encoding, errors)


# (module, name) -> the object given for it. Python 2 and numpy 1 pickles (the real CIFAR
# files) say numpy.core, numpy 2 says numpy._core; both mean the same functions.
_ALLOWED: dict[tuple[str, str], object] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _latin1_encode,
}


class _Refused(pickle.UnpicklingError):
    pass


class _DataUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only the globals in ``_ALLOWED``."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


def load_pickle(path: Path, *, dataset: str, shown: str) -> object:
    """The object pickled in ``path``; ``shown`` is how messages name the file.

    Python 2 strings load as bytes (``encoding="bytes"``), as the real CIFAR files
    need. Raises DataError for a refused global or a truncated/corrupt pickle.
    """
    try:
        with open(path, "rb") as file:
            return _DataUnpickler(file, encoding="bytes").load()
    except _Refused as refused:
        raise DataError(f"{dataset}: {shown} asks to load {refused}, which data files never "
                        "need; refusing to unpickle it (it could run code)") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError) as error:
        raise DataError(f"{dataset}: {shown} is truncated or corrupt "
                        f"({reason(error)})") from None
