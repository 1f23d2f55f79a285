"""Read gzipped IDX files (the MNIST format) straight into NumPy, nothing unpacked to disk.

IDX: a 4-byte magic number ``0x0000TTDD`` (TT = 0x08 for uint8, DD = the number of
dimensions), DD big-endian int32 sizes, then the data in C order.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from typing import BinaryIO

import numpy as np

from ember.data.datasets._files import DatasetError

__all__ = ["read_idx_gz", "IDX_UBYTE"]

IDX_UBYTE = 0x08


def _read_exact(f: BinaryIO, out: memoryview) -> int:
    """Fill ``out`` from ``f``; the number of bytes read (less only at end of data)."""
    filled = 0
    while filled < len(out):
        n = f.readinto(out[filled:])
        if not n:
            break
        filled += n
    return filled


def _read_header(f: BinaryIO, path: str, ndim: int) -> tuple[int, ...]:
    head = f.read(4 + 4 * ndim)
    if len(head) < 4 + 4 * ndim:
        raise DatasetError(f"{path}: too short for an IDX header ({len(head)} bytes)")
    magic = int.from_bytes(head[:4], "big")
    expected = (IDX_UBYTE << 8) | ndim
    if magic != expected:
        raise DatasetError(f"{path}: IDX magic number is 0x{magic:08x}, expected "
                           f"0x{expected:08x} (unsigned bytes in {ndim} dimensions)")
    return tuple(int(d) for d in np.frombuffer(head, ">i4", count=ndim, offset=4))


def _read_body(f: BinaryIO, path: str, shape: tuple[int, ...]) -> np.ndarray:
    array = np.empty(shape, np.uint8)
    got = _read_exact(f, memoryview(array).cast("B"))
    if got < array.size:
        raise DatasetError(f"{path}: IDX header declares shape {shape} ({array.size} bytes) "
                           f"but the file holds only {got} bytes of data")
    if f.read(1):  # also reaches the end of the gzip stream, where its CRC is checked
        raise DatasetError(f"{path}: holds more data than its IDX header's shape {shape}")
    return array


def read_idx_gz(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """The uint8 array stored in a gzipped IDX file of ``ndim`` dimensions.

    Raises DatasetError naming the file for a corrupt gzip stream, a wrong magic
    number, or a size that disagrees with the header.
    """
    path = os.fspath(path)
    try:
        with gzip.open(path, "rb") as f:
            shape = _read_header(f, path, ndim)
            if math.prod(shape) > 1 << 34:
                raise DatasetError(f"{path}: implausible IDX shape {shape}")
            return _read_body(f, path, shape)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DatasetError(f"{path}: not a valid gzip file, it is truncated or corrupt "
                           f"({e})") from e
