"""Safe save/load: tensors in safetensors format, everything else as JSON in its header.

``ember.save(obj, path)`` takes nested dicts, lists and tuples of tensors, NumPy
arrays, numbers, strings, bools and None (a model's ``state_dict``, an optimizer's,
a whole training checkpoint). Loading never executes code: the file is a
safetensors file, read with the safetensors library, plus JSON.

A flat ``{name: tensor}`` dict keeps its names as the safetensors keys, so the
file loads in ``safetensors.torch.load_file`` straight into a torch model, and a
safetensors file written by torch loads back here as a dict of tensors.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import numpy as np

from ember.tensor import Tensor

__all__ = ["save", "load", "CheckpointError", "atomic_write"]

_FORMAT = "ember"
_FORMAT_VERSION = "1"


class CheckpointError(Exception):
    """A model file that cannot be read back: truncated, corrupted or of the wrong kind."""


# ---------------------------------------------------------------- atomic write
def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new, never half.

    A temporary file in the same folder is written and fsynced, then renamed over
    ``path`` (an atomic step on POSIX), then the folder entry is fsynced.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=folder)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give it the permissions open() would
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# ---------------------------------------------------------------- encoding
def _is_flat_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, (Tensor, np.ndarray)) for k, v in obj.items())


class _Encoder:
    """Replaces arrays in a nested object by references; collects the arrays."""

    def __init__(self, flat: bool) -> None:
        self.flat = flat
        self.arrays: dict[str, np.ndarray] = {}

    def encode(self, obj: Any, key: str) -> Any:
        if isinstance(obj, (Tensor, np.ndarray)):
            return self._array(obj, key)
        if isinstance(obj, dict):
            if all(isinstance(k, str) for k in obj):
                return {"__dict__": {k: self.encode(v, self._join(key, k)) for k, v in obj.items()}}
            return {"__items__": [[self.encode(k, f"{key}/#k{i}"),
                                   self.encode(v, self._join(key, str(k)))]
                                  for i, (k, v) in enumerate(obj.items())]}
        if isinstance(obj, (list, tuple)):
            items = [self.encode(v, self._join(key, str(i))) for i, v in enumerate(obj)]
            return {"__tuple__": items} if isinstance(obj, tuple) else items
        if isinstance(obj, (np.integer, np.floating, np.bool_)):
            return obj.item()
        if obj is None or isinstance(obj, (bool, int, float, str)):
            finite = not isinstance(obj, float) or np.isfinite(obj)
            return obj if finite else {"__float__": repr(obj)}
        raise TypeError(f"ember.save: cannot store an object of type {type(obj).__name__} at "
                        f"'{key}'; only tensors, arrays, numbers, strings, None, and dicts, lists "
                        "and tuples of them can be saved")

    def _join(self, key: str, part: str) -> str:
        return part if self.flat or not key else f"{key}/{part}"

    def _array(self, obj: Any, key: str) -> dict:
        array = obj.array if isinstance(obj, Tensor) else obj
        name = key or "tensor"
        while name in self.arrays:
            name += "'"
        self.arrays[name] = np.ascontiguousarray(array)
        return {"__tensor__": name, "ndarray": isinstance(obj, np.ndarray)}


def _decode(node: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(node, list):
        return [_decode(v, arrays) for v in node]
    if not isinstance(node, dict):
        return node
    if "__tensor__" in node:
        array = arrays[node["__tensor__"]]
        return array if node.get("ndarray") else Tensor(array, dtype=array.dtype)
    if "__dict__" in node:
        return {k: _decode(v, arrays) for k, v in node["__dict__"].items()}
    if "__items__" in node:
        return {_decode(k, arrays): _decode(v, arrays) for k, v in node["__items__"]}
    if "__tuple__" in node:
        return tuple(_decode(v, arrays) for v in node["__tuple__"])
    if "__float__" in node:
        return float(node["__float__"])
    raise CheckpointError(f"unknown entry in the file's structure: {sorted(node)}")


# ---------------------------------------------------------------- public API
def save(obj: Any, path: str | os.PathLike) -> None:
    """Save tensors and plain data to ``path`` (safetensors + JSON), atomically.

    >>> ember.save({"w": ember.ones(2, 3), "step": 7}, "/tmp/ckpt.safetensors")
    >>> ember.load("/tmp/ckpt.safetensors")["step"]
    7
    """
    from safetensors.numpy import save as st_save

    encoder = _Encoder(flat=_is_flat_tensor_dict(obj))
    structure = encoder.encode(obj, "")
    metadata = {"format": _FORMAT, "ember_format_version": _FORMAT_VERSION,
                "ember_structure": json.dumps(structure, allow_nan=False)}
    atomic_write(path, st_save(encoder.arrays, metadata=metadata))


def load(path: str | os.PathLike) -> Any:
    """Load what ``save`` wrote (or any safetensors file, as a dict of tensors).

    Raises CheckpointError naming the path when the file is truncated, corrupted
    or not a safetensors file. Never executes code from the file.
    """
    arrays, metadata = _read_safetensors(path)
    if not metadata or "ember_structure" not in metadata:
        return {k: Tensor(v, dtype=v.dtype) for k, v in arrays.items()}
    try:
        structure = json.loads(metadata["ember_structure"])
        return _decode(structure, arrays)
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"{os.fspath(path)}: the file's structure header is corrupted "
                              f"({err})") from None


def _read_safetensors(path: str | os.PathLike) -> tuple[dict, dict]:
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load

    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    if len(data) < 8:
        raise CheckpointError(f"{path}: the file is truncated ({len(data)} bytes; a safetensors "
                              "file starts with an 8-byte header length)")
    header_len = int.from_bytes(data[:8], "little")
    if header_len > len(data) - 8 or data[8:9] != b"{":
        raise CheckpointError(f"{path}: not a safetensors file, or truncated (header of "
                              f"{header_len} bytes announced, {len(data) - 8} bytes present)")
    try:
        header = json.loads(data[8:8 + header_len])
        arrays = st_load(data)
    except (SafetensorError, ValueError) as err:
        raise CheckpointError(f"{path}: corrupted or truncated safetensors data ({err})") from None
    return arrays, header.get("__metadata__", {}) or {}
