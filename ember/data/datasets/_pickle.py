"""Unpickling that builds plain data and NumPy arrays, and refuses everything else.

A pickle can name any importable callable and have it called while loading
(``os.system``, ``builtins.eval``, ...). Dicts, lists, tuples, bytes, str, int,
float, bool and None are built by pickle opcodes without naming any callable; the
only globals admitted here are the three NumPy needs to rebuild an array. Any
other global stops the load before it is called, so nothing from the file runs.
"""

from __future__ import annotations

import os
import pickle
from typing import Any, BinaryIO

import numpy as np

from ember.data.datasets._files import DatasetError

try:  # NumPy 2 moved multiarray under numpy._core; its pickles name either module
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.multiarray import _reconstruct

__all__ = ["RestrictedUnpickler", "UnsafePickleError", "restricted_load", "ALLOWED_GLOBALS"]

ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class UnsafePickleError(DatasetError, pickle.UnpicklingError):
    """A pickle asked for a callable outside the allowed set; nothing of it was run."""


class RestrictedUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` whose ``find_class`` admits only ``ALLOWED_GLOBALS``.

    >>> import io
    >>> RestrictedUnpickler(io.BytesIO(pickle.dumps({b"labels": [1, 2]}))).load()
    {b'labels': [1, 2]}
    """

    def __init__(self, file: BinaryIO, source: str | os.PathLike = "<pickle>",
                 **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self.source = str(source)

    def find_class(self, module: str, name: str) -> Any:
        found = ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise UnsafePickleError(
                f"{self.source}: refused to unpickle {module}.{name}: only dict, list, bytes, "
                "str, int and NumPy arrays are allowed in this file, so it is not a plain data "
                "pickle (it may be malicious). Nothing from it was run.")
        return found


def restricted_load(path: str | os.PathLike, encoding: str = "latin1") -> Any:
    """Load the pickle at ``path`` with ``RestrictedUnpickler``.

    ``encoding="latin1"`` reads Python 2 pickles (the CIFAR-10 python version) with their
    NumPy arrays intact; their str keys come back as str. Malformed data raises DatasetError.
    """
    with open(path, "rb") as f:
        try:
            return RestrictedUnpickler(f, path, encoding=encoding).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError,
                KeyError, AttributeError) as e:
            raise DatasetError(f"{path}: not a valid pickle, it is truncated or corrupt "
                               f"({type(e).__name__}: {e})") from e
